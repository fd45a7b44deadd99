package hash

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// Config configures a Pool. Zero fields take the defaults.
type Config struct {
	Params Params
	// Workers hashing at once; default runtime.NumCPU().
	Workers int
	// Budget is the longest expected time a request may spend waiting for
	// and running its hash; past it the request is refused at once.
	// Default 1 s.
	Budget time.Duration
	// MaxQueue bounds the waiting room whatever the budget; default 1024.
	MaxQueue int
	// Background computes in a worker process at the lowest CPU priority
	// (SCHED_IDLE on Linux; see worker.go), so that a login storm takes
	// only the CPU that other requests leave idle instead of the cores they
	// need, and its allocations never pause this process. When other work
	// leaves it no CPU at all, queued hashes are computed in this process
	// instead, one at a time (see Pool.rescue).
	Background bool
}

// DefaultBudget is the default latency budget of one hash request.
const DefaultBudget = time.Second

// OverloadedError is returned when a request is refused admission. It wraps
// engine.ErrOverloaded.
type OverloadedError struct {
	// RetryAfter is when the queue is expected to have room again.
	RetryAfter time.Duration
}

func (e *OverloadedError) Error() string {
	return fmt.Sprintf("password hashing is saturated, retry in %s", e.RetryAfter.Round(time.Millisecond))
}

func (e *OverloadedError) Unwrap() error { return engine.ErrOverloaded }

// Pool hashes and verifies passwords on its own worker goroutines, never on
// the caller's. Safe for concurrent use; Close it when done.
type Pool struct {
	params   Params
	workers  int
	budget   time.Duration
	maxQueue int

	jobs chan *job
	stop chan struct{}
	wg   sync.WaitGroup

	waiting atomic.Int64 // admitted and not yet picked up by a worker
	busy    atomic.Int64 // workers hashing now
	ewma    atomic.Int64 // smoothed nanoseconds per hash

	dummy string // a hash of a random password under params

	closeOnce sync.Once
	refused   atomic.Int64

	kdf kdfFunc // localKDF, or remoteKDF for a background pool

	// inflight[i]: when worker i started its hash (unix ns), 0 when idle.
	inflight []atomic.Int64
	// rescuing: one hash at a time computed in this process for a
	// background pool whose worker process is starved (Pool.rescue).
	background bool
	rescuing   atomic.Bool
	// starving: a worker's hash took stallAfter or more; until a probe
	// comes back quickly, the workers take no job (it would wait in the
	// starved process) and the rescue computes them.
	starving atomic.Bool
	baseHash time.Duration // the first hash's time, measured at start

	// A background pool's worker process, replaced when it dies.
	procMu      sync.Mutex
	proc        *worker
	procStarted time.Time // when proc was started
	procErr     error     // the last failure to start one
	procErrTime time.Time // when
	procClosed  bool
}

type job struct {
	ctx      context.Context
	fn       func(kdf kdfFunc)
	reply    chan struct{}
	admitted time.Time
	// state: jobQueued until a worker or a rescue takes it (jobTaken) or
	// its caller leaves first (jobDropped); whoever moves it from
	// jobQueued takes it off the queue's count.
	state atomic.Int32
}

const (
	jobQueued int32 = iota
	jobTaken
	jobDropped
)

// ErrClosed wraps engine.ErrClosed for a request made after Close.
var ErrClosed = fmt.Errorf("hash pool: %w", engine.ErrClosed)

