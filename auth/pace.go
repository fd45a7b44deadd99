package auth

import (
	"context"
	"errors"
	"hash/maphash"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/time/rate"

	"github.com/keyshard/keyshard/auth/hash"
)

// pacer slows clients that ignore Retry-After. A login or signup refused
// because password hashing is saturated tells its client when to come
// back; a client that comes back sooner waits out the rest (at most
// maxPace) before it is answered. Clients that retry at once then cost a
// bounded number of requests instead of thousands a second, whose refusals
// would take the CPU the hash workers need (the login collapse of issue
// 18). A client that waits as told is not slowed, as long as the server
// answers fewer than quickRate refusals a second in all (below).
//
// Clients are known by address and by the account they sign in to or up
// for (tenant and email): many clients share an address (a NAT, a proxy, a
// load generator), but a client that retries sends the same account again.
// So the pacer keeps, per address and account, the moments at which the
// account's refused requests were told to come back, and counts each one
// as a pass for one request of that account:
//
//  1. a request that finds a pass of its account whose time has come takes
//     it and is not held;
//  2. else one that finds a spare refusal of its address spends it and is
//     not held (clients that come for the first time have no pass);
//  3. else one that finds a pass of its account still to come is held
//     until the earliest and takes it (a client back early);
//  4. else it is held for maxPace and takes nothing.
//
// A request never takes another account's pass, so a client that comes
// back as told finds its pass whatever the clients of other accounts do.
// (An earlier pacer kept passes per address only: a held request took
// the pass another client's refusal left, that client was held in turn,
// and from about 256 honest clients behind one address the holds chained
// without end.)
//
// Spares: a bucket per address, refilled at freeRate only while the
// address has fewer than freeBurst passes and spares together, and by one
// for each of its requests that was hashed (its client's next request,
// for another account, would otherwise have no pass), up to freeBurst.
// Each refusal leaves a pass, so a client that ignores Retry-After turns
// its spares into passes and, once they are spent, gets about one refusal
// a second per pass however fast it retries; an account holds at most
// maxAcctPasses passes and an address maxAddrPasses. Passes not taken
// within passGrace of their time are dropped (the client gave up).
//
// All addresses together: the requests let through unheld (rules 1 and 2,
// and the first of an address) are answered at most quickRate a second
// beyond a burst of quickBurst; past that a request is held until its
// turn, at most maxPace. Every address has its own spares and passes, so
// without this many addresses retrying at once (clients each with its own
// address, or told apart behind a proxy by --rate-limit-header) were
// answered tens of thousands of refusals a second, and the hash workers,
// at idle priority, starved: logins fell to a quarter of the hash rate.
//
// In memory, per process; the time is the monotonic clock's. An account is
// kept as a seeded hash, not as its email. A client rotating emails fills
// the (address, account) LRU with passes nobody takes and can push out
// honest clients' passes: those fall back to spares, or a hold of maxPace.
//
// Only requests that the hash pool would refuse ask the pacer: a request it
// admits is never held.
type pacer struct {
	now  func() time.Time
	base time.Time // the clock's zero: times are milliseconds since
	seed maphash.Seed
	mu   sync.Mutex
	// lastRefusal: when the pool last refused a request of any address
	// (ms); hashed requests earn spares only close to one.
	lastRefusal int64
	addrs       *lru.Cache[string, *addrPaces]
	accts       *lru.Cache[paceKey, *slots]
	// quick: the requests answered unheld, all addresses together.
	quick *rate.Limiter
}

// paceKey names a client to the pacer: its address and a hash of the
// account it signs in to or up for.
type paceKey struct {
	ip   string
	acct uint64
}

const (
	// maxPace bounds the wait of one request, and how far ahead a pass is.
	maxPace = time.Second
	// passGrace: a pass not taken this long after its time is dropped.
	passGrace = 5 * time.Second
	// passSlot groups passes by their time, rounded down to it (a pass
	// ready at most this much early).
	passSlot = 50 * time.Millisecond
	// maxAcctPasses and maxAddrPasses bound the passes of an account and
	// of an address (over its accounts): past them a refusal leaves none.
	maxAcctPasses = 64
	maxAddrPasses = 1024
	// freeBurst and freeRate: the spare refusals of an address (see
	// pacer): as many newcomers at once as a login storm's first second
	// brings behind one address (256 clients: bench's login workload).
	freeBurst = 256
	freeRate  = 8 // per second
	// quickRate and quickBurst: the refusals answered unheld a second,
	// all addresses together, and at once. A first wave of up to 2,048
	// clients is answered at once, and 1,024 clients that honour
	// Retry-After (≈ 924 refusals a second) are never held (the
	// simulation); past about 1,000 refusals a second in all, honest
	// clients are held too (1,536 from as many addresses: 50,000 holds
	// in 50 s, 0.5 s on average; 1,024 none). At
	// ≈ 85 µs of server CPU a refusal, 1,000 a second take a twelfth of a
	// core. Raised to 2,000, logins of 256 clients retrying at once from
	// 256 addresses were 0.51-0.61 of the hash rate.
	quickRate  = 1000
	quickBurst = 2048
	// maxPacedAddrs and maxPacedAccts bound the addresses and the
	// (address, account) pairs remembered.
	maxPacedAddrs = 16_384
	maxPacedAccts = 65_536
)

