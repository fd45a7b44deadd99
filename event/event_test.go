package event_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
	"github.com/keyshard/keyshard/internal/testbackend"
)

// sink records what it is given; fail, when set, decides whether a
// delivery fails.
type sink struct {
	mu   sync.Mutex
	got  []delivery
	fail func(m event.Message) error
	// block, when set, holds every delivery until ctx ends.
	block bool
}

type delivery struct {
	tenant string
	m      event.Message
	err    error
	at     time.Time
}

func (s *sink) Deliver(ctx context.Context, t *engine.TenantShard, m event.Message) error {
	tenantID := t.Tenant.ID
	if s.block {
		<-ctx.Done()
		return ctx.Err()
	}
	var err error
	if s.fail != nil {
		err = s.fail(m)
	}
	s.mu.Lock()
	s.got = append(s.got, delivery{tenant: tenantID, m: m, err: err, at: time.Now()})
	s.mu.Unlock()
	return err
}

func (s *sink) deliveries() []delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]delivery(nil), s.got...)
}

// delivered returns the deliveries that succeeded, by event id.
func (s *sink) delivered() map[string][]delivery {
	out := map[string][]delivery{}
	for _, d := range s.deliveries() {
		if d.err == nil {
			out[d.m.EventID] = append(out[d.m.EventID], d)
		}
	}
	return out
}

var testParams = hash.Params{MemoryKiB: 64, Time: 1, Threads: 1}

type env struct {
	tb  testing.TB
	srv *app.Server
	dir string
}

// open opens a server on dir with the outbox topic "test" subscribed to
// user.created and user.signedin, delivered to s.
func open(tb testing.TB, dir string, s event.Sink, ec app.EventsConfig) *env {
	tb.Helper()
	ec.Subscriptions = event.Static{"user.created": {"test"}, "user.signedin": {"test"}}
	if s != nil {
		ec.Sinks = map[string]event.Sink{"test": s}
	}
	if ec.Interval == 0 {
		ec.Interval = 10 * time.Millisecond
	}
	srv := testbackend.OpenServer(tb, app.ServerConfig{
		Storage:   app.Config{DataDir: dir, Synchronous: "NORMAL"},
		Hash:      hash.Config{Params: testParams, Workers: 2},
		MasterKey: bytes.Repeat([]byte{5}, token.MasterKeySize), AdminToken: "admin",
		Events: ec,
	})
	e := &env{tb: tb, srv: srv, dir: dir}
	tb.Cleanup(func() {
		if srv.Work != nil {
			if err := srv.Close(); err != nil {
				tb.Errorf("close: %v", err)
			}
		}
	})
	return e
}

func (e *env) tenant(slug string) {
	e.tb.Helper()
	ctx := context.Background()
	if _, err := e.srv.Engine.CreateTenant(ctx, slug, slug, ""); err != nil {
		e.tb.Fatal(err)
	}
	if _, err := e.srv.Engine.ApproveTenant(ctx, slug); err != nil {
		e.tb.Fatal(err)
	}
}

// signup signs a user up through the auth flow: one user.created event.
func (e *env) signup(slug, email string) {
	e.tb.Helper()
	ctx := context.Background()
	ts, err := e.srv.Engine.Tenant(ctx, slug)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer ts.Release()
	t := auth.Tenant{ID: ts.Tenant.ID, Shard: ts, Issuer: "http://test/t/" + slug}
	if _, _, err := e.srv.Auth.Signup(ctx, t, auth.Client{IP: "127.0.0.1"}, auth.SignupRequest{Email: email, Password: "password1"}); err != nil {
		e.tb.Fatal(err)
	}
}

func (e *env) count(slug, query string) int64 {
	e.tb.Helper()
	ctx := context.Background()
	ts, err := e.srv.Engine.Tenant(ctx, slug)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer ts.Release()
	var n int64
	if err := ts.Read(ctx, func(q engine.Querier) error { return q.QueryRow(query).Scan(&n) }); err != nil {
		e.tb.Fatal(err)
	}
	return n
}

func (e *env) due() []string {
	e.tb.Helper()
	ids, err := e.srv.Catalog.DueWork(context.Background(), time.Now().Add(24*time.Hour), 100)
	if err != nil {
		e.tb.Fatal(err)
	}
	return ids
}