// NewPool validates cfg, starts the workers and measures one hash to seed
// the admission estimate (that hash becomes the dummy hash verified for
// unknown users).
func NewPool(cfg Config) (*Pool, error) {
	cfg.Params = cfg.Params.withDefaults()
	if err := cfg.Params.Validate(); err != nil {
		return nil, err
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.Budget <= 0 {
		cfg.Budget = DefaultBudget
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 1024
	}
	p := &Pool{
		params:   cfg.Params,
		workers:  cfg.Workers,
		budget:   cfg.Budget,
		maxQueue: cfg.MaxQueue,
		jobs:     make(chan *job, cfg.MaxQueue),
		stop:     make(chan struct{}),
		kdf:      localKDF,
		inflight: make([]atomic.Int64, cfg.Workers),
	}
	if cfg.Background {
		w, err := startWorker(p.workers, p.params.MemoryKiB)
		if err != nil {
			return nil, err
		}
		p.proc, p.procStarted, p.kdf = w, time.Now(), p.remoteKDF
		p.background = true
	}
	seedOn := func(kdf kdfFunc) func() (string, error) {
		return func() (string, error) { return hashArgon2id(kdf, randomPassword(), p.params) }
	}
	wait := time.Duration(0) // an in-process hash gets its share of the CPU
	if p.background {
		wait = seedWait
	}
	dummy, base, _, err := seedWithin(seedOn(p.kdf), seedOn(localKDF), wait)
	if err != nil {
		p.closeWorker()
		return nil, err
	}
	p.dummy, p.baseHash = dummy, base
	p.ewma.Store(int64(p.baseHash))
	workersGauge.Add(float64(p.workers))
	p.wg.Add(p.workers)
	for i := range p.workers {
		go p.work(i)
	}
	return p, nil
}

// seedWait bounds the wait for a new pool's first hash in its worker
// process (a variable for the tests).
var seedWait = workerStartTimeout

// seedWithin makes a new pool's first hash, which measures one hash (the
// admission estimate's start) and becomes the dummy hash verified for
// unknown users: with remote, or, when remote has not answered within
// wait (0: no bound), with local instead. A worker process started while
// normal threads keep every core busy says hello (at normal priority) and
// then may get no CPU for its first hash: a pool seeded with that hash's
// time would refuse nearly every request until about 50 real ones brought
// the average down, and the start would wait up to the worker's call
// timeout. remote is left to finish on its own. It returns the hash, the
// time of the one used, and whether it was local's.
func seedWithin(remote, local func() (string, error), wait time.Duration) (string, time.Duration, bool, error) {
	type result struct {
		enc string
		d   time.Duration
		err error
	}
	done := make(chan result, 1) // remote never blocks on it
	start := time.Now()
	go func() {
		enc, err := remote()
		done <- result{enc, time.Since(start), err}
	}()
	var bound <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		bound = t.C
	}
	select {
	case r := <-done:
		return r.enc, r.d, false, r.err
	case <-bound:
		start := time.Now()
		enc, err := local()
		return enc, time.Since(start), true, err
	}
}

// Params returns the parameters new hashes use.
func (p *Pool) Params() Params { return p.params }

// Close stops the workers after the jobs in hand; queued jobs are answered
// with ErrClosed. Safe to call twice.
func (p *Pool) Close() {
	p.closeOnce.Do(func() {
		close(p.stop)
		// The jobs in hand finish first; a worker process that does not
		// answer them within the grace is killed, which fails them.
		idle := make(chan struct{})
		go func() { p.wg.Wait(); close(idle) }()
		select {
		case <-idle:
		case <-time.After(workerCloseGrace):
			p.procMu.Lock()
			p.procClosed = true // no retry on a new worker
			if p.proc != nil {
				p.proc.kill(errors.New("closed"))
			}
			p.procMu.Unlock()
			<-idle
		}
		workersGauge.Sub(float64(p.workers))
		p.closeWorker()
	})
}

// closeWorker stops a background pool's worker process after the
// computations in hand; later computations fail with ErrClosed.
func (p *Pool) closeWorker() {
	p.procMu.Lock()
	w := p.proc
	p.proc, p.procClosed = nil, true
	p.procMu.Unlock()
	if w != nil {
		w.close(workerCloseGrace)
	}
}

// WorkerPID returns the process id of a background pool's running worker
// process, or 0.
func (p *Pool) WorkerPID() int {
	p.procMu.Lock()
	defer p.procMu.Unlock()
	if p.proc == nil || p.proc.failed() != nil {
		return 0
	}
	return p.proc.pid
}

// remoteKDF computes r in the worker process, starting a new one when the
// last one died. A computation in hand when the worker died is sent once
// more, to a new worker (it is safe to repeat): a worker killed by the OOM
// killer or an operator costs its logins time, not an error. The
// computation whose own timeout killed the worker is not repeated, nor one
// whose caller left (r.ctx ended: a starved worker's computations outlive
// their callers, who are answered 429 after maxWait), nor a second failure
// (r may be what kills workers).
func (p *Pool) remoteKDF(r kdfRequest) (kdfResult, error) {
	w, err := p.liveWorker()
	if err != nil {
		return kdfResult{}, err
	}
	res, err := w.call(r)
	if err == nil || errors.Is(err, errOwnTimeout) || !errors.Is(err, ErrWorkerFailed) {
		return res, err
	}
	if r.ctx != nil && r.ctx.Err() != nil {
		return res, err // its caller left: no new worker's time for it
	}
	if w, err = p.liveWorker(); err != nil {
		return kdfResult{}, err
	}
	return w.call(r)
}

