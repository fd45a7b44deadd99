package bench

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// Op is one kind of request a workload sends.
type Op string

// The operations of the auth API the workloads use.
const (
	OpSignup  Op = "signup"  // POST /signup with a new email
	OpLogin   Op = "login"   // POST /token?grant_type=password
	OpRefresh Op = "refresh" // POST /token?grant_type=refresh_token, rotating
	OpUser    Op = "user"    // GET /user
	OpUpdate  Op = "update"  // PUT /user with new metadata
)

// Ops lists every operation.
var Ops = []Op{OpUser, OpRefresh, OpUpdate, OpLogin, OpSignup}

// MixEntry is one operation's share of a mix, in percent (any positive
// weights work: they are normalised).
type MixEntry struct {
	Op     Op
	Weight float64
}

// Mix is the distribution of operations of a workload.
type Mix []MixEntry

// DefaultMix is the case study's kind of traffic: a week-long session
// refreshed hourly logs in once per ~170 refreshes.
var DefaultMix = Mix{{OpUser, 65}, {OpRefresh, 30}, {OpUpdate, 4.8}, {OpLogin, 0.15}, {OpSignup, 0.05}}

// ParseMix parses "user=65,refresh=30,update=4.8,login=0.15,signup=0.05".
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("mix %q: want op=weight", part)
		}
		op := Op(strings.TrimSpace(name))
		if !slices.Contains(Ops, op) {
			return nil, fmt.Errorf("mix: unknown operation %q (have %v)", op, Ops)
		}
		w, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || w < 0 {
			return nil, fmt.Errorf("mix %q: weight must be a number ≥ 0", part)
		}
		if slices.ContainsFunc(m, func(e MixEntry) bool { return e.Op == op }) {
			return nil, fmt.Errorf("mix: %s given twice", op)
		}
		if w > 0 {
			m = append(m, MixEntry{op, w})
		}
	}
	if m.total() == 0 {
		return nil, fmt.Errorf("mix %q: no operation with a positive weight", s)
	}
	return m, nil
}

func (m Mix) total() float64 {
	var t float64
	for _, e := range m {
		t += e.Weight
	}
	return t
}

// Share returns op's fraction of the mix (0 to 1).
func (m Mix) Share(op Op) float64 {
	t := m.total()
	for _, e := range m {
		if e.Op == op && t > 0 {
			return e.Weight / t
		}
	}
	return 0
}

// String states the mix in percent, as the report prints it.
func (m Mix) String() string {
	t := m.total()
	parts := make([]string, len(m))
	for i, e := range m {
		parts[i] = fmt.Sprintf("%s=%s%%", e.Op, strconv.FormatFloat(100*e.Weight/t, 'g', 4, 64))
	}
	return strings.Join(parts, ",")
}

// pick draws an operation.
func (m Mix) pick(rng *rand.Rand) Op {
	x := rng.Float64() * m.total()
	for _, e := range m {
		if x < e.Weight {
			return e.Op
		}
		x -= e.Weight
	}
	return m[len(m)-1].Op
}

// Has reports whether op has a positive share.
func (m Mix) Has(op Op) bool { return m.Share(op) > 0 }
