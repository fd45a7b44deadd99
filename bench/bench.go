package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// Workloads lists the workload names Run accepts.
var Workloads = []string{"signup", "login", "refresh", "user", "update", "mixed", "tenants", "storm", "client_credentials", "authorization_code"}

// RunConfig says which workload to run and how.
type RunConfig struct {
	Workload string
	Load     Load
	// Mix of the mixed and tenants workloads; default DefaultMix.
	Mix Mix
	// ZipfS is the skew of the tenants workload (> 1; default 1.1):
	// tenant k is drawn with probability ∝ 1/(1+k)^s.
	ZipfS float64
	// StormFactor × HashRate is the storm's login rate (default 4);
	// StormRate the rate of its refresh and GET /user traffic, half each
	// (default 400/s).
	StormFactor float64
	StormRate   float64
	// MetricsEvery is how often /metrics is sampled during the run for the
	// gauges (default 1 s).
	MetricsEvery time.Duration
}

// Bench runs workloads against a target with the fixture Setup made.
type Bench struct {
	Target   *Target
	Fixture  *Fixture
	HashRate float64 // raw hashes/s, reported with every result and used by storm
}

// Run runs one workload and reports it.
func (b *Bench) Run(ctx context.Context, cfg RunConfig) (*Result, error) {
	if !slices.Contains(Workloads, cfg.Workload) {
		return nil, fmt.Errorf("unknown workload %q (have %v)", cfg.Workload, Workloads)
	}
	if cfg.Mix == nil {
		cfg.Mix = DefaultMix
	}
	if cfg.ZipfS <= 1 {
		cfg.ZipfS = 1.1
	}
	if cfg.MetricsEvery <= 0 {
		cfg.MetricsEvery = time.Second
	}
	if cfg.Workload == "storm" {
		return b.runStorm(ctx, cfg)
	}
	if NeedsOAuth(cfg.Workload) && b.Fixture.clients == nil {
		return nil, fmt.Errorf("workload %s needs a fixture set up with OAuth clients", cfg.Workload)
	}
	l := cfg.Load.withDefaults()
	res := b.newResult(cfg.Workload, l)
	nt := b.Fixture.BaseTenants()
	if cfg.Workload == "tenants" {
		nt = len(b.Fixture.Slugs)
	}
	var newPicker newPickerFunc
	switch cfg.Workload {
	case "mixed":
		res.Mix = cfg.Mix.String()
		newPicker = func(rng *rand.Rand) picker {
			return func() call { return call{op: cfg.Mix.pick(rng), tenant: rng.IntN(nt)} }
		}
	case "tenants":
		res.Mix = cfg.Mix.String() + fmt.Sprintf(" over %d tenants, zipf s=%g", nt, cfg.ZipfS)
		newPicker = zipfPicker(cfg.Mix, nt, cfg.ZipfS)
	default:
		op := Op(cfg.Workload)
		newPicker = func(rng *rand.Rand) picker {
			return func() call { return call{op: op, tenant: rng.IntN(nt)} }
		}
	}
	res.Tenants = nt
	rec := newRecorder()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	ex := &executor{t: b.Target, f: b.Fixture, rec: rec, spread: nt, stop: stop, addrs: l.ClientAddresses}
	w := startMetricsWatch(ctx, b.Target, cfg.MetricsEvery)
	rt := startRuntimeWatch()
	_, elapsed := run(runCtx, l, newPicker, ex.exec, ex.drop)
	res.Runtime = rt.finish()
	res.Server = w.finish(ctx)
	res.fill(rec, elapsed)
	if l.Rate > 0 {
		res.OfferedRPS = l.Rate
	} else if elapsed > 0 {
		res.OfferedRPS = float64(res.Requests) / elapsed.Seconds()
	}
	return res, ctx.Err()
}

func (b *Bench) newResult(workload string, l Load) *Result {
	mode := "closed"
	if l.Rate > 0 {
		mode = "open"
	}
	backend := b.Fixture.Backend
	if backend == "" {
		backend = "default"
	}
	return &Result{
		Workload: workload, Backend: backend, Mode: mode, Concurrency: l.Concurrency, ClientAddresses: l.ClientAddresses,
		Tenants: len(b.Fixture.Slugs), Sessions: b.Fixture.Sessions(), HashRate: b.HashRate,
	}
}

