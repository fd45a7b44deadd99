package auth

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"

	"github.com/keyshard/keyshard/auth/hash"
)

// held reports whether p holds a request of k (here until a short context
// ends, the clock being fixed) and fails on any other outcome.
func held(t *testing.T, p *pacer, k paceKey) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	h, err := p.wait(ctx, k)
	if h != (err != nil) || (err != nil && !errors.Is(err, context.DeadlineExceeded)) {
		t.Fatalf("wait(%v) = %v, %v", k, h, err)
	}
	return h
}

// spent empties ip's spare refusals (the clock of these tests stands
// still between calls, so the bucket stays empty until it is moved).
func spent(p *pacer, ip string) {
	if a, ok := p.addrs.Peek(addrKey(ip)); ok {
		a.spare, a.spareAt = 0, p.ms()
	}
}

// counterValue reads a Prometheus counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// refusal is a hashing refusal telling the client to come back after d.
func refusal(d time.Duration) error { return &hash.OverloadedError{RetryAfter: d} }

// TestPacer: a client refused for saturated hashing that comes back
// before its Retry-After is held (here until its context ends); other
// addresses, other errors and a client whose Retry-After passed are not.
func TestPacer(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := newPacer(func() time.Time { return now })
	a, b := p.key("10.0.0.1", "t1", "a@example.com"), p.key("10.0.0.2", "t1", "a@example.com")
	p.refused(a, refusal(time.Hour))
	p.refused(b, errors.New("not a hashing refusal"))
	spent(p, "10.0.0.1")
	if !held(t, p, a) {
		t.Fatal("a client back before its Retry-After was not held")
	}
	for _, k := range []paceKey{b, p.key("10.0.0.3", "t1", "a@example.com"), p.key("", "t1", "a@example.com")} {
		if held(t, p, k) {
			t.Fatalf("%v was held", k)
		}
	}
	p.refused(a, refusal(time.Hour))
	now = now.Add(time.Hour + time.Second)
	if held(t, p, a) {
		t.Fatal("held after its Retry-After")
	}
}

// TestPacer_Keys: an account is its tenant and email; the same email in
// another tenant, or at another address, is another client.
func TestPacer_Keys(t *testing.T) {
	p := newPacer(time.Now)
	k := p.key("192.0.2.1", "t1", "a@example.com")
	if k != p.key("192.0.2.1", "t1", "a@example.com") {
		t.Fatal("the same client gave two keys")
	}
	for _, o := range []paceKey{p.key("192.0.2.1", "t2", "a@example.com"), p.key("192.0.2.1", "t1", "b@example.com"),
		p.key("192.0.2.2", "t1", "a@example.com"), p.key("192.0.2.1", "t1a", "@example.com")} {
		if o == k {
			t.Fatalf("%v: the same key as another client's", o)
		}
	}
	// An IPv6 client is its /64: its addresses share the address's spares
	// (on a clock that stands still, so that no pass goes stale meanwhile).
	now := time.Unix(5_000_000, 0)
	p = newPacer(func() time.Time { return now })
	v6 := p.key("2001:db8:1:2::1", "t1", "a@example.com")
	if v6 != p.key("2001:db8:1:2:ffff:ffff:ffff:ffff", "t1", "a@example.com") || v6 == p.key("2001:db8:1:3::1", "t1", "a@example.com") {
		t.Fatal("IPv6 addresses are not keyed by their /64")
	}
	for i := range freeBurst { // newcomers from other addresses of the /64
		p.refused(p.key(fmt.Sprintf("2001:db8:1:2::%x", i), "t1", fmt.Sprint(i)), refusal(time.Second))
		if held(t, p, p.key(fmt.Sprintf("2001:db8:1:2::1:%x", i), "t1", fmt.Sprint("n", i))) {
			t.Fatal("a newcomer was held before the /64's spares were spent")
		}
	}
	p.refused(p.key("2001:db8:1:2::9999", "t1", "last"), refusal(time.Second))
	if !held(t, p, p.key("2001:db8:1:2::abcd", "t1", "new")) {
		t.Fatal("a newcomer of a /64 whose spares its other addresses spent was not held")
	}
	if held(t, p, p.key("2001:db8:1:3::1", "t1", "new")) {
		t.Fatal("a newcomer of another /64 was held")
	}
}

