package shard

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func newEntries(s *sieve, ids ...string) map[string]*entry {
	m := make(map[string]*entry)
	for _, id := range ids {
		e := &entry{id: id}
		s.add(e)
		m[id] = e
	}
	return m
}

// A visited entry survives the hand's first pass; unvisited ones go in the
// order they came in; pinned and fresh entries are passed over.
func TestSieve_Victim(t *testing.T) {
	s := newSieve()
	newEntries(s, "a", "b", "c", "d")
	s.get("a")
	s.get("c")
	var order []string
	for s.len() > 0 {
		v := s.victim()
		if v == nil {
			t.Fatalf("no victim among %d unpinned entries", s.len())
		}
		order = append(order, v.id)
		s.remove(v.id)
	}
	if got, want := fmt.Sprint(order), "[b d a c]"; got != want {
		t.Fatalf("eviction order %s, want %s", got, want)
	}

	s = newSieve()
	es := newEntries(s, "a", "b", "c")
	es["a"].pins, es["b"].pins, es["c"].fresh = 1, 2, true
	if v := s.victim(); v != nil || s.hasIdle() {
		t.Fatalf("victim %v, hasIdle %v: every entry is pinned or fresh", v, s.hasIdle())
	}
	es["c"].fresh = false
	if !s.hasIdle() {
		t.Fatal("hasIdle false with c idle")
	}
	if v := s.victim(); v != es["c"] {
		t.Fatalf("victim %v, want c", v)
	}
	s.remove("c")
	if v := s.victim(); v != nil {
		t.Fatalf("victim %s among pinned entries only", v.id)
	}
	if _, ok := s.get("a"); !ok || s.len() != 2 {
		t.Fatalf("pinned entries lost: len %d", s.len())
	}
}

// Random operations keep the list and the map in agreement, and the hand on
// a member.
func TestSieve_Consistent(t *testing.T) {
	s := newSieve()
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		id := fmt.Sprint(r.IntN(50))
		switch r.IntN(4) {
		case 0:
			s.add(&entry{id: id, pins: r.IntN(2), fresh: r.IntN(4) == 0})
		case 1:
			s.get(id)
		case 2:
			s.remove(id)
		case 3:
			if v := s.victim(); v != nil {
				if !v.idle() {
					t.Fatalf("step %d: victim in use", i)
				}
				s.remove(v.id)
			}
		}
		n := 0
		var prev *entry
		handSeen := s.hand == nil
		for e := s.head; e != nil; e = e.next {
			if e.prev != prev || s.m[e.id] != e {
				t.Fatalf("step %d: list and map disagree at %s", i, e.id)
			}
			handSeen = handSeen || s.hand == e
			prev, n = e, n+1
		}
		if n != s.len() || s.tail != prev || !handSeen {
			t.Fatalf("step %d: %d linked, %d mapped, tail ok %v, hand a member %v", i, n, s.len(), s.tail == prev, handSeen)
		}
	}
}