// waitFor polls cond for up to 20 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRecorder_Record(t *testing.T) {
	e := open(t, t.TempDir(), nil, app.EventsConfig{Interval: time.Hour}) // no worker round after the first
	e.tenant("acme")
	ts, err := e.srv.Engine.Tenant(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Release()
	rec, err := event.NewRecorder(event.Static{"user.created": {"test", "mail"}}, e.srv.Catalog)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Microsecond)
	err = ts.Write(context.Background(), func(tx engine.Querier) error {
		if err := rec.Record(tx, ts.Tenant.ID, &event.Event{Type: event.UserCreated, Actor: event.Actor{Kind: event.ActorServiceKey},
			Target: event.Target{ID: "u1", Email: "a@x.io"}, IP: "10.0.0.1", Data: map[string]any{"via": "admin"}, At: at}); err != nil {
			return err
		}
		// Not subscribed: an audit row only.
		return rec.Record(tx, ts.Tenant.ID, &event.Event{Type: event.UserSignedIn, Actor: event.User("u1", "a@x.io"), At: at})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("Audit", func(t *testing.T) {
		type row struct {
			action, payload string
			actorID, email  *string
		}
		var rows []row
		err := ts.Read(context.Background(), func(q engine.Querier) error {
			rs, err := q.Query(`SELECT action, actor_id, actor_email, payload FROM audit_log ORDER BY id`)
			if err != nil {
				return err
			}
			defer rs.Close()
			for rs.Next() {
				var r row
				if err := rs.Scan(&r.action, &r.actorID, &r.email, &r.payload); err != nil {
					return err
				}
				rows = append(rows, r)
			}
			return rs.Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 2 || rows[0].action != "user_signedup" || rows[1].action != "login" {
			t.Fatalf("audit rows %+v", rows)
		}
		// The service key acted on user u1: as in GoTrue's audit log, the
		// actor is the nil UUID named service_role, the user a trait.
		if rows[0].actorID == nil || *rows[0].actorID != "00000000-0000-0000-0000-000000000000" || rows[0].email == nil || *rows[0].email != "service_role" {
			t.Fatalf("admin event's actor: %v %v", rows[0].actorID, rows[0].email)
		}
		var p struct {
			Via    string            `json:"via"`
			Traits map[string]string `json:"traits"`
		}
		if err := json.Unmarshal([]byte(rows[0].payload), &p); err != nil || p.Traits["user_id"] != "u1" || p.Traits["user_email"] != "a@x.io" || p.Via != "admin" {
			t.Fatalf("admin event's payload %s", rows[0].payload)
		}
		if rows[1].actorID == nil || *rows[1].actorID != "u1" || rows[1].payload != "{}" {
			t.Fatalf("user event: %+v", rows[1])
		}
	})
	t.Run("Outbox", func(t *testing.T) {
		if n := e.count("acme", `SELECT count(*) FROM outbox`); n != 2 {
			t.Fatalf("%d outbox rows, want one per topic of user.created (2)", n)
		}
		var id1, id2, topic1, topic2, payload string
		err := ts.Read(context.Background(), func(q engine.Querier) error {
			return q.QueryRow(`SELECT MIN(event_id), MAX(event_id), MIN(topic), MAX(topic), MIN(payload) FROM outbox`).Scan(&id1, &id2, &topic1, &topic2, &payload)
		})
		if err != nil {
			t.Fatal(err)
		}
		if id1 != id2 || topic1 != "mail" || topic2 != "test" {
			t.Fatalf("event ids %q %q, topics %q %q: want one id for both topics", id1, id2, topic1, topic2)
		}
		var env event.Envelope
		if err := json.Unmarshal([]byte(payload), &env); err != nil {
			t.Fatal(err)
		}
		if env.ID != id1 || env.Type != "user.created" || env.Version != 1 || env.TenantID != ts.Tenant.ID ||
			!env.OccurredAt.Equal(at) || env.Data["via"] != "admin" {
			t.Fatalf("envelope %+v", env)
		}
	})
	t.Run("Marked", func(t *testing.T) {
		if due := e.due(); len(due) != 1 || due[0] != ts.Tenant.ID {
			t.Fatalf("tenants with work due: %v", due)
		}
	})
	t.Run("ErrNoMarks", func(t *testing.T) {
		if _, err := event.NewRecorder(event.Static{"user.created": {"test"}}, nil); err == nil {
			t.Fatal("a recorder with subscriptions and nowhere to mark tenants was made")
		}
	})
}

func TestOutbox_Delivery(t *testing.T) {
	t.Run("OnceEach", func(t *testing.T) {
		s := &sink{}
		e := open(t, t.TempDir(), s, app.EventsConfig{})
		for _, slug := range []string{"acme", "beta"} {
			e.tenant(slug)
			for i := range 5 {
				e.signup(slug, fmt.Sprintf("u%d@%s.io", i, slug))
			}
		}
		waitFor(t, "10 deliveries", func() bool { return len(s.delivered()) == 10 })
		waitFor(t, "the marks cleared", func() bool { return len(e.due()) == 0 })
		got := s.delivered()
		perTenant := map[string]int{}
		for id, ds := range got {
			if len(ds) != 1 {
				t.Errorf("event %s delivered %d times", id, len(ds))
			}
			var env event.Envelope
			if err := json.Unmarshal(ds[0].m.Payload, &env); err != nil || env.ID != id || env.Type != "user.created" || env.TenantID != ds[0].tenant {
				t.Errorf("delivery %+v: envelope %+v (%v)", ds[0].m, env, err)
			}
			perTenant[ds[0].tenant]++
		}
		if len(perTenant) != 2 {
			t.Fatalf("deliveries per tenant %v", perTenant)
		}
		for _, slug := range []string{"acme", "beta"} {
			if n := e.count(slug, `SELECT count(*) FROM outbox`); n != 0 {
				t.Errorf("%s: %d outbox rows left after delivery", slug, n)
			}
		}
		// A turn releases its shard (the mark is cleared inside the turn,
		// just before): none stays pinned.
		waitFor(t, "no shard pinned", func() bool { return e.srv.Cache.Stats().Pinned == 0 })
	})
	t.Run("Retry", func(t *testing.T) {
		var failures int
		var mu sync.Mutex
		s := &sink{fail: func(m event.Message) error {
			mu.Lock()
			defer mu.Unlock()
			if failures < 2 {
				failures++
				return errors.New("receiver down")
			}
			return nil
		}}
		var backoffs []int
		e := open(t, t.TempDir(), s, app.EventsConfig{Backoff: func(attempts int) time.Duration {
			mu.Lock()
			backoffs = append(backoffs, attempts)
			mu.Unlock()
			return 20 * time.Millisecond
		}})
		e.tenant("acme")
		e.signup("acme", "r@acme.io")
		waitFor(t, "a delivery", func() bool { return len(s.delivered()) == 1 })
		ds := s.deliveries()
		if len(ds) != 3 {
			t.Fatalf("%d attempts, want 3 (two failures, then the delivery)", len(ds))
		}
		for i, d := range ds {
			if d.m.EventID != ds[0].m.EventID || d.m.Attempts != i {
				t.Fatalf("attempt %d: event %s with %d attempts before, want %s and %d", i, d.m.EventID, d.m.Attempts, ds[0].m.EventID, i)
			}
		}
		if ds[1].at.Sub(ds[0].at) < 20*time.Millisecond || ds[2].at.Sub(ds[1].at) < 20*time.Millisecond {
			t.Fatalf("retries did not wait for the backoff: %v, %v", ds[1].at.Sub(ds[0].at), ds[2].at.Sub(ds[1].at))
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(backoffs) != "[0 1]" {
			t.Fatalf("backoff asked for attempts %v, want [0 1]", backoffs)
		}
	})
	t.Run("FairShare", func(t *testing.T) {
		// A tenant with many pending events must not hold up one with a
		// few: each gets one bounded turn per round.
		s := &sink{}
		dir := t.TempDir()
		e := open(t, dir, s, app.EventsConfig{Interval: time.Hour})
		e.tenant("busy")
		e.tenant("quiet")
		ts, err := e.srv.Engine.Tenant(context.Background(), "busy")
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := event.NewRecorder(event.Static{"user.created": {"test"}}, e.srv.Catalog)
		err = ts.Write(context.Background(), func(tx engine.Querier) error {
			for i := range 400 {
				if err := rec.Record(tx, ts.Tenant.ID, &event.Event{Type: event.UserCreated, Actor: event.User(fmt.Sprint(i), ""), At: time.Now()}); err != nil {
					return err
				}
			}
			return nil
		})
		ts.Release()
		if err != nil {
			t.Fatal(err)
		}
		e.signup("quiet", "q@quiet.io")
		if err := e.srv.Close(); err != nil { // its worker waits an hour between rounds
			t.Fatal(err)
		}
		e.srv.Work = nil
		e = open(t, dir, s, app.EventsConfig{Workers: 1})
		// Batch is 100: the busy tenant needs four turns, the quiet one gets
		// its event in the first round whichever goes first.
		waitFor(t, "401 deliveries", func() bool { return len(s.delivered()) == 401 })
		var quietAt, busyBefore int
		for i, d := range s.deliveries() {
			if d.m.EventType == "user.created" && d.tenant != ts.Tenant.ID {
				quietAt = i
				break
			}
			busyBefore++
		}
		if busyBefore > 100 {
			t.Fatalf("the quiet tenant's event came after %d of the busy tenant's (position %d)", busyBefore, quietAt)
		}
	})
	t.Run("SurvivesRestart", func(t *testing.T) {
		// Events recorded while nothing delivers (the server closed before
		// its worker's next round) are delivered by the next server.
		dir := t.TempDir()
		e := open(t, dir, nil, app.EventsConfig{Interval: time.Hour})
		e.tenant("acme")
		e.signup("acme", "a@acme.io")
		e.signup("acme", "b@acme.io")
		if err := e.srv.Close(); err != nil {
			t.Fatal(err)
		}
		e.srv.Work = nil
		s := &sink{}
		e = open(t, dir, s, app.EventsConfig{})
		waitFor(t, "2 deliveries", func() bool { return len(s.delivered()) == 2 })
		waitFor(t, "the mark cleared", func() bool { return len(e.due()) == 0 })
	})
	t.Run("CloseWaits", func(t *testing.T) {
		// A delivery that never ends is cancelled by Close, which returns;
		// the event stays in the outbox for the next server.
		s := &sink{block: true}
		dir := t.TempDir()
		e := open(t, dir, s, app.EventsConfig{})
		e.tenant("acme")
		e.signup("acme", "a@acme.io")
		waitFor(t, "a turn in progress", func() bool { return e.srv.Work.Stats().InFlight > 0 })
		done := make(chan error, 1)
		go func() { done <- e.srv.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not return while a delivery was blocked")
		}
		e.srv.Work = nil
		s2 := &sink{}
		open(t, dir, s2, app.EventsConfig{})
		waitFor(t, "the delivery after restart", func() bool { return len(s2.delivered()) == 1 })
	})
	t.Run("DeletedTenant", func(t *testing.T) {
		e := open(t, t.TempDir(), nil, app.EventsConfig{Interval: time.Hour})
		e.tenant("acme")
		e.signup("acme", "a@acme.io")
		if len(e.due()) != 1 {
			t.Fatal("the tenant was not marked")
		}
		if err := e.srv.Engine.DeleteTenant(context.Background(), "acme"); err != nil {
			t.Fatal(err)
		}
		if due := e.due(); len(due) != 0 {
			t.Fatalf("a deleted tenant is still marked: %v", due)
		}
	})
}

func TestOutbox_SuspendedTenant(t *testing.T) {
	// A suspended tenant's events wait for it, and it is looked at once a
	// minute rather than every round.
	s := &sink{}
	e := open(t, t.TempDir(), s, app.EventsConfig{Interval: time.Hour})
	e.tenant("acme")
	e.signup("acme", "a@acme.io")
	if _, err := e.srv.Engine.SuspendTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	e.srv.Work = nil
	e = open(t, e.dir, s, app.EventsConfig{})
	waitFor(t, "the mark put off", func() bool {
		ids, err := e.srv.Catalog.DueWork(context.Background(), time.Now().Add(30*time.Second), 10)
		return err == nil && len(ids) == 0
	})
	if n := len(s.deliveries()); n != 0 {
		t.Fatalf("%d deliveries for a suspended tenant", n)
	}
	if ids := e.due(); len(ids) != 1 {
		t.Fatalf("the suspended tenant's mark is gone: %v", ids)
	}
	// Resumed, its work is due at once, not a minute later.
	if _, err := e.srv.Engine.ResumeTenant(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the delivery after resume", func() bool { return len(s.delivered()) == 1 })
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("delivered %v after resume", d)
	}
}
