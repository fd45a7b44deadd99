package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is the outcome of one workload. Latencies cover every answered
// request (any status), timed from when it was due in an open loop.
type Result struct {
	Workload    string `json:"workload"`
	Backend     string `json:"backend"`
	Mode        string `json:"mode"` // open or closed
	Mix         string `json:"mix,omitempty"`
	Tenants     int    `json:"tenants"`
	Sessions    int    `json:"sessions"`
	Concurrency int    `json:"concurrency"`
	// ClientAddresses: Load.ClientAddresses (0: the generator's address).
	ClientAddresses int                 `json:"client_addresses,omitempty"`
	DurationS       float64             `json:"duration_s"`
	OfferedRPS      float64             `json:"offered_rps"`  // open: the arrival rate; closed: requests sent per second
	AchievedRPS     float64             `json:"achieved_rps"` // 2xx answers per second
	Requests        int64               `json:"requests"`     // requests due, sent or not
	P50Ms           float64             `json:"p50_ms"`
	P95Ms           float64             `json:"p95_ms"`
	P99Ms           float64             `json:"p99_ms"`
	MaxMs           float64             `json:"max_ms"`
	StatusCount     map[string]int64    `json:"status_counts"` // HTTP code, or error/dropped/no_session
	ErrorRate       float64             `json:"error_rate"`    // share of requests due without a 2xx answer
	OpCounts        map[string]int64    `json:"op_counts"`     // requests due per operation
	Ops             map[string]OpResult `json:"ops"`
	HashRate        float64             `json:"hash_rate"` // raw Argon2id hashes/s, measured by this run
	Storm           *StormResult        `json:"storm,omitempty"`
	LoginShare      *LoginShare         `json:"login_share,omitempty"` // login runs
	Sweep           *SweepResult        `json:"sweep,omitempty"`
	Server          ServerMetrics       `json:"server"`
	// Runtime is this process's Go runtime during the run (the load
	// generator, and the server when in-process).
	Runtime *RuntimeStats `json:"runtime,omitempty"`
}

// OpResult is one operation's share of a run.
type OpResult struct {
	StatusCount map[string]int64 `json:"status_counts"`
	All         Latency          `json:"latency"`
	OK          Latency          `json:"ok"`      // 2xx
	Refused     Latency          `json:"refused"` // 429 and 503
	AchievedRPS float64          `json:"achieved_rps"`
}

// StormResult splits a storm run: the non-login traffic's latency is the
// Result's p50…max; the logins are here.
type StormResult struct {
	LoginOfferedRPS  float64 `json:"login_offered_rps"`
	LoginAchievedRPS float64 `json:"login_achieved_rps"`
	OtherOfferedRPS  float64 `json:"other_offered_rps"`
	LoginOK          Latency `json:"login_ok"`
	LoginRefused     Latency `json:"login_refused"` // 429/503: answered at once?
	LoginOKShare     float64 `json:"login_ok_of_hash_rate"`
}

// LoginShare is a login run's 200 answers per second over the raw Argon2id
// rate: the rate measured before the runs, the one measured after them, and
// their mean. On a shared machine one 3 s measurement can be far off (one
// read 23/s against 66–79/s in every other run), so a share against one of
// them alone says little; the mean is the figure to quote.
type LoginShare struct {
	OfBefore float64 `json:"of_hash_rate"`
	OfAfter  float64 `json:"of_hash_rate_after,omitempty"`
	OfMean   float64 `json:"of_mean_hash_rate,omitempty"`
}

// SetLoginShares computes every login run's LoginShare from the report's
// raw rates: call it once HashRateAfter is known (or will not be).
func (r *Report) SetLoginShares() {
	for _, x := range r.Results {
		if x.Workload != "login" || r.HashRate <= 0 {
			continue
		}
		s := &LoginShare{OfBefore: x.AchievedRPS / r.HashRate}
		if r.HashRateAfter > 0 {
			s.OfAfter = x.AchievedRPS / r.HashRateAfter
			s.OfMean = x.AchievedRPS / ((r.HashRate + r.HashRateAfter) / 2)
		}
		x.LoginShare = s
	}
}

