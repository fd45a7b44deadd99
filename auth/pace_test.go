package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyshard/keyshard/auth/hash"
)

// held reports whether p holds a request of ip (here until a short context
// ends, the clock being fixed) and fails on any other outcome.
func held(t *testing.T, p *pacer, ip string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	h, err := p.wait(ctx, ip)
	if h != (err != nil) || (err != nil && !errors.Is(err, context.DeadlineExceeded)) {
		t.Fatalf("wait(%q) = %v, %v", ip, h, err)
	}
	return h
}

// spent empties ip's spare refusals (the clock of these tests stands
// still between calls, so the bucket stays empty until it is moved).
func spent(p *pacer, ip string) {
	if ps, ok := p.addrs.Peek(ip); ok {
		ps.spare, ps.spareAt = 0, p.ms()
	}
}

// TestPacer: a client refused for saturated hashing that comes back
// before its Retry-After is held (here until its context ends); other
// addresses, other errors and a client whose Retry-After passed are not.
func TestPacer(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := newPacer(func() time.Time { return now })
	p.refused("10.0.0.1", &hash.OverloadedError{RetryAfter: time.Hour})
	p.refused("10.0.0.2", errors.New("not a hashing refusal"))
	spent(p, "10.0.0.1")
	if !held(t, p, "10.0.0.1") {
		t.Fatal("a client back before its Retry-After was not held")
	}
	for _, ip := range []string{"10.0.0.2", "10.0.0.3", ""} {
		if held(t, p, ip) {
			t.Fatalf("%q was held", ip)
		}
	}
	p.refused("10.0.0.1", &hash.OverloadedError{RetryAfter: time.Hour})
	now = now.Add(time.Hour + time.Second)
	if held(t, p, "10.0.0.1") {
		t.Fatal("held after its Retry-After")
	}
}

// TestPacer_ClientsBehindOneAddress: many clients share an address. Those
// that come back when told find the passes their refusals left and are
// not held, in whatever order they return; a client whose login was hashed
// is not held on its next request while others of its address wait; and
// clients that retry at once are held, one each per pass.
func TestPacer_ClientsBehindOneAddress(t *testing.T) {
	start := time.Unix(2_000_000, 0)
	now := start
	p := newPacer(func() time.Time { return now })
	const ip = "192.0.2.7"
	// While the pool refuses (here another address), a client hashed while
	// its address had no pass, then another refused: the first one's next
	// request does not wait for the other's pass.
	p.refused("192.0.2.200", &hash.OverloadedError{RetryAfter: time.Second})
	p.served(ip)
	p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
	spent(p, ip)
	if held(t, p, ip) {
		t.Fatal("a hashed client's next request waited for another's pass")
	}
	now = start.Add(time.Second + passGrace + passSlot)
	if held(t, p, ip) {
		t.Fatal("held on a stale pass")
	}
	start = now
	p.refused("192.0.2.200", &hash.OverloadedError{RetryAfter: time.Second}) // still refusing
	// 64 clients refused over 640 ms, each told 1 s.
	for i := range 64 {
		now = start.Add(time.Duration(i) * 10 * time.Millisecond)
		p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
	}
	// A client hashed meanwhile comes back at once: not held.
	p.served(ip)
	if held(t, p, ip) {
		t.Fatal("the next request of a client whose login was hashed was held")
	}
	// A client retrying at once has no pass ready: held (once its
	// address's spare refusals are spent).
	spent(p, ip)
	if !held(t, p, ip) {
		t.Fatal("an early retry was not held")
	}
	// The others return as told, in reverse order, each after its own
	// Retry-After: none is held (the early retry above took one pass, the
	// last of them finds the pass it left at its time).
	for i := 63; i >= 1; i-- {
		now = start.Add(time.Duration(i)*10*time.Millisecond + time.Second + time.Millisecond)
		if held(t, p, ip) {
			t.Fatalf("client %d, back after its Retry-After, was held", i)
		}
	}
	// A pass earned by a hashed request is taken by the next admitted
	// one: it does not let an early retry through.
	p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
	p.served(ip)
	p.admitted(ip)
	spent(p, ip)
	if !held(t, p, ip) {
		t.Fatal("an early retry went through on a pass an admitted request should have taken")
	}
	// Passes not taken go stale: an address whose clients gave up is
	// told nothing any more.
	p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
	now = now.Add(time.Second + passGrace + passSlot)
	if held(t, p, ip) {
		t.Fatal("held on a stale pass")
	}
	// Once its spares are back too, the address is forgotten.
	now = now.Add(time.Duration(freeBurst/freeRate+1) * time.Second)
	if held(t, p, ip) || p.addrs.Contains(ip) {
		t.Fatal("an address with no pass and all its spares is still remembered")
	}
}