// liveWorker returns the running worker process, or starts one: at once
// when the last one died after running workerRespawnDelay or more, else not
// before that delay has passed since the last start or failure to start.
func (p *Pool) liveWorker() (*worker, error) {
	p.procMu.Lock()
	defer p.procMu.Unlock()
	switch {
	case p.procClosed:
		return nil, ErrClosed
	case p.proc != nil && p.proc.failed() == nil:
		return p.proc, nil
	case p.proc != nil && time.Since(p.procStarted) < workerRespawnDelay:
		return nil, p.proc.failed() // died young: do not fork per request
	case p.procErr != nil && time.Since(p.procErrTime) < workerRespawnDelay:
		return nil, p.procErr
	}
	w, err := startWorker(p.workers, p.params.MemoryKiB)
	if err != nil {
		p.proc, p.procErr, p.procErrTime = nil, err, time.Now()
		return nil, err
	}
	p.proc, p.procStarted, p.procErr = w, time.Now(), nil
	return w, nil
}

func (p *Pool) work(i int) {
	defer p.wg.Done()
	for {
		if p.starving.Load() && !p.probe(i) {
			continue
		}
		select {
		case <-p.stop:
			return
		case j := <-p.jobs:
			if !p.claim(j, jobTaken) {
				continue // rescued, or its caller left: already off the count
			}
			if j.ctx.Err() != nil { // the caller left: do not burn a core
				close(j.reply)
				continue
			}
			p.busy.Add(1)
			busyGauge.Inc()
			start := time.Now()
			p.inflight[i].Store(start.UnixNano())
			failed := false
			j.fn(func(r kdfRequest) (kdfResult, error) {
				r.ctx = j.ctx
				res, err := p.kdf(r)
				failed = failed || err != nil
				return res, err
			})
			d := time.Since(start)
			p.inflight[i].Store(0)
			busyGauge.Dec()
			p.busy.Add(-1)
			switch {
			case failed && d < p.stallAfter():
				// Not a hash's time: a worker process that died, one not
				// restarted yet, or a closed pool answers at once. (One
				// that failed after stallAfter was starved or hung: below.)
			case !p.background || d < p.stallAfter():
				p.observe(d)
			default:
				// The worker process was starved: its time says nothing of
				// what the next hash costs, and the next job sent there
				// would wait as long. Probe it first.
				p.starving.Store(true)
			}
			close(j.reply)
		}
	}
}

// probeRequest is a computation of next to no CPU: its round trip through
// the worker process measures how long that process waits for a CPU.
var probeRequest = kdfRequest{Password: []byte("probe"), Salt: make([]byte, 16), Time: 1, MemoryKiB: 8, Threads: 1, KeyLen: 16}

// probe sends worker i's probe to a starved worker process, and reports
// whether the process is starved no more (the probe came back within a
// quarter of stallAfter), clearing the mark. While it waits, worker i
// counts as on a hash, so that the rescue goes on.
func (p *Pool) probe(i int) bool {
	select {
	case <-p.stop:
		return true // the loop sees stop
	default:
	}
	start := time.Now()
	p.inflight[i].Store(start.UnixNano())
	_, err := p.kdf(probeRequest)
	p.inflight[i].Store(0)
	if err != nil || time.Since(start) < p.stallAfter()/4 {
		// A failed worker is the call path's to handle (a new process):
		// not a starved one.
		p.starving.Store(false)
		return true
	}
	return false
}

// stalledFor returns how long every worker has been on its current hash
// when all of them are hashing (the shortest of their times), else 0: no
// slot can free sooner. A worker process left no CPU at all (SCHED_IDLE,
// while normal threads keep every core busy) shows here long before its
// hashes end and the average time hears of it.
func (p *Pool) stalledFor(now time.Time) time.Duration {
	shortest := time.Duration(math.MaxInt64)
	for i := range p.inflight {
		at := p.inflight[i].Load()
		if at == 0 {
			return 0
		}
		shortest = min(shortest, now.Sub(time.Unix(0, at)))
	}
	return max(shortest, 0)
}

// stallAfter: every worker this long on its hash means the worker process
// is starved, not busy: half the budget, or four times the first hash's
// time if that is longer (slow parameters), at most the budget, and never
// under minStallAfter (a budget below one hash only sheds load).
func (p *Pool) stallAfter() time.Duration {
	return max(min(max(p.budget/2, 4*p.baseHash), p.budget), minStallAfter)
}