// TestPacer_ClientsBehindOneAddress: many clients share an address. Those
// that come back when told find the passes their refusals left and are
// not held, in whatever order they return and whatever the others do: a
// client retrying at once for another account, or a client whose login was
// hashed coming back for a new account, takes nothing of theirs.
func TestPacer_ClientsBehindOneAddress(t *testing.T) {
	start := time.Unix(2_000_000, 0)
	now := start
	p := newPacer(func() time.Time { return now })
	const ip = "192.0.2.7"
	acct := func(i int) paceKey { return p.key(ip, "t", string(rune('A'+i))) }
	p.refused(p.key("192.0.2.200", "t", "x"), refusal(time.Second)) // the pool refuses
	// 64 clients, each its account, refused over 640 ms, each told 1 s.
	for i := range 64 {
		now = start.Add(time.Duration(i) * 10 * time.Millisecond)
		p.refused(acct(i), refusal(time.Second))
	}
	// A client retrying at once, for an account of its own, its address's
	// spares spent: held, and for a fixed maxPace since it has no pass.
	spent(p, ip)
	early := p.key(ip, "t", "early")
	p.refused(early, refusal(time.Second))
	noPass, early0 := counterValue(pacedNoPass), counterValue(pacedEarly)
	p.mu.Lock()
	d := p.take(early, p.ms())
	p.mu.Unlock()
	if d <= 0 {
		t.Fatal("an early retry was not held")
	}
	if n := counterValue(pacedNoPass) - noPass; n != 0 {
		t.Fatalf("an early retry held on its own pass counted as one with no pass (%v)", n)
	}
	if n := counterValue(pacedEarly) - early0; n != 1 {
		t.Fatalf(`keyshard_auth_hash_paced_total{reason="early"} moved by %v for one early retry, want 1`, n)
	}
	p.refused(early, refusal(time.Second))
	if d := func() time.Duration { p.mu.Lock(); defer p.mu.Unlock(); return p.take(p.key(ip, "t", "new"), p.ms()) }(); d != maxPace {
		t.Fatalf("a request with no pass and no spare held %v, want %v", d, maxPace)
	}
	if n := counterValue(pacedNoPass) - noPass; n != 1 {
		t.Fatalf(`keyshard_auth_hash_paced_total{reason="no_pass"} moved by %v for one request held without a pass, want 1`, n)
	}
	// A client whose login was hashed earns its address a spare: its next
	// request, for another account, is not held and takes no one's pass.
	p.served(p.key(ip, "t", "served"))
	if held(t, p, p.key(ip, "t", "next")) {
		t.Fatal("the next request of a client whose login was hashed was held")
	}
	// The others return as told, in reverse order, each after its own
	// Retry-After: none is held.
	for i := 63; i >= 0; i-- {
		now = start.Add(time.Duration(i)*10*time.Millisecond + time.Second + time.Millisecond)
		if held(t, p, acct(i)) {
			t.Fatalf("client %d, back after its Retry-After, was held", i)
		}
	}
	// A pass earned by a refusal is taken by the account's next admitted
	// request: it does not let an early retry of that account through.
	p.refused(acct(1), refusal(time.Second))
	now = now.Add(time.Second)
	p.admitted(acct(1))
	p.refused(acct(1), refusal(time.Second))
	spent(p, ip)
	if !held(t, p, acct(1)) {
		t.Fatal("an early retry went through on a pass an admitted request should have taken")
	}
	// Passes not taken go stale: an address whose clients gave up is
	// told nothing any more, and once its spares are back it is forgotten.
	p.refused(acct(2), refusal(time.Second))
	now = now.Add(time.Second + passGrace + passSlot)
	if held(t, p, acct(2)) {
		t.Fatal("held on a stale pass")
	}
	now = now.Add(time.Duration(freeBurst/freeRate+1) * time.Second)
	p.admitted(acct(2))
	if p.addrs.Contains(ip) {
		t.Fatal("an address with no pass and all its spares is still remembered")
	}
}

