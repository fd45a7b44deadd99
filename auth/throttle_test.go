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
	t.Run("Account", func(t *testing.T) {
		th := newT(auth.ThrottleConfig{AccountFailures: 3, IPFailures: 0, Window: time.Minute})
		for i := 0; i < 3; i++ {
			if err := th.Allow("t1", "a@x.io", "1.1.1.1"); err != nil {
				t.Fatalf("attempt %d: %v", i, err)
			}
			th.Fail("t1", "a@x.io", "1.1.1.1")
		}
		err := th.Allow("t1", "a@x.io", "2.2.2.2")
		var ae *engine.Error
		if !errors.As(err, &ae) || ae.Kind != engine.KindRateLimited || ae.Code != auth.CodeOverRequestRateLimit || ae.RetryAfter != time.Minute {
			t.Fatalf("4th attempt: %v", err)
		}
		if th.Allow("t2", "a@x.io", "1.1.1.1") != nil || th.Allow("t1", "b@x.io", "1.1.1.1") != nil {
			t.Fatal("the limit leaks to another tenant or account")
		}
		now = now.Add(time.Minute)
		if err := th.Allow("t1", "a@x.io", "1.1.1.1"); err != nil {
			t.Fatalf("after the window: %v", err)
		}
	})
	t.Run("IP", func(t *testing.T) {
		th := newT(auth.ThrottleConfig{AccountFailures: 0, IPFailures: 5, Window: time.Minute})
		for i := 0; i < 5; i++ {
			th.Fail("t1", strconv.Itoa(i)+"@x.io", "9.9.9.9")
		}
		if th.Allow("t1", "new@x.io", "9.9.9.9") == nil {
			t.Fatal("6th failure from one address allowed")
		}
		if th.Allow("t1", "new@x.io", "8.8.8.8") != nil {
			t.Fatal("another address refused")
		}
	})
	t.Run("Disabled", func(t *testing.T) {
		th := newT(auth.ThrottleConfig{})
		for i := 0; i < 1000; i++ {
			th.Fail("t", "a", "ip")
		}
		if th.Allow("t", "a", "ip") != nil {
			t.Fatal("a throttle with no limits refused")
		}
		var nilT *auth.Throttle
		nilT.Fail("t", "a", "ip")
		if nilT.Allow("t", "a", "ip") != nil {
			t.Fatal("nil throttle refused")
		}
	})
	t.Run("Bounded", func(t *testing.T) {
		th := newT(auth.ThrottleConfig{AccountFailures: 1, IPFailures: 0, MaxEntries: 10})
		for i := 0; i < 100; i++ {
			th.Fail("t", strconv.Itoa(i), "ip")
		}
		// Only the 10 most recent accounts are remembered.
		if th.Allow("t", "0", "ip") != nil || th.Allow("t", "99", "ip") == nil {
			t.Fatal("the tables are not a bounded LRU")
		}
	})
	t.Run("ErrNegative", func(t *testing.T) {
		if _, err := auth.NewThrottle(auth.ThrottleConfig{AccountFailures: -1}, nil); err == nil {
			t.Fatal("negative limit accepted")
		}
	})
}