// maxWait bounds the wait of an admitted request: past it, it is refused
// (429 with Retry-After) rather than left waiting for a worker that gets
// no CPU. Three budgets, and at least a second.
func (p *Pool) maxWait() time.Duration { return max(3*p.budget, minMaxWait) }

const (
	minStallAfter = 100 * time.Millisecond
	minMaxWait    = time.Second
)

// observe folds one measured hash time into the moving average (α = 1/8).
func (p *Pool) observe(d time.Duration) {
	hashSeconds.Observe(d.Seconds())
	for {
		old := p.ewma.Load()
		nv := old + (int64(d)-old)/8
		if p.ewma.CompareAndSwap(old, nv) {
			return
		}
	}
}

// HashTime returns the measured average time of one hash.
func (p *Pool) HashTime() time.Duration { return time.Duration(p.ewma.Load()) }

// Stats is a snapshot of the pool.
type Stats struct {
	Workers, Busy, Waiting int
	Refused                int64
	HashTime               time.Duration
}

// Stats returns a snapshot of the pool's state.
func (p *Pool) Stats() Stats {
	return Stats{Workers: p.workers, Busy: int(p.busy.Load()), Waiting: int(p.waiting.Load()),
		Refused: p.refused.Load(), HashTime: p.HashTime()}
}

// run admits fn and waits for a worker to run it. A request is admitted
// when a worker is idle, or when the time to drain the jobs ahead of it plus
// its own hash fits the budget: (ahead/workers + 1) × average hash time.
// Otherwise it fails at once with *OverloadedError. fn gets the function
// that computes: the worker process's, or this process's for a rescue.
//
// An admitted request waits at most maxWait; a background pool's queued
// request whose workers are all stalled is computed here (rescue).
func (p *Pool) run(ctx context.Context, fn func(kdf kdfFunc)) error {
	select {
	case <-p.stop:
		return ErrClosed
	default:
	}
	ahead := p.waiting.Add(1) - 1
	if err := p.refuse(ahead); err != nil {
		p.waiting.Add(-1)
		return err
	}
	j := &job{ctx: ctx, fn: fn, reply: make(chan struct{}), admitted: time.Now()}
	select {
	case p.jobs <- j: // a full channel (dropped jobs stay in it until taken) refuses
		queueGauge.Inc()
	default:
		p.waiting.Add(-1)
		p.refused.Add(1)
		refusedTotal.Inc()
		return &OverloadedError{RetryAfter: time.Second}
	}
	giveUp := j.admitted.Add(p.maxWait())
	first := p.stallAfter() // under maxWait
	if !p.background {
		first = p.maxWait() // no rescue to start: only the bound to keep
	} else if p.starved(j.admitted) {
		p.rescue()
	}
	check := time.NewTimer(first)
	defer check.Stop()
	for {
		select {
		case <-j.reply:
			return ctx.Err() // nil unless the job was skipped for a gone caller
		case <-ctx.Done():
			p.drop(j)
			return ctx.Err()
		case <-p.stop:
			p.drop(j)
			return ErrClosed
		case now := <-check.C:
			if p.starved(now) {
				p.rescue()
			}
			if now.Before(giveUp) {
				check.Reset(min(rescueCheck, giveUp.Sub(now)))
				continue
			}
			// A job running in this process finishes: wait for it (no
			// more checks). One queued, or in a starved worker process,
			// may never.
			if p.drop(j) || p.background {
				abandonedTotal.Inc()
				return &OverloadedError{RetryAfter: time.Second}
			}
		}
	}
}

// rescueCheck: how often a waiting request looks again whether the
// workers are starved, and the rescue whether they still are.
const rescueCheck = 50 * time.Millisecond

// drop takes j off the queue if no worker took it yet, and reports
// whether it did.
func (p *Pool) drop(j *job) bool { return p.claim(j, jobDropped) }

// claim moves j from jobQueued to state as, taking it off the queue's
// count, and reports whether it did: of a worker, the rescue and the
// caller leaving, only the first moves it.
func (p *Pool) claim(j *job, as int32) bool {
	if !j.state.CompareAndSwap(jobQueued, as) {
		return false
	}
	p.waiting.Add(-1)
	queueGauge.Dec()
	return true
}

// starved reports whether a background pool's worker process gets no CPU:
// every one of its threads on its hash for stallAfter or more, or a hash
// of it took that long and no probe has come back quickly since.
func (p *Pool) starved(now time.Time) bool {
	starved, _ := p.stall(now)
	return starved
}