// TestPacer_StormHeldPerPass: clients retrying at once are held until the
// passes their refusals left, one request per pass: n early retries of an
// address with k passes to come take the k passes, and the others wait out
// maxPace.
func TestPacer_StormHeldPerPass(t *testing.T) {
	now := time.Unix(3_000_000, 0)
	p := newPacer(func() time.Time { return now })
	const ip = "198.51.100.1"
	for range 3 {
		p.refused(ip, &hash.OverloadedError{RetryAfter: 130 * time.Millisecond})
	}
	spent(p, ip)
	// The clock is fixed: each wait lasts its real duration. Three take the
	// passes (130 ms, rounded down to the 100 ms slot, each); the fourth finds none to come and is not held
	// (the address was told nothing more).
	for i := range 3 {
		start := time.Now()
		h, err := p.wait(context.Background(), ip)
		if !h || err != nil {
			t.Fatalf("retry %d: held %v, %v", i, h, err)
		}
		if d := time.Since(start); d < 95*time.Millisecond {
			t.Fatalf("retry %d held %v, want until its pass (100 ms)", i, d)
		}
	}
	if held(t, p, ip) {
		t.Fatal("held with no pass left")
	}
}

// TestPacer_SpareRefusals: clients that come together for the first time
// have no pass: an address has freeBurst refusals without one before its
// requests are held. Spares come back at freeRate only while passes and
// spares together stay under freeBurst.
func TestPacer_SpareRefusals(t *testing.T) {
	now := time.Unix(4_000_000, 0)
	p := newPacer(func() time.Time { return now })
	const ip = "203.0.113.9"
	for range freeBurst {
		p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
		if held(t, p, ip) {
			t.Fatal("a newcomer was held before the spare refusals were spent")
		}
	}
	p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
	if !held(t, p, ip) {
		t.Fatal("not held once the spare refusals were spent")
	}
	// 64 passes are out: no spare comes back, however long it takes.
	now = now.Add(500 * time.Millisecond)
	if !held(t, p, ip) {
		t.Fatal("a spare came back while the address had freeBurst passes out")
	}
	// The clients come back and take their passes: spares come back.
	now = now.Add(time.Second)
	for range freeBurst {
		if held(t, p, ip) {
			t.Fatal("a client back after its Retry-After was held")
		}
	}
	now = now.Add(2 * time.Second)
	p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
	if held(t, p, ip) {
		t.Fatal("no spare came back once the passes were taken")
	}
}

// TestPacer_EarlyRetrierBounded: one client that retries at once, each
// refusal leaving a pass, for two simulated minutes: its refusals a second
// stay at most freeBurst (plus one); they do not grow with its spares.
func TestPacer_EarlyRetrierBounded(t *testing.T) {
	now := time.Unix(5_000_000, 0)
	p := newPacer(func() time.Time { return now })
	const ip = "198.51.100.66"
	perSecond := map[int64]int{}
	start := p.ms()
	for p.ms()-start < 120_000 {
		// One request: held until its pass if the pacer says so (the clock
		// moves instead of sleeping), then refused.
		p.mu.Lock()
		var d time.Duration
		if ps, ok := p.addrs.Get(ip); ok {
			d = ps.take(p.ms())
		}
		p.mu.Unlock()
		now = now.Add(max(d, time.Millisecond))
		p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
		perSecond[(p.ms()-start)/1000]++
	}
	for sec := int64(10); sec < 120; sec++ {
		if n := perSecond[sec]; n > freeBurst+1 {
			t.Fatalf("second %d: %d refusals of one early retrier, want ≤ %d", sec, n, freeBurst+1)
		}
	}
	t.Logf("refusals in seconds 0, 1, 60, 119: %d %d %d %d", perSecond[0], perSecond[1], perSecond[60], perSecond[119])
}
