package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Load says how requests are offered.
type Load struct {
	// Rate > 0 is an open loop: requests are due at fixed intervals of
	// 1/Rate whatever the server's latency, each sent on its own goroutine,
	// and timed from when it was due. Rate 0 is a closed loop.
	Rate float64
	// Concurrency is the closed loop's number of clients, each sending its
	// next request when the previous one is answered; in an open loop, the
	// most requests in flight (past it a due request is counted as
	// "dropped"). Defaults: 16 closed, 2048 open.
	Concurrency int
	// Duration bounds the run (default 10 s); Requests, when > 0, bounds
	// the number of requests too: the run ends at whichever comes first.
	Duration time.Duration
	Requests int64
	// RetryAfter makes a closed-loop client that got 429 or 503 with a
	// Retry-After header wait that long (at most MaxRetryWait) before its
	// next request, as a well-behaved client does; without it the client
	// sends its next request at once.
	RetryAfter bool
	// ClientAddresses > 0 gives each closed-loop client (in an open loop,
	// each request in turn) one of that many addresses, sent as
	// X-Forwarded-For (ClientAddr): clients behind a proxy, told apart by a
	// server run with --rate-limit-header X-Forwarded-For. 0: none.
	ClientAddresses int
}

// MaxClientAddresses bounds Load.ClientAddresses: the addresses are those
// of 198.18.0.0/15, the range set aside for benchmarks (RFC 2544).
const MaxClientAddresses = 1 << 17

// ClientAddr is the i-th address of Load.ClientAddresses.
func ClientAddr(i int) string {
	i %= MaxClientAddresses
	return fmt.Sprintf("198.%d.%d.%d", 18+i>>16, i>>8&0xff, i&0xff)
}

// MaxRetryWait caps the wait of Load.RetryAfter.
const MaxRetryWait = time.Second

func (l Load) withDefaults() Load {
	if l.Duration <= 0 {
		l.Duration = 10 * time.Second
	}
	if l.Concurrency <= 0 {
		l.Concurrency = 16
		if l.Rate > 0 {
			l.Concurrency = 2048
		}
	}
	return l
}

// call is one request a generator decided to make.
type call struct {
	op     Op
	tenant int
	client int // the client sending it (Load.ClientAddresses)
}

// picker draws the next call; each generator goroutine has its own.
type picker func() call

// newPickerFunc makes a picker around its own random source.
type newPickerFunc func(rng *rand.Rand) picker

// execFunc sends one call timed from due and returns the server's
// Retry-After delay (0 when none).
type execFunc func(ctx context.Context, c call, due time.Time) time.Duration

// run offers load and executes each call with exec (drop receives the
// calls an open loop could not send), returning the number of calls due
// and the time from the start until the last answer.
func run(ctx context.Context, l Load, newPicker newPickerFunc, exec execFunc, drop func(call)) (int64, time.Duration) {
	l = l.withDefaults()
	if l.Rate > 0 {
		return runOpen(ctx, l, newPicker(newRand()), exec, drop)
	}
	return runClosed(ctx, l, newPicker, exec)
}

func newRand() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }

func runOpen(ctx context.Context, l Load, next picker, exec execFunc, drop func(call)) (int64, time.Duration) {
	start := time.Now()
	deadline := start.Add(l.Duration)
	slots := make(chan struct{}, l.Concurrency)
	var wg sync.WaitGroup
	timer := time.NewTimer(0)
	<-timer.C
	var i int64
loop:
	for ; l.Requests <= 0 || i < l.Requests; i++ {
		due := start.Add(time.Duration(float64(i) * float64(time.Second) / l.Rate))
		if !due.Before(deadline) {
			break
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				timer.Stop()
				break loop
			case <-timer.C:
			}
		}
		c := next()
		c.client = int(i)
		select {
		case slots <- struct{}{}:
			wg.Go(func() {
				defer func() { <-slots }()
				exec(ctx, c, due)
			})
		default:
			drop(c)
		}
	}
	wg.Wait()
	return i, time.Since(start)
}

