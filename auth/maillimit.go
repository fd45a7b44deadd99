package auth

import (
	"fmt"
	"math"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"

	"github.com/keyshard/keyshard/engine"
)

// mailLimiter applies a tenant's mail limits (GoTrue's): one mail of a
// kind per address per smtp_max_frequency seconds, and
// rate_limit_email_sent mails an hour per tenant. It counts requests, not
// mails: an address without an account is limited exactly as one with,
// so that the answers never tell them apart. In memory, per process.
type mailLimiter struct {
	now     func() time.Time
	mu      sync.Mutex
	last    *lru.Cache[string, time.Time] // tenant, kind, address → last request
	tenants *lru.Cache[string, tenantMailBucket]
}

type tenantMailBucket struct {
	perHour int
	b       *rate.Limiter
}

func newMailLimiter(now func() time.Time) *mailLimiter {
	last, _ := lru.New[string, time.Time](200_000) // constant sizes: no error
	tenants, _ := lru.New[string, tenantMailBucket](20_000)
	return &mailLimiter{now: now, last: last, tenants: tenants}
}

// allow takes a mail of group (a kind of mail) to address for the tenant,
// or refuses it with 429 over_email_send_rate_limit and when to retry.
func (l *mailLimiter) allow(tenantID string, st Settings, group, address string) error {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	key := tenantID + "\x00" + group + "\x00" + address
	if freq := time.Duration(st.SMTPMaxFrequency) * time.Second; freq > 0 {
		if at, ok := l.last.Get(key); ok && now.Sub(at) < freq {
			wait := freq - now.Sub(at)
			secs := int(math.Ceil(wait.Seconds()))
			return &engine.Error{Kind: engine.KindRateLimited, Code: CodeOverEmailSendRateLimit,
				Message: fmt.Sprintf("For security purposes, you can only request this after %d seconds.", secs), RetryAfter: wait}
		}
	}
	if st.RateLimitEmailSent > 0 {
		tb, ok := l.tenants.Get(tenantID)
		if !ok || tb.perHour != st.RateLimitEmailSent {
			tb = tenantMailBucket{perHour: st.RateLimitEmailSent,
				b: rate.NewLimiter(rate.Limit(float64(st.RateLimitEmailSent)/3600), st.RateLimitEmailSent)}
			l.tenants.Add(tenantID, tb)
		}
		r := tb.b.ReserveN(now, 1)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			return &engine.Error{Kind: engine.KindRateLimited, Code: CodeOverEmailSendRateLimit,
				Message: "Email rate limit exceeded", RetryAfter: d}
		}
	}
	l.last.Add(key, now)
	return nil
}
