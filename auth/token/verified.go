package token

import (
	"crypto/sha256"
	"sync"
)

// verified remembers access tokens whose signature has been checked, until
// they expire, so that a client presenting the same token on every request
// costs one SHA-256 instead of one Ed25519 verification (~80 µs, the largest
// cost of GET /user in profiles). It caches only what Verify already
// accepted: a hit still checks the tenant, the expiry, the issuer and that
// the tenant still publishes the key that verified it (a tenant deleted and
// restored with new keys, or a key withdrawn, goes back to full
// verification), and the caller still checks the session in the database. Bounded: each of its
// shards holds at most verifiedPerShard tokens and forgets a random one when
// full. Safe for concurrent use.
type verified struct {
	shards [verifiedShards]verifiedShard
}

const (
	verifiedShards   = 32
	verifiedPerShard = 512 // 16,384 tokens, ~10 MB at most
)

type verifiedShard struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]verifiedToken
}

type verifiedToken struct {
	tenantID string
	kid      string // the key that verified it; a hit needs it still published
	claims   Claims
}

func (v *verified) shard(sum *[sha256.Size]byte) *verifiedShard {
	return &v.shards[sum[0]%verifiedShards]
}

// get returns a copy of the claims of raw and the kid that verified it, if
// raw was verified for tenantID and has not expired at unix time now.
func (v *verified) get(tenantID, raw string, now int64) (*Claims, string, bool) {
	sum := sha256.Sum256([]byte(raw))
	s := v.shard(&sum)
	s.mu.Lock()
	e, ok := s.m[sum]
	if ok && e.claims.ExpiresAt <= now {
		delete(s.m, sum)
		ok = false
	}
	s.mu.Unlock()
	if !ok || e.tenantID != tenantID {
		return nil, "", false
	}
	c := e.claims // the metadata JSON is shared and never written
	return &c, e.kid, true
}

// put remembers that raw verified for tenantID with key kid and claims c.
func (v *verified) put(tenantID, kid, raw string, c *Claims) {
	sum := sha256.Sum256([]byte(raw))
	s := v.shard(&sum)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[[sha256.Size]byte]verifiedToken)
	}
	if len(s.m) >= verifiedPerShard {
		for k := range s.m { // map order is random: forget any one
			delete(s.m, k)
			break
		}
	}
	s.m[sum] = verifiedToken{tenantID: tenantID, kid: kid, claims: *c}
}