// paced counts the requests the pacer held, by why (one counter with a
// reason label, not per tenant or address: its sum is every hold).
var paced = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "keyshard_auth_hash_paced_total",
	Help: "Logins and signups refused for saturated hashing that the pacer held, by reason: early (a client back before its Retry-After, held until its account's pass), no_pass (no pass of its account and no spare refusal of its address: newcomers past their address's spares, more than about 1,024 clients behind one address, or a client rotating emails; held 1 s), busy (refusals answered faster than 1,000 a second, all addresses together: clients retrying at once from many addresses; held until its turn, at most 1 s).",
}, []string{"reason"})

var (
	pacedEarly  = paced.WithLabelValues("early")
	pacedNoPass = paced.WithLabelValues("no_pass")
	pacedBusy   = paced.WithLabelValues("busy")
)

// addrPaces: the passes of an address over all its accounts, counted by
// slot, and its spare refusals.
type addrPaces struct {
	slots
	// spare: refusals the address may have unheld without a pass ready;
	// spareAt: its last refill (ms).
	spare   float64
	spareAt int64
}

// slots counts passes by slot, in ascending slot order.
type slots []passSlotCount

type passSlotCount struct {
	at int64 // ms, a multiple of passSlot
	n  int32
}

func newPacer(now func() time.Time) *pacer {
	p := &pacer{now: now, base: now(), seed: maphash.MakeSeed(), lastRefusal: -1 << 62,
		quick: rate.NewLimiter(quickRate, quickBurst)}
	p.addrs, _ = lru.New[string, *addrPaces](maxPacedAddrs) // constant sizes: no error
	p.accts, _ = lru.New[paceKey, *slots](maxPacedAccts)
	return p
}

// key names the client at ip signing in to or up for email in tenant. An
// IPv6 client is its /64, as in the login and signup limits (addrKey): one
// host may hold a whole /64, and each address of it must not have spares
// of its own.
func (p *pacer) key(ip, tenant, email string) paceKey {
	ip = addrKey(ip)
	if p == nil {
		return paceKey{ip: ip}
	}
	var h maphash.Hash
	h.SetSeed(p.seed)
	h.WriteString(tenant)
	h.WriteByte(0)
	h.WriteString(email)
	return paceKey{ip: ip, acct: h.Sum64()}
}

// ms is the pacer's time: milliseconds since its creation, by the
// monotonic clock when the clock has one (a wall clock set back does not
// move passes into the future).
func (p *pacer) ms() int64 { return p.now().Sub(p.base).Milliseconds() }