// runStorm offers logins at StormFactor × the hash rate while refresh and
// GET /user run at StormRate, both open loops over the same duration.
func (b *Bench) runStorm(ctx context.Context, cfg RunConfig) (*Result, error) {
	if b.HashRate <= 0 {
		return nil, fmt.Errorf("storm needs the raw hash rate")
	}
	if cfg.StormFactor <= 0 {
		cfg.StormFactor = 4
	}
	if cfg.StormRate <= 0 {
		cfg.StormRate = 400
	}
	l := cfg.Load.withDefaults()
	loginLoad := Load{Rate: cfg.StormFactor * b.HashRate, Duration: l.Duration, Requests: l.Requests, Concurrency: 4096, ClientAddresses: l.ClientAddresses}
	otherLoad := Load{Rate: cfg.StormRate, Duration: l.Duration, Requests: l.Requests, Concurrency: 4096, ClientAddresses: l.ClientAddresses}
	res := b.newResult("storm", Load{Rate: loginLoad.Rate + otherLoad.Rate, Concurrency: 4096, ClientAddresses: l.ClientAddresses})
	res.Mix = fmt.Sprintf("login at %.0f/s (%g × hash rate) + refresh=50%%,user=50%% at %.0f/s", loginLoad.Rate, cfg.StormFactor, cfg.StormRate)
	nt := b.Fixture.BaseTenants()
	res.Tenants = nt
	rec := newRecorder()
	ex := &executor{t: b.Target, f: b.Fixture, rec: rec, spread: nt, addrs: l.ClientAddresses}
	w := startMetricsWatch(ctx, b.Target, cfg.MetricsEvery)
	rt := startRuntimeWatch()
	var elapsed time.Duration
	done := make(chan time.Duration, 1)
	go func() {
		_, e := run(ctx, loginLoad, func(rng *rand.Rand) picker {
			return func() call { return call{op: OpLogin, tenant: rng.IntN(nt)} }
		}, ex.exec, ex.drop)
		done <- e
	}()
	_, elapsed = run(ctx, otherLoad, func(rng *rand.Rand) picker {
		return func() call {
			if rng.IntN(2) == 0 {
				return call{op: OpRefresh, tenant: rng.IntN(nt)}
			}
			return call{op: OpUser, tenant: rng.IntN(nt)}
		}
	}, ex.exec, ex.drop)
	loginElapsed := <-done
	res.Runtime = rt.finish()
	res.Server = w.finish(ctx)
	res.fill(rec, max(elapsed, loginElapsed))
	// The headline latency is the non-login traffic's.
	other := rec.merged(OpRefresh, OpUser)
	l2 := summarize(other.all)
	res.P50Ms, res.P95Ms, res.P99Ms, res.MaxMs = l2.P50Ms, l2.P95Ms, l2.P99Ms, l2.MaxMs
	res.OfferedRPS = loginLoad.Rate + otherLoad.Rate
	lg := rec.series(OpLogin)
	lg.mu.Lock()
	st := &StormResult{
		LoginOfferedRPS: loginLoad.Rate,
		OtherOfferedRPS: otherLoad.Rate,
		LoginOK:         summarize(lg.ok),
		LoginRefused:    summarize(lg.refused),
	}
	lg.mu.Unlock()
	if loginElapsed > 0 {
		st.LoginAchievedRPS = float64(st.LoginOK.Count) / loginElapsed.Seconds()
	}
	st.LoginOKShare = st.LoginAchievedRPS / b.HashRate
	res.Storm = st
	return res, ctx.Err()
}

// SweepConfig bounds the search for the saturation point.
type SweepConfig struct {
	Start        float64 // first rate (default 100/s)
	Factor       float64 // rate multiplier between steps (default 1.5)
	MaxSteps     int     // most geometric steps (default 15)
	Refine       int     // bisection steps between the last rate sustained and the first not (default 3)
	P95BoundMs   float64 // a step whose P95 exceeds this is not sustained (default 50 ms)
	MaxErrorRate float64 // nor one with more requests without a 2xx (default 0.001)
	MinAchieved  float64 // nor one whose 2xx rate is below this share of the offered rate (default 0.95)
	Half         bool    // then run once at half the saturation rate
}