func runClosed(ctx context.Context, l Load, newPicker newPickerFunc, exec execFunc) (int64, time.Duration) {
	start := time.Now()
	deadline := start.Add(l.Duration)
	var n atomic.Int64
	var wg sync.WaitGroup
	for client := range l.Concurrency {
		next := newPicker(newRand())
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if n.Add(1) > l.Requests && l.Requests > 0 {
					return
				}
				c := next()
				c.client = client
				wait := exec(ctx, c, time.Now())
				if l.RetryAfter && wait > 0 {
					sleepCtx(ctx, min(wait, MaxRetryWait, time.Until(deadline)))
				}
			}
		})
	}
	wg.Wait()
	sent := n.Load()
	if l.Requests > 0 {
		sent = min(sent, l.Requests)
	}
	return sent, time.Since(start)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// executor sends calls to the target and records them.
type executor struct {
	t   *Target
	f   *Fixture
	rec *recorder
	// spread is the number of tenants (the first ones) the workload uses.
	spread int
	// updates numbers the metadata written by OpUpdate.
	updates atomic.Int64
	// stop ends the run early (the authorization codes ran out).
	stop func()
	// addrs: Load.ClientAddresses.
	addrs int
}

type credentials struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// exec sends c, timing it from due.
func (e *executor) exec(runCtx context.Context, c call, due time.Time) time.Duration {
	// The OAuth flows' requests (net/http) do not derive from the run's
	// context: thousands of requests registering as children of one
	// cancellable context contend on its lock (seen in the mutex profile).
	// The others (fasthttp) take no context. A timeout bounds each request;
	// the run stops sending when runCtx ends.
	ctx := context.WithoutCancel(runCtx)
	s := e.rec.series(c.op)
	base := "/t/" + e.f.Slugs[c.tenant]
	var status int
	var retry time.Duration
	var err error
	from := e.from(c)
	switch c.op {
	case OpSignup:
		body, _ := json.Marshal(credentials{e.f.newEmail(), e.f.Password})
		status, retry, err = e.t.call("POST", base+"/signup", "", from, body, nil)
	case OpLogin:
		body, _ := json.Marshal(credentials{e.f.email(c.tenant, rand.IntN(e.f.users(c.tenant))), e.f.Password})
		status, retry, err = e.t.call("POST", base+"/token?grant_type=password", "", from, body, nil)
	case OpRefresh:
		ss := e.f.acquire(c.tenant, e.spread)
		if ss == nil {
			s.skip(StatusNoSession)
			return 0
		}
		// A session may have moved to another tenant's chain when the
		// drawn tenant had none idle.
		base = "/t/" + e.f.Slugs[ss.tenant]
		_, rt := ss.tokens()
		body, _ := json.Marshal(map[string]string{"refresh_token": rt})
		var sb sessionBody
		status, retry, err = e.t.call("POST", base+"/token?grant_type=refresh_token", "", from, body, &sb)
		if err == nil && status == http.StatusOK {
			ss.set(sb)
		}
		e.f.release(ss)
	case OpUser:
		at, _ := e.f.any(c.tenant).tokens()
		status, retry, err = e.t.call("GET", base+"/user", at, from, nil, nil)
	case OpUpdate:
		at, _ := e.f.any(c.tenant).tokens()
		body, _ := json.Marshal(map[string]any{"data": map[string]any{"bench_seq": e.updates.Add(1)}})
		status, retry, err = e.t.call("PUT", base+"/user", at, from, body, nil)
	case OpClientCredentials, OpAuthorizationCode:
		var ok bool
		if status, retry, err, ok = e.execOAuth(ctx, c); !ok {
			if e.stop != nil {
				e.stop()
			}
			s.skip(StatusNoSession)
			return 0
		}
	}
	if runCtx.Err() != nil && err != nil {
		// The run was cancelled; the request did not fail on its own.
		s.skip(StatusTransportError)
		return 0
	}
	s.add(status, err, time.Since(due))
	return retry
}

// from is the address c's client sends as X-Forwarded-For, or "" (none).
func (e *executor) from(c call) string {
	if e.addrs <= 0 {
		return ""
	}
	return ClientAddr(c.client % e.addrs)
}

// drop records a call an open loop could not send.
func (e *executor) drop(c call) { e.rec.series(c.op).skip(StatusDropped) }