// stall returns starved's answer and stalledFor's.
func (p *Pool) stall(now time.Time) (starved bool, stalled time.Duration) {
	stalled = p.stalledFor(now)
	return p.background && (p.starving.Load() || stalled >= p.stallAfter()), stalled
}

// rescue starts the rescue unless it runs: while the worker process is
// starved, it takes the queued jobs and computes them in this process, one
// at a time, at the server's normal priority. The worker process runs at
// SCHED_IDLE, which the kernel gives no CPU while normal threads keep every
// core busy (a refresh storm, another process): without the rescue, logins
// and signups would wait for as long as that lasts. The rescue gives
// hashing one thread's fair share then, no more; a login storm on a machine
// with CPU to spare never starves the workers and is never rescued.
func (p *Pool) rescue() {
	if !p.rescuing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.rescuing.Store(false)
		for p.starved(time.Now()) {
			select {
			case <-p.stop: // first: of two ready cases, select picks either
				return
			default:
			}
			select {
			case <-p.stop:
				return
			case j := <-p.jobs:
				if !p.claim(j, jobTaken) {
					continue
				}
				if j.ctx.Err() == nil {
					start := time.Now()
					j.fn(localKDF)
					p.observe(time.Since(start))
					rescuedTotal.Inc()
				}
				close(j.reply)
			case <-time.After(rescueCheck):
			}
		}
	}()
}

// refuse decides admission for a request with ahead requests queued before
// it: nil when its expected wait fits the budget, else an OverloadedError
// (counted as a refusal).
func (p *Pool) refuse(ahead int64) error {
	idle := ahead == 0 && p.busy.Load() < int64(p.workers)
	hashTime, lanes := float64(p.ewma.Load()), float64(p.workers)
	if starved, stalled := p.stall(time.Now()); starved {
		lanes = 1 // the rescue computes the queue, one at a time
	} else {
		// Workers that have all been on their hashes longer than the
		// average free no slot sooner.
		hashTime = max(hashTime, float64(stalled))
	}
	expected := time.Duration(hashTime * (float64(ahead)/lanes + 1))
	if idle || expected <= p.budget && ahead < int64(p.maxQueue) {
		return nil
	}
	p.refused.Add(1)
	refusedTotal.Inc()
	// The queue drains at lanes/hashTime per second; half of it must
	// drain before a retry is likely to be admitted.
	ra := time.Duration(math.Max(hashTime*float64(ahead)/(2*lanes), float64(time.Second)))
	return &OverloadedError{RetryAfter: ra}
}

// Admit answers now whether a hash request would be admitted, without
// queueing one: a caller that must do work before it hashes (a login reads
// the user) refuses cheaply at once when the pool is saturated, instead of
// after that work. The request itself is still admitted or refused when it
// runs.
func (p *Pool) Admit() error {
	select {
	case <-p.stop:
		return ErrClosed
	default:
	}
	return p.refuse(p.waiting.Load())
}

// Hash returns the PHC string of password under the pool's parameters.
func (p *Pool) Hash(ctx context.Context, password string) (string, error) {
	var out string
	var herr error
	if err := p.run(ctx, func(kdf kdfFunc) { out, herr = hashArgon2id(kdf, password, p.params) }); err != nil {
		return "", err
	}
	return out, herr
}

// Verify checks password against encoded (Argon2id PHC or bcrypt). stale
// reports a hash with other parameters than the pool's, or bcrypt: store a
// new one after a successful login. A hash in no known format returns an
// error wrapping ErrUnknownFormat.
func (p *Pool) Verify(ctx context.Context, encoded, password string) (ok, stale bool, err error) {
	// The worker writes only these locals: when run returns early (the
	// caller left, the pool closed) the job may still be running, and it must
	// not write the results being returned.
	var rOK, rStale bool
	var verr error
	if err := p.run(ctx, func(kdf kdfFunc) { rOK, rStale, verr = verify(kdf, encoded, password, p.params) }); err != nil {
		return false, false, err
	}
	return rOK, rStale, verr
}

// VerifyDummy spends the time of a real verification and returns nothing:
// for an unknown user, so that response time does not tell whether the
// email exists.
func (p *Pool) VerifyDummy(ctx context.Context, password string) error {
	var verr error
	if err := p.run(ctx, func(kdf kdfFunc) { _, _, verr = verify(kdf, p.dummy, password, p.params) }); err != nil {
		return err
	}
	return verr
}

func randomPassword() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return string(b[:])
}