func (s SweepConfig) withDefaults() SweepConfig {
	if s.Start <= 0 {
		s.Start = 100
	}
	if s.Factor <= 1 {
		s.Factor = 1.5
	}
	if s.MaxSteps <= 0 {
		s.MaxSteps = 15
	}
	if s.Refine < 0 {
		s.Refine = 0
	} else if s.Refine == 0 {
		s.Refine = 3
	}
	if s.P95BoundMs <= 0 {
		s.P95BoundMs = 50
	}
	if s.MaxErrorRate <= 0 {
		s.MaxErrorRate = 0.001
	}
	if s.MinAchieved <= 0 {
		s.MinAchieved = 0.95
	}
	return s
}

// Sweep raises the open-loop rate of cfg's workload from s.Start by
// s.Factor until a step is not sustained (P95 over the bound, errors, or
// the server not keeping up), or lowers it until one is when s.Start was
// not, refines between the last two rates by bisection, and
// reports the highest rate sustained; with s.Half, also the run at half of
// it. The returned Result is the highest sustained step's.
func (b *Bench) Sweep(ctx context.Context, cfg RunConfig, s SweepConfig) (*Result, error) {
	if cfg.Workload == "storm" {
		return nil, fmt.Errorf("--sweep does not apply to the storm workload")
	}
	s = s.withDefaults()
	sw := &SweepResult{P95BoundMs: s.P95BoundMs, MaxErrorRate: s.MaxErrorRate}
	var best *Result
	try := func(rate float64) (bool, error) {
		c := cfg
		c.Load.Rate = rate
		r, err := b.Run(ctx, c)
		if err != nil {
			return false, err
		}
		ok := r.P95Ms <= s.P95BoundMs && r.ErrorRate <= s.MaxErrorRate && r.AchievedRPS >= s.MinAchieved*rate
		sw.Steps = append(sw.Steps, SweepStep{OfferedRPS: rate, AchievedRPS: r.AchievedRPS, P95Ms: r.P95Ms, ErrorRate: r.ErrorRate, Sustained: ok})
		if ok && (best == nil || rate > best.OfferedRPS) {
			best = r
		}
		return ok, nil
	}
	lo, hi := 0.0, 0.0
	rate := s.Start
	for range s.MaxSteps {
		ok, err := try(rate)
		if err != nil {
			return nil, err
		}
		if ok {
			lo = rate
			if hi > 0 {
				break // coming down from a start that was too high
			}
			rate *= s.Factor
			continue
		}
		hi = rate
		if lo > 0 {
			break
		}
		// The start was not sustained: come down.
		rate /= s.Factor
		if rate < 1 {
			break
		}
	}
	if lo > 0 && hi > 0 {
		for range s.Refine {
			mid := (lo + hi) / 2
			ok, err := try(mid)
			if err != nil {
				return nil, err
			}
			if ok {
				lo = mid
			} else {
				hi = mid
			}
		}
	}
	if best == nil {
		// Not even the first rate was sustained.
		best = &Result{Workload: cfg.Workload, Mode: "open", OfferedRPS: s.Start}
	}
	sw.SaturationRPS = lo
	sw.SaturationAch = best.AchievedRPS
	if s.Half && lo > 0 {
		c := cfg
		c.Load.Rate = lo / 2
		h, err := b.Run(ctx, c)
		if err != nil {
			return nil, err
		}
		sw.Half = h
	}
	best.Sweep = sw
	return best, nil
}

// zipfPicker draws operations from mix and tenants from a Zipf
// distribution over nt tenants: tenant k with probability ∝ 1/(1+k)^s.
func zipfPicker(mix Mix, nt int, s float64) newPickerFunc {
	return func(rng *rand.Rand) picker {
		if nt == 1 {
			return func() call { return call{op: mix.pick(rng)} }
		}
		z := rand.NewZipf(rng, s, 1, uint64(nt-1))
		return func() call { return call{op: mix.pick(rng), tenant: int(z.Uint64())} }
	}
}
