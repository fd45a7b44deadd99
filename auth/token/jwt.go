package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/keyshard/keyshard/engine"
)

// AMR is one authentication method reference of a session.
type AMR struct {
	Method    string `json:"method"`
	Timestamp int64  `json:"timestamp"`
}

// Claims are the claims of an access token, named and shaped as GoTrue's.
type Claims struct {
	Issuer       string          `json:"iss"`
	Subject      string          `json:"sub"`
	Audience     string          `json:"aud"`
	ExpiresAt    int64           `json:"exp"`
	IssuedAt     int64           `json:"iat"`
	Email        string          `json:"email"`
	Phone        string          `json:"phone"`
	AppMetadata  json.RawMessage `json:"app_metadata"`  // a JSON object
	UserMetadata json.RawMessage `json:"user_metadata"` // a JSON object
	Role         string          `json:"role"`
	AAL          string          `json:"aal"`
	AMR          []AMR           `json:"amr"`
	SessionID    string          `json:"session_id"`
	IsAnonymous  bool            `json:"is_anonymous"`
	// OrgRole is the user's role in the tenant (owner, admin, member).
	OrgRole string `json:"org_role,omitempty"`
}

var _ jwt.Claims = (*Claims)(nil)

// GetExpirationTime implements jwt.Claims.
func (c *Claims) GetExpirationTime() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.ExpiresAt, 0)), nil
}

// GetIssuedAt implements jwt.Claims.
func (c *Claims) GetIssuedAt() (*jwt.NumericDate, error) {
	return jwt.NewNumericDate(time.Unix(c.IssuedAt, 0)), nil
}

// GetNotBefore implements jwt.Claims.
func (c *Claims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }

// GetIssuer implements jwt.Claims.
func (c *Claims) GetIssuer() (string, error) { return c.Issuer, nil }

// GetSubject implements jwt.Claims.
func (c *Claims) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c *Claims) GetAudience() (jwt.ClaimStrings, error) { return jwt.ClaimStrings{c.Audience}, nil }

// Sign returns c signed with the tenant's signing key, its kid in the
// header.
func (ks *KeySet) Sign(c *Claims) (string, error) {
	m, ok := methods[ks.alg]
	if !ok || ks.private == nil {
		return "", fmt.Errorf("tenant %s has no signing key: %w", ks.tenantID, engine.ErrUnavailable)
	}
	t := jwt.NewWithClaims(m, c)
	t.Header["kid"] = ks.kid
	return t.SignedString(ks.private)
}

// ErrInvalidToken wraps every reason an access token is refused; the
// wrapping message is the reason, fit for the client.
var ErrInvalidToken = errors.New("invalid JWT")

// Verify parses an access token of the tenant: the signature must verify
// with one of the tenant's keys, with that key's algorithm (a token that
// names another, say HS256 over an RSA key's bytes, is refused), the token
// must not be expired, and the issuer must satisfy checkIss. Errors wrap
// ErrInvalidToken, or the storage error that kept the keys from loading.
func (k *Keys) Verify(ctx context.Context, tenantID string, sh engine.Shard, raw string, checkIss func(string) bool) (*Claims, error) {
	if c, kid, ok := k.verified.get(tenantID, raw, k.now().Unix()); ok {
		ks, err := k.Get(ctx, tenantID, sh)
		if err != nil {
			return nil, err
		}
		if _, published := ks.verify[kid]; published {
			if checkIss != nil && !checkIss(c.Issuer) {
				return nil, fmt.Errorf("%w: token was not issued by this tenant", ErrInvalidToken)
			}
			return c, nil
		}
	}
	var loadErr error
	var usedKid string
	claims := &Claims{}
	p := jwt.NewParser(jwt.WithValidMethods(Algorithms), jwt.WithExpirationRequired(), jwt.WithTimeFunc(k.now))
	_, err := p.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, ErrNoKey
		}
		ks, err := k.ForKid(ctx, tenantID, sh, kid)
		if err != nil {
			loadErr = err
			return nil, err
		}
		v, ok := ks.verify[kid]
		if !ok {
			return nil, ErrNoKey
		}
		if t.Method.Alg() != v.alg {
			return nil, fmt.Errorf("token signed with %s, key %s is %s", t.Method.Alg(), kid, v.alg)
		}
		usedKid = kid
		return v.key, nil
	})
	if loadErr != nil {
		return nil, loadErr
	}
	if err != nil {
		return nil, fmt.Errorf("%w: unable to parse or verify signature, %v", ErrInvalidToken, err)
	}
	if checkIss != nil && !checkIss(claims.Issuer) {
		return nil, fmt.Errorf("%w: token was not issued by this tenant", ErrInvalidToken)
	}
	if claims.Subject == "" || claims.SessionID == "" {
		return nil, fmt.Errorf("%w: token has no subject or session", ErrInvalidToken)
	}
	k.verified.put(tenantID, usedKid, raw, claims)
	return claims, nil
}
