package auth_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
)

func TestThrottle(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	newT := func(cfg auth.ThrottleConfig) *auth.Throttle {
		th, err := auth.NewThrottle(cfg, clock)
		if err != nil {
			t.Fatal(err)
		}
		return th
	}
	refused := func(t *testing.T, what string, th *auth.Throttle, email, ip string, retry time.Duration) {
		t.Helper()
		_, err := th.Allow("t1", email, ip)
		var ae *engine.Error
		if !errors.As(err, &ae) || ae.Kind != engine.KindRateLimited || ae.Code != auth.CodeOverRequestRateLimit || ae.RetryAfter != retry {
			t.Fatalf("%s: %v, want 429 over_request_rate_limit with Retry-After %v", what, err, retry)
		}
	}
	allowed := func(t *testing.T, what string, th *auth.Throttle, tenant, email, ip string) time.Duration {
		t.Helper()
		wait, err := th.Allow(tenant, email, ip)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return wait
	}
	t.Run("Pair", func(t *testing.T) {
		th := newT(auth.ThrottleConfig{PairFailures: 3, Window: time.Minute})
		for i := 0; i < 3; i++ {
			allowed(t, "attempt "+strconv.Itoa(i), th, "t1", "a@x.io", "1.1.1.1")
			th.Fail("t1", "a@x.io", "1.1.1.1")
		}
		refused(t, "4th attempt from the guessing address", th, "a@x.io", "1.1.1.1", time.Minute)
		// The owner, from elsewhere, is not locked out; nor are other
		// accounts or tenants.
		allowed(t, "the account from another address", th, "t1", "a@x.io", "2.2.2.2")
		allowed(t, "another account from that address", th, "t1", "b@x.io", "1.1.1.1")
		allowed(t, "another tenant", th, "t2", "a@x.io", "1.1.1.1")
		now = now.Add(time.Minute)
		allowed(t, "after the window", th, "t1", "a@x.io", "1.1.1.1")
	})
	t.Run("AccountSlowsDown", func(t *testing.T) {
		now = time.Unix(2000, 0)
		th := newT(auth.ThrottleConfig{PairFailures: 100, AccountFailures: 3, SlowDown: time.Second, MaxSlowDown: 3 * time.Second, Window: time.Minute})
		for i := 0; i < 3; i++ { // guesses from three addresses
			if w := allowed(t, "guess", th, "t1", "a@x.io", "10.0.0."+strconv.Itoa(i)); w != 0 {
				t.Fatalf("guess %d waits %v before the account's limit", i, w)
			}
			th.Fail("t1", "a@x.io", "10.0.0."+strconv.Itoa(i))
		}
		// Past the limit every attempt waits, from any address, and longer
		// with every failure, up to the maximum; none is refused.
		for i, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second} {
			if w := allowed(t, "attempt past the limit", th, "t1", "a@x.io", "192.0.2.1"); w != want {
				t.Fatalf("attempt %d past the limit waits %v, want %v", i, w, want)
			}
			th.Fail("t1", "a@x.io", "10.0.1."+strconv.Itoa(i))
		}
		if w := allowed(t, "another account", th, "t1", "b@x.io", "192.0.2.1"); w != 0 {
			t.Fatalf("another account waits %v", w)
		}
		// The owner's success ends the slow-down.
		th.Succeed("t1", "a@x.io", "192.0.2.1")
		if w := allowed(t, "after a success", th, "t1", "a@x.io", "192.0.2.1"); w != 0 {
			t.Fatalf("after the owner's success: waits %v", w)
		}
	})
	t.Run("IP", func(t *testing.T) {
		th := newT(auth.ThrottleConfig{IPFailures: 5, Window: time.Minute})
		for i := 0; i < 5; i++ {
			th.Fail("t1", strconv.Itoa(i)+"@x.io", "9.9.9.9")
		}
		refused(t, "6th failure from one address", th, "new@x.io", "9.9.9.9", time.Minute)
		allowed(t, "another address", th, "t1", "new@x.io", "8.8.8.8")
	})
	t.Run("Disabled", func(t *testing.T) {
		th := newT(auth.ThrottleConfig{})
		for i := 0; i < 1000; i++ {
			th.Fail("t1", "a", "ip")
		}
		if w := allowed(t, "a throttle with no limits", th, "t1", "a", "ip"); w != 0 {
			t.Fatalf("a throttle with no limits slows down: %v", w)
		}
		var nilT *auth.Throttle
		nilT.Fail("t1", "a", "ip")
		nilT.Succeed("t1", "a", "ip")
		allowed(t, "nil throttle", nilT, "t1", "a", "ip")
	})
	t.Run("Bounded", func(t *testing.T) {
		th := newT(auth.ThrottleConfig{PairFailures: 1, MaxEntries: 10})
		for i := 0; i < 100; i++ {
			th.Fail("t1", strconv.Itoa(i), "ip")
		}
		// Only the 10 most recent pairs are remembered.
		allowed(t, "a forgotten pair", th, "t1", "0", "ip")
		refused(t, "a remembered pair", th, "99", "ip", 5*time.Minute)
	})
	t.Run("ErrNegative", func(t *testing.T) {
		for _, c := range []auth.ThrottleConfig{{AccountFailures: -1}, {PairFailures: -1}, {SlowDown: -time.Second}} {
			if _, err := auth.NewThrottle(c, nil); err == nil {
				t.Fatalf("negative setting accepted: %+v", c)
			}
		}
	})
}

func TestThrottle_IPv6Prefix(t *testing.T) {
	th, err := auth.NewThrottle(auth.ThrottleConfig{PairFailures: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// One host's /64 is one client: stepping through its addresses does
	// not escape the limit; another /64 is another client.
	th.Fail("t1", "a@x.io", "2001:db8:1:2::1")
	th.Fail("t1", "a@x.io", "2001:db8:1:2:ffff::9")
	if _, err := th.Allow("t1", "a@x.io", "2001:db8:1:2:abcd::42"); err == nil {
		t.Fatal("a third address of the same /64 was let through")
	}
	if _, err := th.Allow("t1", "a@x.io", "2001:db8:1:3::1"); err != nil {
		t.Fatalf("another /64: %v", err)
	}
}