// TestPacer_StormHeldPerPass: clients retrying at once are held until the
// passes their account's refusals left, one request per pass: n early
// retries of an account with k passes to come take the k passes, and the
// others are held maxPace.
func TestPacer_StormHeldPerPass(t *testing.T) {
	now := time.Unix(3_000_000, 0)
	p := newPacer(func() time.Time { return now })
	k := p.key("198.51.100.1", "t", "a")
	for range 3 {
		p.refused(k, refusal(130*time.Millisecond))
	}
	spent(p, k.ip)
	// The clock is fixed: each wait lasts its real duration. Three take the
	// passes (130 ms, rounded down to the 100 ms slot, each).
	for i := range 3 {
		start := time.Now()
		h, err := p.wait(context.Background(), k)
		if !h || err != nil {
			t.Fatalf("retry %d: held %v, %v", i, h, err)
		}
		if d := time.Since(start); d < 95*time.Millisecond || d > 500*time.Millisecond {
			t.Fatalf("retry %d held %v, want until its pass (100 ms)", i, d)
		}
	}
	p.mu.Lock()
	d := p.take(k, p.ms())
	p.mu.Unlock()
	if d != maxPace {
		t.Fatalf("with no pass left: held %v, want %v", d, maxPace)
	}
}

// TestPacer_SpareRefusals: clients that come together for the first time
// have no pass: an address has freeBurst refusals without one before its
// requests are held. Spares come back at freeRate only while passes and
// spares together stay under freeBurst, and one for each hashed request.
func TestPacer_SpareRefusals(t *testing.T) {
	now := time.Unix(4_000_000, 0)
	p := newPacer(func() time.Time { return now })
	const ip = "203.0.113.9"
	k := func(i int) paceKey { return p.key(ip, "t", string(rune('A'+i))) }
	for i := range freeBurst {
		p.refused(k(i), refusal(time.Second))
		if held(t, p, k(1000+i)) {
			t.Fatal("a newcomer was held before the spare refusals were spent")
		}
	}
	p.refused(k(2000), refusal(time.Second))
	if !held(t, p, k(2001)) {
		t.Fatal("not held once the spare refusals were spent")
	}
	// freeBurst passes are out: no spare comes back, however long it takes...
	now = now.Add(500 * time.Millisecond)
	if !held(t, p, k(2002)) {
		t.Fatal("a spare came back while the address had freeBurst passes out")
	}
	// ... but a hashed request earns one.
	p.served(k(3000))
	if held(t, p, k(2003)) {
		t.Fatal("no spare for a hashed request")
	}
	// The clients come back and take their passes: spares come back.
	now = now.Add(time.Second)
	for i := range freeBurst {
		if held(t, p, k(i)) {
			t.Fatal("a client back after its Retry-After was held")
		}
	}
	now = now.Add(2 * time.Second)
	p.refused(k(4000), refusal(time.Second))
	if held(t, p, k(4001)) {
		t.Fatal("no spare came back once the passes were taken")
	}
}

