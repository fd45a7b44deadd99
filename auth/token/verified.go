package token

import (
	"hash/maphash"
	"strings"
	"sync"
)

// verified remembers access tokens whose signature has been checked, until
// they expire, so that a client presenting the same token on every request
// costs a map lookup instead of one signature verification (~40-80 µs, the
// largest cost of GET /user in profiles). Tokens are kept and compared
// whole: a hit is the very token that verified, not one with the same hash.
// It caches only what Verify already accepted: a hit still checks the
// tenant, the expiry, the issuer and that the tenant still publishes the key
// that verified it (a tenant deleted and restored with new keys, or a key
// withdrawn, goes back to full verification), and the caller still checks
// the session in the database. Bounded: each of its shards holds at most
// verifiedPerShard tokens and forgets a random one when full. Safe for
// concurrent use.
type verified struct {
	shards [verifiedShards]verifiedShard
}

const (
	verifiedShards   = 32
	verifiedPerShard = 512 // 16,384 tokens
	// verifiedMaxToken: longer tokens (large user metadata) are verified
	// every time, so that the cache holds at most 16,384 tokens of 2 KiB
	// with the claims decoded from them (tens of MiB), however large the
	// metadata users are given. A usual token is under 1 KiB.
	verifiedMaxToken = 2 << 10
)

var verifiedSeed = maphash.MakeSeed()

type verifiedShard struct {
	mu sync.Mutex
	m  map[string]verifiedToken
}

type verifiedToken struct {
	tenantID string
	kid      string // the key that verified it; a hit needs it still published
	claims   Claims
}

func (v *verified) shard(raw string) *verifiedShard {
	return &v.shards[maphash.String(verifiedSeed, raw)%verifiedShards]
}

// get returns a copy of the claims of raw and the kid that verified it, if
// raw was verified for tenantID and has not expired at unix time now.
func (v *verified) get(tenantID, raw string, now int64) (*Claims, string, bool) {
	s := v.shard(raw)
	s.mu.Lock()
	e, ok := s.m[raw]
	if ok && e.claims.ExpiresAt <= now {
		delete(s.m, raw)
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
	if len(raw) > verifiedMaxToken {
		return
	}
	s := v.shard(raw)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]verifiedToken)
	}
	if len(s.m) >= verifiedPerShard {
		for k := range s.m { // map order is random: forget any one
			delete(s.m, k)
			break
		}
	}
	// A copy of its own: raw may be a slice of a larger string (a header)
	// that the cache would otherwise keep alive.
	s.m[strings.Clone(raw)] = verifiedToken{tenantID: tenantID, kid: kid, claims: *c}
}
