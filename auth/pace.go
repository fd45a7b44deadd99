package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/keyshard/keyshard/auth/hash"
)

// pacer slows clients that ignore Retry-After. A login or signup refused
// because password hashing is saturated tells its client when to come
// back; a client that comes back sooner waits out the rest (at most
// maxPace) before it is answered. Clients that retry at once then cost one
// request per Retry-After instead of thousands a second, whose refusals
// would take the CPU the hash workers need (the login collapse of issue
// 18). A client that waits as told is never slowed.
//
// Clients are known only by address, and many share one (a NAT, a proxy,
// a load generator), so the pacer keeps per address the moments at which
// its refused clients were told to come back, and counts each one as a
// pass for one request: a request that finds a pass whose time has come
// takes it and is not held; one that finds only passes still to come is
// held until the earliest and takes it; an address with no pass left was
// told nothing and is not held. An address may have a few refusals without
// a pass before it is held (freeBurst, then freeRate): clients that come for
// the first time together have none, and a held request takes a pass some
// client that waits as told will look for. A request whose hash ran earns a pass at
// once (its client's next request), which an admitted request of the
// address takes, as a refused one would. Well-behaved clients behind one
// address thus find the passes their refusals left and are answered at once, while
// clients that retry early find none ready and wait. Passes not taken within
// passGrace of their time are dropped (the client gave up). In memory, per
// process.
//
// Only requests that the hash pool would refuse ask the pacer: a request it
// admits is never held.
type pacer struct {
	now   func() time.Time
	mu    sync.Mutex
	addrs *lru.Cache[string, *passes]
}

const (
	// maxPace bounds the wait of one request.
	maxPace = time.Second
	// passGrace: a pass not taken this long after its time is dropped.
	passGrace = 5 * time.Second
	// passSlot groups the passes of an address by their time, rounded
	// down to it (a pass ready at most this much early).
	passSlot = 50 * time.Millisecond
	// maxSlots bounds an address's memory; past it the oldest slot goes.
	maxSlots = 256
	// freeBurst and freeRate: refusals an address may have without a pass
	// ready before its requests are held, a bucket (see pacer). Clients
	// that arrive together for the first time have no pass yet; held, each
	// would take the pass of a client that waits as told, which would then
	// be held in turn.
	freeBurst = 64
	freeRate  = 8 // per second
	// maxPacedAddrs bounds the addresses remembered.
	maxPacedAddrs = 16_384
)

var paced = promauto.NewCounter(prometheus.CounterOpts{
	Name: "keyshard_auth_hash_paced_total",
	Help: "Logins and signups refused for saturated hashing that were held because their address had no pass ready (a client back before its Retry-After).",
})

// passes of one address: counts by slot, in ascending slot order.
type passes struct {
	slots []passSlotCount
	// spare: refusals the address may have unheld without a pass ready, a
	// bucket of freeBurst refilled at freeRate; spareAt: its last refill
	// (unix milliseconds).
	spare   float64
	spareAt int64
}

// spend takes one spare refusal if the bucket has one.
func (ps *passes) spend(now time.Time) bool {
	ms := now.UnixMilli()
	ps.spare = min(freeBurst, ps.spare+float64(ms-ps.spareAt)/1000*freeRate)
	ps.spareAt = ms
	if ps.spare < 1 {
		return false
	}
	ps.spare--
	return true
}

type passSlotCount struct {
	at int64 // unix milliseconds, a multiple of passSlot
	n  int32
}

func newPacer(now func() time.Time) *pacer {
	c, _ := lru.New[string, *passes](maxPacedAddrs) // a constant size: no error
	return &pacer{now: now, addrs: c}
}