// earlyRetrier runs clients at one address that retry at once, each
// refusal leaving a pass, for two simulated minutes, and returns their
// refusals per second. account gives the account of a client's nth request.
func earlyRetrier(clients int, account func(client, n int) string, served bool) map[int64]int {
	now := time.Unix(5_000_000, 0)
	p := newPacer(func() time.Time { return now })
	const ip = "198.51.100.66"
	perSecond := map[int64]int{}
	start := p.ms()
	next := make([]int64, clients) // when each client sends next (ms)
	sent := make([]int, clients)
	lastServed := start
	for {
		c := 0
		for i := range next {
			if next[i] < next[c] {
				c = i
			}
		}
		if next[c]-start >= 120_000 {
			return perSecond
		}
		now = time.Unix(5_000_000, 0).Add(time.Duration(next[c]-start) * time.Millisecond)
		k := p.key(ip, "t", account(c, sent[c]))
		sent[c]++
		// One request: held until its pass if the pacer says so (the clock
		// moves instead of sleeping), then refused; with served, other
		// clients of the address are hashed meanwhile, 100 a second.
		p.mu.Lock()
		d := p.take(k, p.ms())
		p.mu.Unlock()
		now = now.Add(max(d, time.Millisecond))
		for ; served && lastServed+10 <= p.ms(); lastServed += 10 {
			p.served(p.key(ip, "t", "honest"))
		}
		p.refused(k, refusal(time.Second))
		perSecond[(p.ms()-start)/1000]++
		next[c] = p.ms()
	}
}

// TestPacer_EarlyRetrierBounded: clients that retry at once get a bounded
// number of refusals a second, which does not grow with time: one client
// of one account at most its maxAcctPasses passes and the spares' refill
// (plus one) a second; clients rotating emails about one a second each; a
// client retrying one account at an address whose other clients are hashed
// 100 times a second (each earning a spare) at most its account's passes
// plus those spares; and one rotating a few emails there at most
// maxAddrPasses plus the spares.
func TestPacer_EarlyRetrierBounded(t *testing.T) {
	one := func(int, int) string { return "a" }
	rotating := func(c, n int) string { return string(rune(c)) + "/" + string(rune(n)) }
	for _, tc := range []struct {
		name    string
		clients int
		account func(c, n int) string
		served  bool
		bound   int
	}{
		{"one client, one account", 1, one, false, maxAcctPasses + freeRate + 1},
		{"16 clients rotating emails", 16, rotating, false, freeRate + 16 + 1},
		{"one account, others hashed", 1, one, true, maxAcctPasses + freeRate + 100 + 1},
		{"32 emails, others hashed", 1, func(_, n int) string { return string(rune(n % 32)) }, true, maxAddrPasses + freeRate + 100 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			perSecond := earlyRetrier(tc.clients, tc.account, tc.served)
			for sec := int64(10); sec < 120; sec++ {
				if n := perSecond[sec]; n > tc.bound {
					t.Fatalf("second %d: %d refusals, want ≤ %d", sec, n, tc.bound)
				}
			}
			if perSecond[119] > perSecond[60]+perSecond[60]/10+2 {
				t.Fatalf("refusals grow: %d a second at 60 s, %d at 119 s", perSecond[60], perSecond[119])
			}
			t.Logf("refusals in seconds 0, 1, 60, 119: %d %d %d %d", perSecond[0], perSecond[1], perSecond[60], perSecond[119])
		})
	}
}

// TestPacer_SparesBackAfterQuiet: passes that went stale while an address
// was quiet do not keep its spares from coming back: after a storm whose
// clients gave up, a newcomer is not held.
func TestPacer_SparesBackAfterQuiet(t *testing.T) {
	now := time.Unix(6_000_000, 0)
	p := newPacer(func() time.Time { return now })
	const ip = "203.0.113.77"
	for i := range 300 {
		p.refused(p.key(ip, "t", "gone-"+string(rune('A'+i))), refusal(time.Second))
	}
	spent(p, ip)
	now = now.Add(time.Minute)
	for i := range 2 {
		if held(t, p, p.key(ip, "t", "new-"+string(rune('A'+i)))) {
			t.Fatalf("newcomer %d held a minute after the storm", i)
		}
	}
}

