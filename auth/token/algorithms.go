package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"math/big"

	"github.com/golang-jwt/jwt/v5"
)

// Signing algorithms a tenant's keys may use.
const (
	// ES256 (ECDSA P-256) is the default for new keys: Supabase signs with
	// it, and @supabase/auth-js verifies asymmetric tokens only as ES256 or
	// RS256.
	ES256 = "ES256"
	RS256 = "RS256"
	// EdDSA (Ed25519) was the only algorithm before ES256; tenants with
	// such a key keep signing with it until they rotate.
	EdDSA = "EdDSA"
	// HS256 signs with a secret shared with the tenant's backends, as
	// Supabase's legacy JWT secret; it is never published in the JWKS.
	HS256 = "HS256"
)

// DefaultAlgorithm signs new tenants' tokens.
const DefaultAlgorithm = ES256

// Algorithms lists every algorithm Keyshard signs and verifies with.
var Algorithms = []string{ES256, RS256, EdDSA, HS256}

// ValidAlgorithm reports whether alg is one of Algorithms.
func ValidAlgorithm(alg string) bool {
	for _, a := range Algorithms {
		if a == alg {
			return true
		}
	}
	return false
}

var methods = map[string]jwt.SigningMethod{
	ES256: jwt.SigningMethodES256, RS256: jwt.SigningMethodRS256, EdDSA: jwt.SigningMethodEdDSA, HS256: jwt.SigningMethodHS256,
}

// rsaBits is the size of new RS256 keys.
const rsaBits = 2048

// newKeyMaterial generates a key of alg: the public part as stored (PKIX
// DER; Ed25519 raw; empty for a secret) and the private part to seal
// (PKCS #8 DER; the Ed25519 seed; the secret).
func newKeyMaterial(alg string) (pub, priv []byte, err error) {
	switch alg {
	case ES256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		return marshalPair(&k.PublicKey, k)
	case RS256:
		k, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, nil, err
		}
		return marshalPair(&k.PublicKey, k)
	case EdDSA:
		p, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		return []byte(p), k.Seed(), nil
	case HS256:
		secret := make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, nil, err
		}
		return []byte{}, secret, nil
	}
	return nil, nil, fmt.Errorf("unknown signing algorithm %q", alg)
}

func marshalPair(pub, priv any) ([]byte, []byte, error) {
	p, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	k, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	return p, k, nil
}

// parsePublic returns the key that verifies alg's signatures from its
// stored public part (nil, false for HS256, whose secret verifies).
func parsePublic(alg string, pub []byte) (any, bool) {
	switch alg {
	case EdDSA:
		if len(pub) == ed25519.PublicKeySize {
			return ed25519.PublicKey(pub), true
		}
	case ES256:
		if k, err := x509.ParsePKIXPublicKey(pub); err == nil {
			if ek, ok := k.(*ecdsa.PublicKey); ok && ek.Curve == elliptic.P256() {
				return ek, true
			}
		}
	case RS256:
		if k, err := x509.ParsePKIXPublicKey(pub); err == nil {
			if rk, ok := k.(*rsa.PublicKey); ok {
				return rk, true
			}
		}
	}
	return nil, false
}

// parsePrivate returns the key that signs with alg from its unsealed
// private part.
func parsePrivate(alg string, priv []byte) (any, error) {
	switch alg {
	case EdDSA:
		if len(priv) != ed25519.SeedSize {
			return nil, fmt.Errorf("bad Ed25519 seed length")
		}
		return ed25519.NewKeyFromSeed(priv), nil
	case ES256, RS256:
		k, err := x509.ParsePKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		switch k := k.(type) {
		case *ecdsa.PrivateKey:
			if alg == ES256 && k.Curve == elliptic.P256() {
				return k, nil
			}
		case *rsa.PrivateKey:
			if alg == RS256 {
				return k, nil
			}
		}
		return nil, fmt.Errorf("stored private key is not a %s key", alg)
	case HS256:
		if len(priv) < 32 {
			return nil, fmt.Errorf("HS256 secret shorter than 32 bytes")
		}
		return priv, nil
	}
	return nil, fmt.Errorf("unknown signing algorithm %q", alg)
}

// JWK is one public key in a JWKS document (RFC 7517): an EC P-256 key
// (RFC 7518), an RSA key, or an Ed25519 OKP key (RFC 8037).
type JWK struct {
	Kty    string   `json:"kty"`
	Crv    string   `json:"crv,omitempty"`
	X      string   `json:"x,omitempty"`
	Y      string   `json:"y,omitempty"`
	N      string   `json:"n,omitempty"`
	E      string   `json:"e,omitempty"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
}

// jwkOf returns the JWK of a public key of alg.
func jwkOf(alg, kid string, pub any) JWK {
	j := JWK{Kid: kid, Alg: alg, Use: "sig", KeyOps: []string{"verify"}}
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case ed25519.PublicKey:
		j.Kty, j.Crv, j.X = "OKP", "Ed25519", b64(k)
	case *ecdsa.PublicKey:
		j.Kty, j.Crv = "EC", "P-256"
		j.X, j.Y = b64(k.X.FillBytes(make([]byte, 32))), b64(k.Y.FillBytes(make([]byte, 32)))
	case *rsa.PublicKey:
		j.Kty, j.N, j.E = "RSA", b64(k.N.Bytes()), b64(big.NewInt(int64(k.E)).Bytes())
	}
	return j
}
