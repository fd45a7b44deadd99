package token

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/keyshard/keyshard/engine"
)

// Algorithm is the only signing algorithm Keyshard issues and accepts.
const Algorithm = "EdDSA"

// Keys manages every tenant's signing keys: it creates them on first use,
// keeps the parsed keys of recently used tenants in memory (so a request
// does not decrypt), and rotates them. Safe for concurrent use.
type Keys struct {
	sealer *sealer
	// publish is how long a retired key stays in the JWKS and verifies:
	// the longest lifetime of a token it signed.
	publish time.Duration
	// refresh is how long a cached key set is trusted before it is read
	// again (to see a rotation made by another process).
	refresh time.Duration
	now     func() time.Time

	cache    *lru.Cache[string, *KeySet]
	group    singleflight.Group
	verified verified // access tokens already verified, until they expire
}

// KeySet is one tenant's keys at one moment: the active private key and
// the public keys that verify its tokens. Immutable.
type KeySet struct {
	tenantID string
	loaded   time.Time
	kid      string
	private  ed25519.PrivateKey
	public   map[string]ed25519.PublicKey
	jwks     []JWK
}

// JWK is one public key in a JWKS document (RFC 8037 OKP key).
type JWK struct {
	Kty    string   `json:"kty"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
}

// JWKS is the document served at /.well-known/jwks.json.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// KeysConfig configures Keys.
type KeysConfig struct {
	// MasterKey encrypts private keys at rest (32 bytes).
	MasterKey []byte
	// TokenTTL is the longest access token lifetime; retired keys verify
	// and are published this long after a rotation (plus a minute).
	TokenTTL time.Duration
	// Refresh is how long a cached key set is used before being read
	// again; default 30 s. A token with an unknown kid triggers a reload.
	Refresh time.Duration
	// CacheSize bounds the tenants whose keys are kept; default 10000.
	CacheSize int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// NewKeys returns a key manager.
func NewKeys(cfg KeysConfig) (*Keys, error) {
	s, err := newSealer(cfg.MasterKey)
	if err != nil {
		return nil, err
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = time.Hour
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 30 * time.Second
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c, err := lru.New[string, *KeySet](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	return &Keys{sealer: s, publish: cfg.TokenTTL + time.Minute, refresh: cfg.Refresh, now: cfg.Now,
		cache: c}, nil
}

// Get returns the tenant's key set, from the cache when fresh, creating the
// first signing key when the tenant has none.
func (k *Keys) Get(ctx context.Context, tenantID string, sh engine.Shard) (*KeySet, error) {
	// Peek takes the cache's lock shared (Get takes it exclusively to move
	// the entry, the top mutex wait under load); recency is renewed anyway
	// when the entry is reloaded every refresh interval.
	if ks, ok := k.cache.Peek(tenantID); ok && k.now().Sub(ks.loaded) < k.refresh {
		return ks, nil
	}
	return k.load(ctx, tenantID, sh)
}

// reloadAfter is the least time between two reloads caused by an unknown
// kid, so garbage tokens cannot make every request read the keys.
const reloadAfter = 5 * time.Second

// ForKid returns a key set that knows kid if the tenant has such a key,
// reloading once when the cached set does not know it.
func (k *Keys) ForKid(ctx context.Context, tenantID string, sh engine.Shard, kid string) (*KeySet, error) {
	ks, err := k.Get(ctx, tenantID, sh)
	if err != nil {
		return nil, err
	}
	if _, ok := ks.public[kid]; ok || k.now().Sub(ks.loaded) < reloadAfter {
		return ks, nil
	}
	k.Forget(tenantID)
	return k.load(ctx, tenantID, sh)
}

// Forget drops a tenant's cached keys (after a rotation or deletion).
func (k *Keys) Forget(tenantID string) { k.cache.Remove(tenantID) }

// load reads the tenant's keys, creating the first one if needed.
// Concurrent loads of one tenant share one read.
func (k *Keys) load(ctx context.Context, tenantID string, sh engine.Shard) (*KeySet, error) {
	v, err, _ := k.group.Do(tenantID, func() (any, error) {
		ks, err := k.read(ctx, tenantID, sh)
		if err != nil {
			return nil, err
		}
		if ks.private == nil {
			if err := sh.Write(ctx, func(tx engine.Querier) error {
				return k.ensureActive(tx, tenantID)
			}); err != nil {
				return nil, fmt.Errorf("create signing key: %w", err)
			}
			if ks, err = k.read(ctx, tenantID, sh); err != nil {
				return nil, err
			}
			if ks.private == nil {
				return nil, fmt.Errorf("signing key missing after creation: %w", engine.ErrUnavailable)
			}
		}
		k.cache.Add(tenantID, ks)
		return ks, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*KeySet), nil
}

type keyRow struct {
	kid     string
	alg     string
	pub     []byte
	priv    []byte
	active  bool
	retired *int64
}

func (k *Keys) read(ctx context.Context, tenantID string, sh engine.Shard) (*KeySet, error) {
	now := k.now()
	cutoff := now.Add(-k.publish).UnixMicro()
	var rows []keyRow
	err := sh.Read(ctx, func(q engine.Querier) error {
		rs, err := q.Query(`SELECT kid, algorithm, public_key, private_key, active, retired_at
			FROM signing_keys WHERE active = 1 OR retired_at > ? ORDER BY created_at DESC`, cutoff)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var r keyRow
			if err := rs.Scan(&r.kid, &r.alg, &r.pub, &r.priv, &r.active, &r.retired); err != nil {
				return err
			}
			rows = append(rows, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	ks := &KeySet{tenantID: tenantID, loaded: now, public: map[string]ed25519.PublicKey{}, jwks: []JWK{}}
	for _, r := range rows {
		if r.alg != Algorithm || len(r.pub) != ed25519.PublicKeySize {
			continue
		}
		ks.public[r.kid] = ed25519.PublicKey(r.pub)
		ks.jwks = append(ks.jwks, JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(r.pub),
			Kid: r.kid, Alg: Algorithm, Use: "sig", KeyOps: []string{"verify"}})
		if r.active && ks.private == nil {
			seed, err := k.sealer.open(r.priv, tenantID, r.kid)
			if err != nil {
				return nil, fmt.Errorf("signing key %s: %w", r.kid, err)
			}
			if len(seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("signing key %s: bad seed length", r.kid)
			}
			ks.kid, ks.private = r.kid, ed25519.NewKeyFromSeed(seed)
		}
	}
	return ks, nil
}

// ensureActive creates an active key in tx unless one exists. It runs in
// the shard's single writer, so two callers cannot both create one.
func (k *Keys) ensureActive(tx engine.Querier, tenantID string) error {
	var n int64
	if err := tx.QueryRow(`SELECT COUNT(*) FROM signing_keys WHERE active = 1`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	return k.insertKey(tx, tenantID)
}

func (k *Keys) insertKey(tx engine.Querier, tenantID string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	kid := newKid()
	sealed := k.sealer.seal(priv.Seed(), tenantID, kid)
	_, err = tx.Exec(`INSERT INTO signing_keys (kid, algorithm, public_key, private_key, active, created_at)
		VALUES (?, ?, ?, ?, 1, ?)`, kid, Algorithm, []byte(pub), sealed, k.now().UnixMicro())
	return err
}

// Rotate retires the tenant's active key (it keeps verifying and stays in
// the JWKS for the token lifetime) and makes a new one active. It returns
// the new kid.
func (k *Keys) Rotate(ctx context.Context, tenantID string, sh engine.Shard) (string, error) {
	err := sh.Write(ctx, func(tx engine.Querier) error {
		if _, err := tx.Exec(`UPDATE signing_keys SET active = 0, retired_at = ? WHERE active = 1`, k.now().UnixMicro()); err != nil {
			return err
		}
		return k.insertKey(tx, tenantID)
	})
	k.Forget(tenantID)
	if err != nil {
		return "", fmt.Errorf("rotate signing key: %w", err)
	}
	ks, err := k.Get(ctx, tenantID, sh)
	if err != nil {
		return "", err
	}
	return ks.kid, nil
}

// EnsureKey creates the tenant's first signing key unless it has one (for
// tenant approval; otherwise the key is created on first use).
func (k *Keys) EnsureKey(ctx context.Context, tenantID string, sh engine.Shard) error {
	_, err := k.Get(ctx, tenantID, sh)
	return err
}

// JWKS returns the tenant's public keys: the active one and those retired
// less than a token lifetime ago.
func (ks *KeySet) JWKS() JWKS { return JWKS{Keys: ks.jwks} }

// Kid returns the active key's id.
func (ks *KeySet) Kid() string { return ks.kid }

func newKid() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ErrNoKey: the token names a key the tenant does not have.
var ErrNoKey = errors.New("signing key not found")