// TestPacer_StaleAccountPassesDoNotCount: an account whose 64 passes went
// stale while its address was forgotten gets a pass for its next refusal,
// and its client, back on time with the address's spares spent, is not
// held.
func TestPacer_StaleAccountPassesDoNotCount(t *testing.T) {
	now := time.Unix(7_000_000, 0)
	p := newPacer(func() time.Time { return now })
	const ip = "203.0.113.78"
	k := p.key(ip, "t", "returning@example.com")
	for range maxAcctPasses {
		p.refused(k, refusal(time.Second))
	}
	now = now.Add(time.Minute)
	p.addrs.Remove(ip) // forgotten (idle, or pushed out of the LRU); the account's entry stays
	p.refused(k, refusal(time.Second))
	now = now.Add(time.Second + time.Millisecond)
	spent(p, ip) // newcomers took them meanwhile
	if held(t, p, k) {
		t.Fatal("a client back on time was held: its refusal left no pass, the account's stale ones counted")
	}
}

// retriersFromManyAddresses is earlyRetrier with every client at an
// address of its own, each drawing one of 64 accounts for each request as
// the load generator does, for the given simulated seconds on p's clock
// (*now); it returns the refusals answered each second.
func retriersFromManyAddresses(p *pacer, now *time.Time, clients, seconds int) map[int64]int {
	t0 := *now
	perSecond := map[int64]int{}
	start := p.ms()
	next := make([]int64, clients)
	for i := range next {
		next[i] = start
	}
	sent := make([]int, clients)
	for {
		c := 0
		for i := range next {
			if next[i] < next[c] {
				c = i
			}
		}
		if next[c]-start >= int64(seconds)*1000 {
			return perSecond
		}
		*now = t0.Add(time.Duration(next[c]-start) * time.Millisecond)
		k := p.key(fmt.Sprintf("198.18.%d.%d", c/256, c%256), "t", fmt.Sprint((sent[c]*7+c)%64))
		sent[c]++
		p.mu.Lock()
		d := p.take(k, p.ms())
		p.mu.Unlock()
		*now = now.Add(max(d, time.Millisecond))
		p.refused(k, refusal(time.Second))
		perSecond[(p.ms()-start)/1000]++
		next[c] = p.ms()
	}
}

// TestPacer_RetriersFromManyAddresses: clients retrying at once, each from
// an address of its own, are answered about quickRate refusals a second in
// all (plus about one a second each for those held the longest), not the
// thousands a second each that their addresses' own spares and passes
// would allow.
func TestPacer_RetriersFromManyAddresses(t *testing.T) {
	run := func(clients, seconds int, unbounded bool) (map[int64]int, *pacer, *time.Time) {
		now := time.Unix(7_000_000, 0)
		p := newPacer(func() time.Time { return now })
		if unbounded {
			p.quick = rate.NewLimiter(rate.Inf, 0)
		}
		return retriersFromManyAddresses(p, &now, clients, seconds), p, &now
	}
	const clients = 256
	got, _, _ := run(clients, 30, false)
	for sec := int64(3); sec < 30; sec++ {
		if got[sec] > quickRate+2*clients {
			t.Fatalf("second %d: %d refusals, want ≤ %d", sec, got[sec], quickRate+2*clients)
		}
	}
	free, _, _ := run(clients, 30, true)
	t.Logf("refusals in seconds 0, 1, 10, 29: %d %d %d %d (unbounded: %d %d %d %d)",
		got[0], got[1], got[10], got[29], free[0], free[1], free[10], free[29])
	if free[10] < 4*(quickRate+2*clients) {
		t.Fatalf("without the bound only %d refusals at 10 s: the test no longer shows what it guards against", free[10])
	}

	// More clients than the bound a second: a request past maxPace of
	// debt takes no turn, so the debt stays under a second and a newcomer
	// soon after the storm is not held.
	many, p, now := run(2048, 6, false)
	for sec := int64(3); sec < 6; sec++ {
		if many[sec] > quickRate+2*2048 {
			t.Fatalf("2,048 clients, second %d: %d refusals, want ≤ %d", sec, many[sec], quickRate+2*2048)
		}
	}
	*now = now.Add(3 * time.Second)
	if held(t, p, p.key("203.0.113.200", "t", "newcomer")) {
		t.Fatal("a newcomer 3 s after a storm from 2,048 addresses was held")
	}
}
