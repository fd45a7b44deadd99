// Package token issues and verifies a tenant's access tokens: JWTs signed
// with the tenant's own keys (ES256 by default; RS256, EdDSA or an HS256
// secret by choice), kept encrypted in its shard under the server's master
// key, and publishes the tenant's public keys as a JWKS.
package token

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/keyshard/keyshard/internal/secretfile"
)

// MasterKeySize is the size of the server master key (AES-256).
const MasterKeySize = 32

// MasterKeyFile is the name of the generated master key in the data directory.
const MasterKeyFile = "master-key"

// ParseMasterKey decodes a 32-byte key given as hex or base64 (standard or
// URL alphabet, padded or not).
func ParseMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == MasterKeySize {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == MasterKeySize {
			return b, nil
		}
	}
	return nil, errors.New("master key must be 32 bytes, hex or base64 encoded")
}

// LoadMasterKey returns the master key: from env (KEYSHARD_MASTER_KEY's
// value) when not empty, else from dataDir/master-key, which is generated
// with mode 0600 when absent. created reports a new file.
func LoadMasterKey(dataDir, env string) (key []byte, path string, created bool, err error) {
	if env != "" {
		key, err = ParseMasterKey(env)
		if err != nil {
			return nil, "", false, fmt.Errorf("KEYSHARD_MASTER_KEY: %w", err)
		}
		return key, "", false, nil
	}
	path = filepath.Join(dataDir, MasterKeyFile)
	if b, err := os.ReadFile(path); err == nil {
		key, err = ParseMasterKey(string(b))
		if err != nil {
			return nil, "", false, fmt.Errorf("%s: %w", path, err)
		}
		return key, path, false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, "", false, err
	}
	key = make([]byte, MasterKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, "", false, err
	}
	// Atomic and exclusive: a crash leaves no empty file, and of two
	// processes starting at once one key wins and both use it.
	created, err = secretfile.Create(path, []byte(hex.EncodeToString(key)+"\n"))
	if err != nil {
		return nil, "", false, err
	}
	if !created {
		return LoadMasterKey(dataDir, "")
	}
	return key, path, true, nil
}

// sealer encrypts private keys at rest with AES-256-GCM. The additional data
// binds a ciphertext to its tenant and kid, so a row copied to another
// tenant or key does not decrypt.
type sealer struct{ aead cipher.AEAD }

func newSealer(master []byte) (*sealer, error) {
	if len(master) != MasterKeySize {
		return nil, fmt.Errorf("master key is %d bytes, want %d", len(master), MasterKeySize)
	}
	block, err := aes.NewCipher(master)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(plain []byte, tenantID, kid string) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err)
	}
	return s.aead.Seal(nonce, nonce, plain, []byte(tenantID+"/"+kid))
}

// errDecrypt: the master key is not the one the key was sealed with.
var errDecrypt = errors.New("cannot decrypt signing key: wrong master key or damaged row")

func (s *sealer) open(sealed []byte, tenantID, kid string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errDecrypt
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(tenantID+"/"+kid))
	if err != nil {
		return nil, errDecrypt
	}
	return plain, nil
}

// SealSecret encrypts a tenant's secret (an upstream provider's client
// secret) under the master key, bound to the tenant and the secret's name.
func (k *Keys) SealSecret(tenantID, name string, plain []byte) []byte {
	return k.sealer.seal(plain, tenantID, "secret:"+name)
}

// OpenSecret decrypts what SealSecret sealed for the same tenant and name.
func (k *Keys) OpenSecret(tenantID, name string, sealed []byte) ([]byte, error) {
	return k.sealer.open(sealed, tenantID, "secret:"+name)
}