// SweepResult is the search for the saturation point.
type SweepResult struct {
	P95BoundMs    float64     `json:"p95_bound_ms"`
	MaxErrorRate  float64     `json:"max_error_rate"`
	Steps         []SweepStep `json:"steps"`
	SaturationRPS float64     `json:"saturation_rps"` // highest offered rate sustained
	SaturationAch float64     `json:"saturation_achieved_rps"`
	// Half is the run at half the saturation rate.
	Half *Result `json:"half,omitempty"`
}

// SweepStep is one rate tried.
type SweepStep struct {
	OfferedRPS  float64 `json:"offered_rps"`
	AchievedRPS float64 `json:"achieved_rps"`
	P95Ms       float64 `json:"p95_ms"`
	ErrorRate   float64 `json:"error_rate"`
	Sustained   bool    `json:"sustained"`
}

// Report is a whole `keyshard bench` run.
type Report struct {
	Started    time.Time `json:"started"`
	Target     string    `json:"target"` // URL, or "loopback"
	GoMaxProcs int       `json:"gomaxprocs"`
	NumCPU     int       `json:"num_cpu"`
	HashRate   float64   `json:"hash_rate"` // before the runs
	// HashRateAfter is the raw rate measured again after the runs (when a
	// login workload ran): on a shared machine the two differ by more than
	// the effects measured, and a share of the raw rate is only as good as
	// its baseline.
	HashRateAfter float64   `json:"hash_rate_after,omitempty"`
	HashParams    string    `json:"hash_params"`
	Results       []*Result `json:"results"`
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// fill sets the latency and status fields of res from rec over
// the given ops (all when none).
func (res *Result) fill(rec *recorder, elapsed time.Duration, ops ...Op) {
	m := rec.merged(ops...)
	l := summarize(m.all)
	res.P50Ms, res.P95Ms, res.P99Ms, res.MaxMs = l.P50Ms, l.P95Ms, l.P99Ms, l.MaxMs
	res.StatusCount = m.status
	var due, ok int64
	for k, v := range m.status {
		due += v
		if len(k) == 3 && k[0] == '2' {
			ok += v
		}
	}
	res.Requests = due
	res.DurationS = elapsed.Seconds()
	if elapsed > 0 {
		res.AchievedRPS = float64(ok) / elapsed.Seconds()
	}
	if due > 0 {
		res.ErrorRate = float64(due-ok) / float64(due)
	}
	res.OpCounts = map[string]int64{}
	res.Ops = map[string]OpResult{}
	rec.mu.Lock()
	ss := maps.Clone(rec.ops)
	rec.mu.Unlock()
	for op, s := range ss {
		s.mu.Lock()
		var n, okn int64
		for k, v := range s.status {
			n += v
			if len(k) == 3 && k[0] == '2' {
				okn += v
			}
		}
		or := OpResult{StatusCount: maps.Clone(s.status), All: summarize(s.all), OK: summarize(s.ok), Refused: summarize(s.refused)}
		if elapsed > 0 {
			or.AchievedRPS = float64(okn) / elapsed.Seconds()
		}
		s.mu.Unlock()
		res.OpCounts[string(op)] = n
		res.Ops[string(op)] = or
	}
}

// PrintTable writes the results as a table.
func (r *Report) PrintTable(w io.Writer) {
	fmt.Fprintf(w, "target %s, %d CPUs, raw Argon2id %s: %.1f hashes/s\n", r.Target, r.NumCPU, r.HashParams, r.HashRate)
	if r.HashRateAfter > 0 {
		fmt.Fprintf(w, "raw Argon2id after the runs: %.1f hashes/s\n", r.HashRateAfter)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tmode\toffered/s\tachieved/s\tp50 ms\tp95 ms\tp99 ms\tmax ms\terrors\tstatus\t")
	row := func(name string, x *Result) {
		mode := x.Mode
		if x.Mode == "closed" {
			mode = fmt.Sprintf("c=%d", x.Concurrency)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.2f\t%.2f\t%.2f\t%.1f\t%.3f%%\t%s\t\n", name, mode, x.OfferedRPS, x.AchievedRPS,
			x.P50Ms, x.P95Ms, x.P99Ms, x.MaxMs, 100*x.ErrorRate, statusString(x.StatusCount))
	}
	for _, x := range r.Results {
		if x.Sweep != nil {
			for _, st := range x.Sweep.Steps {
				ok := "ok"
				if !st.Sustained {
					ok = "over"
				}
				fmt.Fprintf(tw, "%s sweep\topen\t%.0f\t%.0f\t\t%.2f\t\t\t%.3f%%\t%s\t\n", x.Workload, st.OfferedRPS, st.AchievedRPS, st.P95Ms, 100*st.ErrorRate, ok)
			}
		}
		row(x.Workload, x)
		// Refusals of logins and signups apart: the target is theirs
		// (answered at once), and the run's percentiles mix them with the
		// successes queued for a hash. A storm has its own row below.
		for _, op := range []Op{OpLogin, OpSignup} {
			if o, ok := x.Ops[string(op)]; ok && o.Refused.Count > 0 && x.Storm == nil {
				fmt.Fprintf(tw, "  %s refused\t\t\t%d\t%.2f\t%.2f\t%.2f\t%.1f\t\t429/503\t\n", op, o.Refused.Count,
					o.Refused.P50Ms, o.Refused.P95Ms, o.Refused.P99Ms, o.Refused.MaxMs)
			}
		}
		if x.Sweep != nil && x.Sweep.Half != nil {
			row(x.Workload+" @half", x.Sweep.Half)
		}
		if x.Storm != nil {
			s := x.Storm
			fmt.Fprintf(tw, "  storm logins\topen\t%.0f\t%.1f\t%.2f\t%.2f\t%.2f\t%.1f\t\tok\t\n", s.LoginOfferedRPS, s.LoginAchievedRPS,
				s.LoginOK.P50Ms, s.LoginOK.P95Ms, s.LoginOK.P99Ms, s.LoginOK.MaxMs)
			fmt.Fprintf(tw, "  storm refused\t\t\t%d\t%.2f\t%.2f\t%.2f\t%.1f\t\t429/503\t\n", s.LoginRefused.Count,
				s.LoginRefused.P50Ms, s.LoginRefused.P95Ms, s.LoginRefused.P99Ms, s.LoginRefused.MaxMs)
		}
	}
	_ = tw.Flush()
	for _, x := range r.Results {
		if x.Mix != "" {
			fmt.Fprintf(w, "%s mix: %s\n", x.Workload, x.Mix)
		}
		if s := x.LoginShare; s != nil {
			if s.OfMean > 0 {
				fmt.Fprintf(w, "%s c=%d: %.2f of the raw Argon2id rate (mean of before and after the runs; %.2f of before, %.2f of after)\n",
					x.Workload, x.Concurrency, s.OfMean, s.OfBefore, s.OfAfter)
			} else {
				fmt.Fprintf(w, "%s c=%d: %.2f of the raw Argon2id rate measured before the runs\n", x.Workload, x.Concurrency, s.OfBefore)
			}
		}
		m := x.Server
		if m.Available {
			fmt.Fprintf(w, "%s server: batches %.0f (mean %.1f ops, commit %.2f ms), cache hits %.0f misses %.0f evictions %.0f (max open %.0f), hashes %.0f (mean %.1f ms, refused %.0f, max queue %.0f), max writer queue %.0f, writer rejections %v\n",
				x.Workload, m.Batches, m.MeanBatchSize, m.MeanCommitMs, m.CacheHits, m.CacheMisses, m.CacheEvictions, m.MaxOpenShards,
				m.Hashes, m.MeanHashMs, m.HashRefused, m.MaxHashQueue, m.MaxWriterQueue, m.WriterRejections)
			if m.CPUSeconds > 0 {
				fmt.Fprintf(w, "%s server CPU: %.2f s, %.1f µs per request\n", x.Workload, m.CPUSeconds, m.CPUPerRequestUs)
			}
		}
		if rt := x.Runtime; rt != nil {
			fmt.Fprintf(w, "%s runtime of this process: goroutines waited for a thread p50 %.3f p99 %.2f max %.1f ms; %d GC cycles (%.2f CPU-s), stop-the-world p99 %.2f max %.1f ms\n",
				x.Workload, rt.SchedLatency.P50Ms, rt.SchedLatency.P99Ms, rt.SchedLatency.MaxMs, rt.GCCycles, rt.GCCPUSeconds, rt.GCPause.P99Ms, rt.GCPause.MaxMs)
		}
	}
}

func statusString(m map[string]int64) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