// wait is asked by a request that the hash pool refuses. It holds the
// request when no pass of its account is ready and its address has no
// spare refusal (see pacer), and reports whether it held it: the caller
// asks the pool again then.
func (p *pacer) wait(ctx context.Context, k paceKey) (held bool, err error) {
	if p == nil || k.ip == "" {
		return false, nil
	}
	p.mu.Lock()
	ms := p.ms() // under the lock: the bound in all must not see time go back
	p.lastRefusal = ms
	d := p.take(k, ms)
	p.mu.Unlock()
	if d <= 0 {
		return false, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// take applies the rules of pacer to a request of k at ms and returns how
// long to hold it. With p.mu held.
func (p *pacer) take(k paceKey, ms int64) time.Duration {
	a, ok := p.addrs.Get(k.ip)
	if !ok { // nothing refused lately: all its spares
		return p.unheld(ms)
	}
	defer p.forget(k.ip, a, ms)
	ps, _ := p.accts.Get(k)
	if ps != nil {
		if j := ps.ready(ms); j >= 0 {
			p.use(k, ps, a, j)
			return p.unheld(ms)
		}
		if len(*ps) == 0 { // all stale
			p.accts.Remove(k)
			ps = nil
		}
	}
	if a.spend(ms) {
		return p.unheld(ms)
	}
	if ps == nil {
		pacedNoPass.Inc()
		return maxPace
	}
	d := time.Duration((*ps)[0].at-ms) * time.Millisecond
	p.use(k, ps, a, 0)
	pacedEarly.Inc()
	return min(d, maxPace)
}

// unheld is the hold of a request the rules let through: none while
// refusals are answered within quickRate, all addresses together; else
// until its turn, at most maxPace (then it takes no turn). With p.mu held.
func (p *pacer) unheld(ms int64) time.Duration {
	now := p.base.Add(time.Duration(ms) * time.Millisecond)
	r := p.quick.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d <= 0 {
		return 0
	}
	pacedBusy.Inc()
	if d > maxPace {
		r.CancelAt(now)
		return maxPace
	}
	return d
}

// use takes one pass of slot j of k's passes ps, from its address's a too.
func (p *pacer) use(k paceKey, ps *slots, a *addrPaces, j int) {
	a.remove((*ps)[j].at)
	ps.use(j)
	if len(*ps) == 0 {
		p.accts.Remove(k)
	}
}

// forget drops ip's entry when it has nothing to remember.
func (p *pacer) forget(ip string, a *addrPaces, ms int64) {
	if a.idle(ms) {
		p.addrs.Remove(ip)
	}
}

// admitted takes a ready pass of k, if it has one, for a request the hash
// pool admitted: the pass its client earned was for this request, and
// left lying it would let an early retry through.
func (p *pacer) admitted(k paceKey) {
	if p == nil || k.ip == "" {
		return
	}
	ms := p.ms()
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.addrs.Peek(k.ip)
	if !ok {
		return
	}
	if ps, ok := p.accts.Peek(k); ok {
		if j := ps.ready(ms); j >= 0 {
			p.use(k, ps, a, j)
		}
	}
	p.forget(k.ip, a, ms)
}

// refused gives k a pass at the end of the Retry-After its client was
// told, when err is a hashing refusal.
func (p *pacer) refused(k paceKey, err error) {
	var oe *hash.OverloadedError
	if p == nil || k.ip == "" || !errors.As(err, &oe) {
		return
	}
	ms := p.ms()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastRefusal = ms
	a, ok := p.addrs.Get(k.ip)
	if !ok {
		a = &addrPaces{spare: freeBurst, spareAt: ms}
		p.addrs.Add(k.ip, a)
	}
	a.ready(ms) // drops its stale passes before they are counted
	if a.total() >= maxAddrPasses {
		return
	}
	ps, ok := p.accts.Get(k)
	if !ok {
		ps = new(slots)
		p.accts.Add(k, ps)
	}
	ps.ready(ms) // the account's stale passes, left when its address was forgotten
	if ps.total() >= maxAcctPasses {
		return
	}
	// No later than maxPace: a hold is never longer, and a client that
	// caps its waits there is not early.
	at := ms + min(oe.RetryAfter, maxPace).Milliseconds()
	ps.add(at)
	a.add(at)
}

// served gives k's address a spare refusal for a request that was hashed
// while the pool refuses requests (within passGrace of a refusal): its
// client's next request, likely for another account, has no pass.
func (p *pacer) served(k paceKey) {
	if p == nil || k.ip == "" {
		return
	}
	ms := p.ms()
	p.mu.Lock()
	defer p.mu.Unlock()
	if ms-p.lastRefusal > passGrace.Milliseconds() {
		return
	}
	if a, ok := p.addrs.Peek(k.ip); ok {
		a.refill(ms)
		a.spare = min(a.spare+1, freeBurst)
	}
}

// ready drops the stale passes and returns the index of the latest ready
// slot (the earlier ones are the likelier to have been given up), or -1.
func (s *slots) ready(ms int64) int {
	stale := ms - passGrace.Milliseconds()
	i := 0
	for i < len(*s) && (*s)[i].at < stale {
		i++
	}
	*s = (*s)[i:]
	j := -1
	for k := range *s {
		if (*s)[k].at > ms {
			break
		}
		j = k
	}
	return j
}

// use takes one pass of slot j.
func (s *slots) use(j int) {
	(*s)[j].n--
	if (*s)[j].n == 0 {
		*s = append((*s)[:j], (*s)[j+1:]...)
	}
}

// remove takes one pass of the slot at at, if there is one.
func (s *slots) remove(at int64) {
	for j := range *s {
		if (*s)[j].at == at {
			s.use(j)
			return
		}
	}
}

// total counts the passes.
func (s slots) total() int {
	n := 0
	for _, sl := range s {
		n += int(sl.n)
	}
	return n
}

// add gives a pass at ms. The slots stay few without a cap of their own:
// an account's passes are at most maxAcctPasses, and an address's span at
// most maxPace plus passGrace (refused drops the stale ones before it
// adds), about 120 slots.
func (s *slots) add(ms int64) {
	slot := passSlot.Milliseconds()
	at := ms / slot * slot
	k := len(*s)
	for k > 0 && (*s)[k-1].at > at {
		k--
	}
	if k > 0 && (*s)[k-1].at == at {
		(*s)[k-1].n++
		return
	}
	*s = append(*s, passSlotCount{})
	copy((*s)[k+1:], (*s)[k:])
	(*s)[k] = passSlotCount{at: at, n: 1}
}

// refill adds the spares due since the last refill, up to what keeps
// passes and spares together under freeBurst. Stale passes are dropped
// first: counted, they would take the room of the spares due while the
// address was quiet.
func (a *addrPaces) refill(ms int64) {
	a.ready(ms)
	if room := float64(freeBurst - a.total()); a.spare < room {
		a.spare = min(room, a.spare+float64(ms-a.spareAt)/1000*freeRate)
	}
	a.spareAt = ms
}

// spend takes one spare refusal if there is one.
func (a *addrPaces) spend(ms int64) bool {
	a.refill(ms)
	if a.spare < 1 {
		return false
	}
	a.spare--
	return true
}

// idle reports an address with nothing to remember: no pass, all spares.
func (a *addrPaces) idle(ms int64) bool {
	a.refill(ms) // drops the stale passes first
	return len(a.slots) == 0 && a.spare >= freeBurst
}
