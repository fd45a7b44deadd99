package token

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/keyshard/keyshard/engine"
)

// Keys manages every tenant's signing keys: it creates them on first use,
// keeps the parsed keys of recently used tenants in memory (so a request
// does not decrypt), and rotates them. Safe for concurrent use.
type Keys struct {
	sealer *sealer
	// publish is how long a retired key stays in the JWKS and verifies:
	// the longest lifetime of a token it signed.
	publish time.Duration
	// ahead is how long a rotation's new key is published before it signs.
	ahead time.Duration
	// alg is the algorithm of a tenant's first key and of rotations that
	// name none.
	alg string
	// refresh is how long a cached key set is trusted before it is read
	// again (to see a rotation made by another process).
	refresh time.Duration
	now     func() time.Time

	cache    *lru.Cache[string, *KeySet]
	group    singleflight.Group
	verified verified // access tokens already verified, until they expire
}

// KeySet is one tenant's keys at one moment: the key that signs, and the
// keys that verify its tokens. Immutable.
type KeySet struct {
	tenantID string
	loaded   time.Time
	kid      string // the signing key's
	alg      string
	private  any // its key: *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey, or an HS256 secret
	verify   map[string]verifier
	jwks     []JWK
}

// verifier is a key that verifies tokens signed with alg.
type verifier struct {
	alg string
	key any
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
	// Algorithm signs a tenant's first key and rotations that name none
	// (default DefaultAlgorithm).
	Algorithm string
	// PublishAhead is how long a rotation's new key is published in the
	// JWKS before it signs, so that a client that cached the JWKS (its
	// max-age is 10 min) never meets a token of a key it has not seen
	// (default 10 min).
	PublishAhead time.Duration
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
	if cfg.Algorithm == "" {
		cfg.Algorithm = DefaultAlgorithm
	}
	if !ValidAlgorithm(cfg.Algorithm) {
		return nil, fmt.Errorf("signing algorithm %q: want one of %v", cfg.Algorithm, Algorithms)
	}
	if cfg.PublishAhead <= 0 {
		cfg.PublishAhead = JWKSMaxAge
	}
	c, err := lru.New[string, *KeySet](cfg.CacheSize)
	if err != nil {
		return nil, err
	}
	return &Keys{sealer: s, publish: cfg.TokenTTL + time.Minute, ahead: cfg.PublishAhead, alg: cfg.Algorithm,
		refresh: cfg.Refresh, now: cfg.Now, cache: c}, nil
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
	if _, ok := ks.verify[kid]; ok || k.now().Sub(ks.loaded) < reloadAfter {
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

// JWKSMaxAge is how long clients may cache a tenant's JWKS (its
// Cache-Control max-age), and so the default of KeysConfig.PublishAhead.
const JWKSMaxAge = 10 * time.Minute

// Key states in signing_keys.active.
const (
	keyRetired = 0 // verifies until retired_at + the token lifetime
	keyActive  = 1 // signs (unless a due next key took over), verifies
	keyNext    = 2 // published; signs from created_at + PublishAhead
)

type keyRow struct {
	kid     string
	alg     string
	pub     []byte
	priv    []byte
	state   int
	created int64
	retired *int64
}

// signer picks the key that signs at now: the newest next key that is due,
// else the active one.
func (k *Keys) signer(rows []keyRow, now time.Time) *keyRow {
	var next, active *keyRow
	due := now.Add(-k.ahead).UnixMicro()
	for i := range rows {
		r := &rows[i]
		switch {
		case r.state == keyNext && r.created <= due && (next == nil || r.created > next.created):
			next = r
		case r.state == keyActive && (active == nil || r.created > active.created):
			active = r
		}
	}
	if next != nil {
		return next
	}
	return active
}

func (k *Keys) read(ctx context.Context, tenantID string, sh engine.Shard) (*KeySet, error) {
	now := k.now()
	rows, err := k.rows(ctx, sh, now)
	if err != nil {
		return nil, err
	}
	ks := &KeySet{tenantID: tenantID, loaded: now, verify: map[string]verifier{}, jwks: []JWK{}}
	signer := k.signer(rows, now)
	for _, r := range rows {
		if !ValidAlgorithm(r.alg) {
			continue
		}
		// A key that stopped signing when a next key came due is retired
		// from then on, though its row says active until a rotation marks
		// it: past the token lifetime it no longer verifies.
		if signer != nil && signer.state == keyNext && r.state == keyActive && r.kid != signer.kid &&
			signer.created+k.ahead.Microseconds() <= now.Add(-k.publish).UnixMicro() {
			continue
		}
		if r.alg == HS256 { // the secret verifies: unsealed even when it no longer signs
			secret, err := k.unseal(tenantID, r)
			if err != nil {
				return nil, err
			}
			ks.verify[r.kid] = verifier{alg: HS256, key: secret}
			continue
		}
		pub, ok := parsePublic(r.alg, r.pub)
		if !ok {
			continue
		}
		ks.verify[r.kid] = verifier{alg: r.alg, key: pub}
		ks.jwks = append(ks.jwks, jwkOf(r.alg, r.kid, pub))
	}
	if s := signer; s != nil {
		priv, err := k.unseal(tenantID, *s)
		if err != nil {
			return nil, err
		}
		ks.kid, ks.alg, ks.private = s.kid, s.alg, priv
	}
	return ks, nil
}

// rows reads the keys that sign or verify at now.
func (k *Keys) rows(ctx context.Context, sh engine.Shard, now time.Time) ([]keyRow, error) {
	cutoff := now.Add(-k.publish).UnixMicro()
	var rows []keyRow
	err := sh.Read(ctx, func(q engine.Querier) error {
		rs, err := q.Query(`SELECT kid, algorithm, public_key, private_key, active, created_at, retired_at
			FROM signing_keys WHERE active <> 0 OR retired_at > ? ORDER BY created_at DESC`, cutoff)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var r keyRow
			if err := rs.Scan(&r.kid, &r.alg, &r.pub, &r.priv, &r.state, &r.created, &r.retired); err != nil {
				return err
			}
			rows = append(rows, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	return rows, nil
}

// unseal decrypts and parses a key's private part.
func (k *Keys) unseal(tenantID string, r keyRow) (any, error) {
	raw, err := k.sealer.open(r.priv, tenantID, r.kid)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", r.kid, err)
	}
	priv, err := parsePrivate(r.alg, raw)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", r.kid, err)
	}
	return priv, nil
}

// ensureActive creates an active key in tx unless one signs. It runs in
// the shard's single writer, so two callers cannot both create one.
func (k *Keys) ensureActive(tx engine.Querier, tenantID string) error {
	var n int64
	if err := tx.QueryRow(`SELECT COUNT(*) FROM signing_keys WHERE active = 1`).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	// No client has seen a key of this tenant yet: it signs at once.
	_, err := k.insertKey(tx, tenantID, k.alg, keyActive)
	return err
}

func (k *Keys) insertKey(tx engine.Querier, tenantID, alg string, state int) (string, error) {
	pub, priv, err := newKeyMaterial(alg)
	if err != nil {
		return "", err
	}
	kid := newKid()
	sealed := k.sealer.seal(priv, tenantID, kid)
	_, err = tx.Exec(`INSERT INTO signing_keys (kid, algorithm, public_key, private_key, active, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`, kid, alg, pub, sealed, state, k.now().UnixMicro())
	return kid, err
}

// RotateOptions choose a rotation's new key.
type RotateOptions struct {
	// Algorithm of the new key (default: the Keys' algorithm).
	Algorithm string
	// Immediately makes the new key sign at once instead of after
	// PublishAhead, and withdraws every other key at once (its tokens stop
	// verifying): for a key that leaked. A client that cached the JWKS
	// refuses new tokens until it reloads it.
	Immediately bool
}

// Rotate publishes a new key of the tenant, which signs after
// PublishAhead (the key signing now goes on meanwhile, then verifies for
// the token lifetime), or at once with Immediately. It returns the new
// kid and when it signs.
func (k *Keys) Rotate(ctx context.Context, tenantID string, sh engine.Shard, o RotateOptions) (string, time.Time, error) {
	alg := o.Algorithm
	if alg == "" {
		alg = k.alg
	}
	if !ValidAlgorithm(alg) {
		return "", time.Time{}, engine.Invalidf("unknown signing algorithm %q (want one of %v)", alg, Algorithms)
	}
	var kid string
	var signsAt time.Time
	err := sh.Write(ctx, func(tx engine.Querier) error {
		now := k.now()
		ts := now.UnixMicro()
		if o.Immediately {
			// A leaked key must stop verifying now, not a token lifetime
			// later: retired as of before the publication window.
			gone := now.Add(-k.publish - time.Second).UnixMicro()
			if _, err := tx.Exec(`UPDATE signing_keys SET active = 0, retired_at = ? WHERE active <> 0`, gone); err != nil {
				return err
			}
			var err error
			kid, err = k.insertKey(tx, tenantID, alg, keyActive)
			signsAt = now
			return err
		}
		// The key signing now stays the active one until the new key is
		// due; any other (an earlier next key not yet due) retires.
		rows, err := k.txRows(tx)
		if err != nil {
			return err
		}
		if cur := k.signer(rows, now); cur != nil {
			if _, err := tx.Exec(`UPDATE signing_keys SET active = 0, retired_at = ? WHERE active <> 0 AND kid <> ?`, ts, cur.kid); err != nil {
				return err
			}
			if _, err := tx.Exec(`UPDATE signing_keys SET active = 1 WHERE kid = ?`, cur.kid); err != nil {
				return err
			}
		}
		kid, err = k.insertKey(tx, tenantID, alg, keyNext)
		signsAt = now.Add(k.ahead)
		return err
	})
	k.Forget(tenantID)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("rotate signing key: %w", err)
	}
	return kid, signsAt, nil
}

// txRows reads the keys in a state to sign, inside a write.
func (k *Keys) txRows(tx engine.Querier) ([]keyRow, error) {
	rs, err := tx.Query(`SELECT kid, algorithm, active, created_at FROM signing_keys WHERE active <> 0`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var rows []keyRow
	for rs.Next() {
		var r keyRow
		if err := rs.Scan(&r.kid, &r.alg, &r.state, &r.created); err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, rs.Err()
}

// EnsureKey creates the tenant's first signing key unless it has one (for
// tenant approval; otherwise the key is created on first use).
func (k *Keys) EnsureKey(ctx context.Context, tenantID string, sh engine.Shard) error {
	_, err := k.Get(ctx, tenantID, sh)
	return err
}

// Seed returns what writes the tenant's first signing key into its new
// database (engine.Seeder): inserts only.
func (k *Keys) Seed(tenantID string) func(engine.Querier) error {
	return func(tx engine.Querier) error { return k.ensureActive(tx, tenantID) }
}

// JWKS returns the tenant's public keys: the one that signs, the next one,
// and those retired less than a token lifetime ago; never an HS256 secret.
func (ks *KeySet) JWKS() JWKS { return JWKS{Keys: ks.jwks} }

// Secret returns the tenant's HS256 secret with that kid, for the tenant's
// own backends to verify its tokens with (Supabase's legacy JWT secret).
func (k *Keys) Secret(ctx context.Context, tenantID string, sh engine.Shard, kid string) ([]byte, error) {
	rows, err := k.rows(ctx, sh, k.now())
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r.kid == kid && r.alg == HS256 {
			priv, err := k.unseal(tenantID, r)
			if err != nil {
				return nil, err
			}
			return priv.([]byte), nil
		}
	}
	return nil, fmt.Errorf("no HS256 key %q: %w", kid, ErrNoKey)
}

// DefaultAlgorithm returns the algorithm of new keys that name none.
func (k *Keys) DefaultAlgorithm() string { return k.alg }

// Kid returns the signing key's id.
func (ks *KeySet) Kid() string { return ks.kid }

// Algorithm returns the signing key's algorithm.
func (ks *KeySet) Algorithm() string { return ks.alg }

func newKid() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ErrNoKey: the token names a key the tenant does not have.
var ErrNoKey = errors.New("signing key not found")

// SigningKey returns the key that signs now: its kid, algorithm and
// private key (*ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey, or
// an HS256 secret), for a signer other than Sign (the OAuth provider's).
func (ks *KeySet) SigningKey() (kid, alg string, key any) { return ks.kid, ks.alg, ks.private }

// VerifyKey returns the key that verifies the tokens signed by kid, and
// its algorithm.
func (ks *KeySet) VerifyKey(kid string) (alg string, key any, ok bool) {
	v, ok := ks.verify[kid]
	return v.alg, v.key, ok
}