// wait is asked by a request that the hash pool refuses. It holds the
// request when its address has passes still to come and none ready, until
// the earliest (at most maxPace), and reports whether it held it: the
// caller asks the pool again then.
func (p *pacer) wait(ctx context.Context, ip string) (held bool, err error) {
	if p == nil || ip == "" {
		return false, nil
	}
	now := p.now()
	p.mu.Lock()
	ps, ok := p.addrs.Get(ip)
	var d time.Duration
	if ok {
		d = ps.take(now)
		if len(ps.slots) == 0 {
			p.addrs.Remove(ip)
		}
	}
	p.mu.Unlock()
	if d <= 0 {
		return false, nil
	}
	paced.Inc()
	t := time.NewTimer(min(d, maxPace))
	defer t.Stop()
	select {
	case <-t.C:
		return true, nil
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

// admitted takes a ready pass of ip, if it has one, for a request the
// hash pool admitted: the pass its client earned was for this request, and
// left lying it would let an early retry of another client through.
func (p *pacer) admitted(ip string) {
	if p == nil || ip == "" {
		return
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if ps, ok := p.addrs.Peek(ip); ok {
		ps.takeReady(now)
		if len(ps.slots) == 0 {
			p.addrs.Remove(ip)
		}
	}
}

// takeReady drops the stale passes and takes a ready one, if any.
func (ps *passes) takeReady(now time.Time) {
	if j := ps.ready(now); j >= 0 {
		ps.use(j)
	}
}

// ready drops the stale passes and returns the index of the latest ready
// slot (the earlier ones are the likelier to have been given up), or -1.
func (ps *passes) ready(now time.Time) int {
	ms := now.UnixMilli()
	stale := ms - passGrace.Milliseconds()
	i := 0
	for i < len(ps.slots) && ps.slots[i].at < stale {
		i++
	}
	ps.slots = ps.slots[i:]
	j := -1
	for k := range ps.slots {
		if ps.slots[k].at > ms {
			break
		}
		j = k
	}
	return j
}

// use takes one pass of slot j.
func (ps *passes) use(j int) {
	ps.slots[j].n--
	if ps.slots[j].n == 0 {
		ps.slots = append(ps.slots[:j], ps.slots[j+1:]...)
	}
}

// take drops the stale passes and takes one: a ready one (0), else the
// earliest still to come (the wait until its time); 0 when none is left.
func (ps *passes) take(now time.Time) time.Duration {
	j := ps.ready(now)
	if j >= 0 {
		ps.use(j)
		return 0
	}
	if len(ps.slots) == 0 || ps.spend(now) {
		return 0
	}
	d := time.Duration(ps.slots[0].at-now.UnixMilli()) * time.Millisecond
	ps.use(0)
	return d
}

// add gives a pass at t.
func (ps *passes) add(t time.Time) {
	slot := passSlot.Milliseconds()
	at := t.UnixMilli() / slot * slot
	k := len(ps.slots)
	for k > 0 && ps.slots[k-1].at > at {
		k--
	}
	if k > 0 && ps.slots[k-1].at == at {
		ps.slots[k-1].n++
		return
	}
	ps.slots = append(ps.slots, passSlotCount{})
	copy(ps.slots[k+1:], ps.slots[k:])
	ps.slots[k] = passSlotCount{at: at, n: 1}
	if len(ps.slots) > maxSlots {
		ps.slots = ps.slots[1:]
	}
}

// refused gives a pass at the end of the Retry-After a client was told,
// when err is a hashing refusal.
func (p *pacer) refused(ip string, err error) {
	var oe *hash.OverloadedError
	if p == nil || ip == "" || !errors.As(err, &oe) {
		return
	}
	// No later than maxPace: a hold is never longer, and a client that
	// caps its waits there is not early.
	now := p.now()
	p.passAt(ip, now, now.Add(min(oe.RetryAfter, maxPace)))
}

// passAt gives ip a pass at t.
func (p *pacer) passAt(ip string, now, t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps, ok := p.addrs.Get(ip)
	if !ok {
		ps = &passes{spare: freeBurst, spareAt: now.UnixMilli()}
		p.addrs.Add(ip, ps)
	}
	ps.add(t)
}

// served gives a ready pass (its client's next request) to the address of
// a request that was hashed. Also to an address with no pass: another of
// its clients may be refused before this one's next request, which must
// then not wait for that other's pass.
func (p *pacer) served(ip string) {
	if p == nil || ip == "" {
		return
	}
	now := p.now()
	p.passAt(ip, now, now)
}
