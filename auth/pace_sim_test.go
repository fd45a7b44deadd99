package auth

import (
	"container/heap"
	"testing"
	"time"

	"github.com/keyshard/keyshard/auth/hash"
)

// A discrete-time simulation of the pacer with n clients behind one
// address that honour Retry-After, against a hash pool admitting up to
// queue requests and hashing rate a second: the way admitHash and the
// login flow call the pacer (admitted, wait, refused, served), with the
// pool's Retry-After of a second and clients that wait the header's whole
// seconds. Time is simulated: no sleeping, same answer every run.

type simEvent struct {
	at     int64 // ms
	client int
	kind   simKind
}

type simKind int

const (
	simSend     simKind = iota // the client sends a login
	simHashed                  // its hash finished: served, next login at once
	simHeldOver                // a held request is asked about again
)

type simQueue []simEvent

func (q simQueue) Len() int { return len(q) }
func (q simQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].client < q[j].client
}
func (q simQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *simQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// simulatePacer returns the refusals and the holds after the first warm
// ms of dur, and the mean hold.
func simulatePacer(n int, rate float64, queue int, dur, warm int64) (refusals, holds int, meanHold time.Duration) {
	var now int64
	base := time.Unix(3_000_000, 0)
	p := newPacer(func() time.Time { return base.Add(time.Duration(now) * time.Millisecond) })
	const ip = "198.51.100.1"
	q := &simQueue{}
	for c := range n {
		heap.Push(q, simEvent{at: int64(c % 10), client: c})
	}
	inQueue, lastDone, per := 0, int64(0), int64(1000/rate)
	var heldMs int64
	for q.Len() > 0 {
		e := heap.Pop(q).(simEvent)
		if e.at > dur {
			break
		}
		now = e.at
		if e.kind == simHashed {
			inQueue--
			p.served(ip)
			heap.Push(q, simEvent{at: now + 1, client: e.client})
			continue
		}
		if inQueue < queue { // admitted
			inQueue++
			lastDone = max(now, lastDone) + per
			if e.kind == simSend {
				p.admitted(ip)
			}
			heap.Push(q, simEvent{at: lastDone, client: e.client, kind: simHashed})
			continue
		}
		if e.kind == simSend { // refused: the pacer may hold it (wait, without sleeping)
			p.mu.Lock()
			p.lastRefusal = p.ms()
			var d time.Duration
			if ps, ok := p.addrs.Get(ip); ok {
				d = ps.take(p.ms())
			}
			p.mu.Unlock()
			if d > 0 {
				if now > warm {
					holds++
					heldMs += d.Milliseconds()
				}
				heap.Push(q, simEvent{at: now + min(d, maxPace).Milliseconds(), client: e.client, kind: simHeldOver})
				continue
			}
		}
		if now > warm {
			refusals++
		}
		p.refused(ip, &hash.OverloadedError{RetryAfter: time.Second})
		heap.Push(q, simEvent{at: now + 1000 + 1, client: e.client}) // Retry-After: 1
	}
	if holds > 0 {
		meanHold = time.Duration(heldMs/int64(holds)) * time.Millisecond
	}
	return refusals, holds, meanHold
}

// TestPacer_HonestClientsBehindOneAddressSim: up to 128 clients behind one
// address that wait as told are never held, though the pool refuses many
// of their logins.
//
// Known limit, not fixed (docs/benchmarks.md, twelfth part): from about 256
// such clients a chain of holds starts and never ends: a held request takes
// the earliest pass to come, which another client's refusal left; that
// client, back on time, is held in turn and takes the next; spare refusals,
// which would end it, refill only while the address holds fewer than
// freeBurst passes and spares together. Giving a held-then-refused
// request's pass back ends the chain but lets one early retrier's refusals
// grow by about one a second every second (TestPacer_EarlyRetrierBounded).
// The test logs the figures of 256 and 512 clients.
func TestPacer_HonestClientsBehindOneAddressSim(t *testing.T) {
	for _, n := range []int{64, 128, 256, 512} {
		r, h, mean := simulatePacer(n, 100, 100, 60_000, 10_000)
		t.Logf("%d clients: %d refusals, %d held, mean hold %v", n, r, h, mean)
		if n <= 128 && h > 0 {
			t.Errorf("%d clients that wait as told: %d of their requests held", n, h)
		}
		if n == 128 && r == 0 {
			t.Errorf("128 clients: no refusal: the simulated pool did not saturate")
		}
	}
}
