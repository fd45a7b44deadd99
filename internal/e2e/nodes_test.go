package e2e_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/keyshard/keyshard/shard/shardtest"
)

// nodeSet is several keyshard processes, each with its own data directory,
// sharing a catalog and a tenants' database on PostgreSQL (a database made
// for the test and dropped after it).
type nodeSet struct {
	t          *testing.T
	dsn        string // the test's database
	db         *sql.DB
	adminToken string
	env        []string
	nodes      map[string]*server
	nodeData   map[string]string // data directory by node
}

func newNodeSet(t *testing.T, names ...string) *nodeSet {
	t.Helper()
	needBinary(t)
	base := shardtest.DSN(t, "KEYSHARD_TEST_POSTGRES_DSN")
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	name := "ks_nodes_" + randHex(6)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	ns := &nodeSet{t: t, dsn: u.String(), adminToken: "adm_" + randHex(16),
		env: []string{"KEYSHARD_MASTER_KEY=" + randHex(32)}, nodes: map[string]*server{}, nodeData: map[string]string{}}
	if ns.db, err = sql.Open("pgx", ns.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range ns.nodes {
			if s.alive() {
				_ = s.cmd.Process.Signal(syscall.SIGCONT)
				s.kill()
			}
		}
		_ = ns.db.Close()
		_, _ = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		_ = admin.Close()
	})
	for _, n := range names {
		ns.start(n)
	}
	return ns
}

// withParam returns the test database's DSN with one more parameter.
func (ns *nodeSet) withParam(k, v string) string {
	u, _ := url.Parse(ns.dsn)
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
	return u.String()
}

// start runs node name; its PostgreSQL sessions carry application_name
// node-NAME, which the test's trigger records with every write.
func (ns *nodeSet) start(name string) *server { return ns.startAs(name, "node-"+name) }

// startAs runs node name with its PostgreSQL sessions named app.
func (ns *nodeSet) startAs(name, app string) *server {
	c := newCluster(ns.t, "", "--catalog", ns.dsn, "--postgres-dsn", ns.withParam("application_name", app),
		"--default-backend", "postgres", "--node", name, "--lease", "2s")
	c.adminToken, c.env = ns.adminToken, ns.env
	s := c.start()
	ns.t.Cleanup(func() {
		if ns.t.Failed() {
			ns.t.Logf("--- log of node %s:\n%s", name, c.allLogs())
		}
	})
	ns.nodes[name] = s
	ns.nodeData[name] = c.dataDir
	return s
}

// recordWrites makes every write to tenant id's refresh_tokens (a
// PostgreSQL tenant) leave a row in public.ks_writes with the writing
// session's application_name (node-NAME) and the database's clock.
func (ns *nodeSet) recordWrites(id string) {
	ns.t.Helper()
	for _, q := range []string{
		`CREATE TABLE public.ks_writes (app TEXT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())`,
		`CREATE FUNCTION public.ks_log() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN INSERT INTO public.ks_writes (app) VALUES (current_setting('application_name')); RETURN NULL; END $$`,
		`CREATE TRIGGER ks_log AFTER INSERT OR UPDATE ON t_` + id + `.refresh_tokens FOR EACH ROW EXECUTE FUNCTION public.ks_log()`,
	} {
		if _, err := ns.db.Exec(q); err != nil {
			ns.t.Fatal(err)
		}
	}
}

// refreshLoop refreshes one session's token through s until stop, keeping
// the last token a 200 gave.
type chain struct {
	mu    sync.Mutex
	token string
}

func (ch *chain) get() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.token
}

func TestNodes_ForwardFenceFailover(t *testing.T) {
	ns := newNodeSet(t, "a", "b", "c")
	a, b, c := ns.nodes["a"], ns.nodes["b"], ns.nodes["c"]
	tok := ns.adminToken

	// A tenant created through a is a's; any node serves it.
	r := a.must(http.StatusCreated, "POST", "/admin/tenants", tok, map[string]any{"slug": "acme", "name": "Acme"})
	id := r.str("id")
	if r.str("node") != "a" {
		t.Fatalf("tenant made through a is on %q", r.str("node"))
	}
	c.must(http.StatusOK, "POST", "/admin/tenants/acme/approve", tok, nil) // forwarded to a

	ns.recordWrites(id)

	const users = 8
	chains := make([]*chain, users)
	for i := range chains {
		email := fmt.Sprintf("u%d@example.com", i)
		body := map[string]any{"email": email, "password": "correct horse battery " + email}
		node := []*server{a, b, c}[i%3]
		r := node.must(http.StatusOK, "POST", "/t/acme/signup", "", body)
		if r.str("refresh_token") == "" {
			t.Fatalf("signup through %s: %s", node.base, r.Raw)
		}
		chains[i] = &chain{token: r.str("refresh_token")}
	}

	// The client's address crosses one hop, but only when a node signed
	// it: a client's own headers are dropped, by the node that forwards
	// (c) and by the owner (a) alike.
	for _, s := range []*server{c, a} {
		spoof, _ := http.NewRequest("POST", s.base+"/t/acme/token?grant_type=password",
			strings.NewReader(`{"email":"u0@example.com","password":"correct horse battery u0@example.com"}`))
		spoof.Header.Set("Content-Type", "application/json")
		spoof.Header.Set("X-Keyshard-Client-Addr", "10.9.9.9")
		spoof.Header.Set("X-Keyshard-Forwarded-By", "c")
		spoof.Header.Set("X-Keyshard-Forward-Sig", strings.Repeat("0", 64))
		res, err := s.http.Do(spoof)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("login through %s: %v %v", s.base, res, err)
		}
		res.Body.Close()
	}
	var spoofed, real int
	if err := ns.db.QueryRow(`SELECT count(*) FILTER (WHERE ip = '10.9.9.9'), count(*) FILTER (WHERE ip = '127.0.0.1') FROM t_`+id+`.sessions`).Scan(&spoofed, &real); err != nil {
		t.Fatal(err)
	}
	if spoofed > 0 || real < 2 {
		t.Fatalf("sessions from 10.9.9.9 (a header no node signed): %d; from 127.0.0.1: %d", spoofed, real)
	}

	// Refresh load through a, the owner, with every chain.
	var l1 refreshLoad
	l1.run("acme", chains, []*server{a})
	time.Sleep(time.Second)

	// a stops mid-load; the tenant moves to b through c; a resumes.
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	moved := c.do(context.Background(), "POST", "/admin/tenants/acme/move", tok, map[string]any{"node": "b"})
	if moved.Status != 200 {
		_ = a.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatalf("move to b while a is stopped: %d %s", moved.Status, moved.Raw)
	}
	var flip time.Time
	if err := ns.db.QueryRow(`SELECT clock_timestamp()`).Scan(&flip); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	l1.end(t, "through a around its pause and the move")
	t.Logf("a's fenced batches: %v", a.metric("keyshard_shard_fenced_total"))
	var late int
	if err := ns.db.QueryRow(`SELECT count(*) FROM public.ks_writes WHERE app = 'node-a' AND at > $1`, flip).Scan(&late); err != nil {
		t.Fatal(err)
	}
	if late > 0 {
		t.Fatalf("a wrote %d rows after the tenant moved to b", late)
	}
	var byB int
	_ = ns.db.QueryRow(`SELECT count(*) FROM public.ks_writes WHERE app = 'node-b'`).Scan(&byB)
	if byB == 0 {
		t.Fatalf("b never wrote after the move: the load did not go on through a's forwarding")
	}
	// Every acknowledged refresh is there: each chain's last token works.
	for i, ch := range chains {
		r := c.do(context.Background(), "POST", "/t/acme/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.get()})
		if r.Status != 200 {
			t.Fatalf("chain %d's last acknowledged token after the move: %d %s", i, r.Status, r.Raw)
		}
		ch.token = r.str("refresh_token")
	}
	// b dies under load: its tenant answers 503 with Retry-After on the
	// others, never a wrong answer, until an operator gives it to another
	// node; then the load goes on there.
	var l2 refreshLoad
	l2.run("acme", chains, []*server{a, c})
	time.Sleep(500 * time.Millisecond)
	b.kill()
	for _, s := range []*server{a, c} {
		r := s.do(context.Background(), "POST", "/t/acme/token?grant_type=refresh_token", "", map[string]any{"refresh_token": chains[0].get()})
		if r.Status != 503 || r.code() != "node_unavailable" || r.Header.Get("Retry-After") == "" {
			t.Fatalf("tenant of a dead node through %s: %d %s (Retry-After %q)", s.base, r.Status, r.Raw, r.Header.Get("Retry-After"))
		}
	}
	if err := waitFor(10*time.Second, func() bool {
		r := c.must(http.StatusOK, "GET", "/admin/nodes", tok, nil)
		for _, n := range r.Body["nodes"].([]any) {
			m := n.(map[string]any)
			if m["name"] == "b" {
				return m["alive"] == false
			}
		}
		return false
	}); err != nil {
		t.Fatalf("b's lease did not lapse: %v", err)
	}
	out, err := exec.Command(keyshardBin, "move", "acme", "--to-node", "c", "--catalog", ns.dsn, "--postgres-dsn", ns.dsn,
		"--data", t.TempDir()).CombinedOutput()
	if err != nil {
		t.Fatalf("keyshard move --to-node c: %v\n%s", err, out)
	}
	if err := waitFor(5*time.Second, func() bool {
		return a.do(context.Background(), "GET", "/t/acme/health", "", nil).Status == 200
	}); err != nil {
		t.Fatalf("tenant not served after reassignment: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	l2.end(t, "around b's death")
	if l2.retried.Load() == 0 {
		t.Fatal("no request saw b gone: the load did not overlap its death")
	}
	for i, ch := range chains {
		r := a.do(context.Background(), "POST", "/t/acme/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.get()})
		if r.Status != 200 {
			t.Fatalf("chain %d after b died and c took the tenant: %d %s", i, r.Status, r.Raw)
		}
	}

	// A SQLite tenant on a's own disk moves to c with its data, asked
	// through c (forwarded to a, which sends it), under refresh load
	// through every node; then on to a again, through a.
	a.must(http.StatusCreated, "POST", "/admin/tenants", tok, map[string]any{"slug": "local", "name": "L", "backend": "sqlite"})
	a.must(http.StatusOK, "POST", "/admin/tenants/local/approve", tok, nil)
	lchains := make([]*chain, 6)
	for i := range lchains {
		email := fmt.Sprintf("l%d@example.com", i)
		r := c.must(http.StatusOK, "POST", "/t/local/signup", "", map[string]any{"email": email, "password": "correct horse battery " + email})
		lchains[i] = &chain{token: r.str("refresh_token")}
	}
	var l3 refreshLoad
	l3.run("local", lchains, []*server{a, c})
	time.Sleep(500 * time.Millisecond)
	mv := c.must(http.StatusOK, "POST", "/admin/tenants/local/move", tok, map[string]any{"node": "c"})
	res, _ := mv.Body["result"].(map[string]any)
	t.Logf("SQLite tenant a→c under load: fenced %v ms, took %v ms, replayed %v statements, warnings %v",
		num(res["fenced_ns"])/1e6, num(res["took_ns"])/1e6, res["replayed"], res["warnings"])
	if tn, _ := mv.Body["tenant"].(map[string]any); tn["node"] != "c" {
		t.Fatalf("after the move: %s", mv.Raw)
	}
	time.Sleep(500 * time.Millisecond)
	// Back to a with the command, through c.
	cmd := exec.Command(keyshardBin, "move", "local", "--to-node", "a", "--url", c.base, "--data", t.TempDir())
	cmd.Env = append(cmd.Environ(), "KEYSHARD_ADMIN_TOKEN="+tok)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "is on node a") {
		t.Fatalf("keyshard move local --to-node a --url c: %v\n%s", err, out)
	} else {
		t.Logf("%s", bytes.TrimSpace(out))
	}
	time.Sleep(500 * time.Millisecond)
	l3.end(t, "the SQLite tenant around two moves")
	for i, ch := range lchains {
		r := c.do(context.Background(), "POST", "/t/local/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.get()})
		if r.Status != 200 {
			t.Fatalf("SQLite chain %d's last acknowledged token after two moves: %d %s", i, r.Status, r.Raw)
		}
		ch.token = r.str("refresh_token")
	}
	lid := c.must(http.StatusOK, "GET", "/admin/tenants/local", tok, nil).str("id")
	if _, err := os.Stat(shardPath(ns.nodeData["c"], lid)); !os.IsNotExist(err) {
		t.Fatalf("c's copy of the tenant that moved back to a is still there: %v", err)
	}
	if _, err := os.Stat(shardPath(ns.nodeData["a"], lid)); err != nil {
		t.Fatalf("a's copy of the tenant: %v", err)
	}

	// Drain a before maintenance: its tenants go to the others, its SQLite
	// one with its data; a then owns nothing.
	a.must(http.StatusCreated, "POST", "/admin/tenants", tok, map[string]any{"slug": "pg2", "name": "P", "backend": "postgres"})
	a.must(http.StatusOK, "POST", "/admin/tenants/pg2/approve", tok, nil)
	dr := a.must(http.StatusOK, "POST", "/admin/nodes/a/drain", tok, nil)
	for _, x := range dr.Body["tenants"].([]any) {
		if m := x.(map[string]any); m["error"] != nil {
			t.Fatalf("drain: %s", dr.Raw)
		}
	}
	for _, n := range c.must(http.StatusOK, "GET", "/admin/nodes", tok, nil).Body["nodes"].([]any) {
		if m := n.(map[string]any); m["name"] == "a" && num(m["tenants"]) != 0 {
			t.Fatalf("a still owns %v tenants after the drain: %s", m["tenants"], dr.Raw)
		}
	}
	for i, ch := range lchains {
		r := a.do(context.Background(), "POST", "/t/local/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.get()})
		if r.Status != 200 {
			t.Fatalf("SQLite chain %d after the drain: %d %s", i, r.Status, r.Raw)
		}
	}
}

// refreshLoad refreshes sessions' tokens through nodes until stopped, as clients
// would: a 200 replaces the token, a retryable 503 keeps it and waits.
type refreshLoad struct {
	stop        atomic.Bool
	wg          sync.WaitGroup
	ok, retried atomic.Int64
	mu          sync.Mutex
	others      []string // answers neither 200 nor a retryable 503
}

// retryable503 is a 503 a client retries: the tenant's node is away or
// changing (with Retry-After), or the write in flight lost its database
// session when a paused owner's session was ended (tenant_unavailable).
func retryable503(r resp) bool {
	switch {
	case r.Status != 503:
		return false
	case r.code() == "node_unavailable", r.code() == "tenant_moving":
		return r.Header.Get("Retry-After") != ""
	}
	return r.code() == "tenant_unavailable"
}

// run starts one client per chain, chain i through servers[i%len].
func (l *refreshLoad) run(slug string, chains []*chain, servers []*server) {
	for i, ch := range chains {
		l.wg.Add(1)
		go func(ch *chain, s *server) {
			defer l.wg.Done()
			for i := 0; i < 100000 && !l.stop.Load(); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				r := s.do(ctx, "POST", "/t/"+slug+"/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.get()})
				cancel()
				switch {
				case r.Status == 200 && r.str("refresh_token") != "":
					ch.mu.Lock()
					ch.token = r.str("refresh_token")
					ch.mu.Unlock()
					l.ok.Add(1)
				case retryable503(r):
					l.retried.Add(1)
					time.Sleep(20 * time.Millisecond)
				default:
					l.mu.Lock()
					l.others = append(l.others, fmt.Sprintf("%s via %s: %d %s %v", slug, s.base, r.Status, r.Raw, r.Err))
					l.mu.Unlock()
					time.Sleep(20 * time.Millisecond)
				}
			}
		}(ch, servers[i%len(servers)])
	}
}

// end stops the clients and fails t if any got an answer it should not.
func (l *refreshLoad) end(t *testing.T, what string) {
	t.Helper()
	l.stop.Store(true)
	l.wg.Wait()
	t.Logf("%s: %d refreshes ok, %d retryable 503, %d other", what, l.ok.Load(), l.retried.Load(), len(l.others))
	if len(l.others) > 0 {
		t.Fatalf("%s: answers other than 200 and a retryable 503: %v", what, l.others[:min(5, len(l.others))])
	}
}

func num(v any) float64 {
	f, _ := v.(float64)
	return f
}

// TestNodes_MovesUnderLoad: nine tenants (SQLite on the nodes' disks and
// PostgreSQL) under refresh load through random nodes while a mover keeps
// giving random tenants to random nodes. No acknowledged refresh is lost
// (each session's last token still refreshes), no request is answered by
// anything but 200 or a retryable 503, and no rotation is answered twice
// (a refresh token used twice outside its grace would revoke the session).
func TestNodes_MovesUnderLoad(t *testing.T) {
	ns := newNodeSet(t, "a", "b", "c")
	names := []string{"a", "b", "c"}
	tok := ns.adminToken
	type tenant struct {
		slug   string
		chains []*chain
	}
	var tenants []*tenant
	for i := 0; i < 9; i++ {
		s := ns.nodes[names[i%3]]
		backend := "sqlite"
		if i%3 == 2 {
			backend = "postgres"
		}
		slug := fmt.Sprintf("t%d", i)
		s.must(http.StatusCreated, "POST", "/admin/tenants", tok, map[string]any{"slug": slug, "name": slug, "backend": backend})
		s.must(http.StatusOK, "POST", "/admin/tenants/"+slug+"/approve", tok, nil)
		tn := &tenant{slug: slug}
		for j := 0; j < 2; j++ {
			email := fmt.Sprintf("u%d@example.com", j)
			r := s.must(http.StatusOK, "POST", "/t/"+slug+"/signup", "", map[string]any{"email": email, "password": "correct horse battery " + email})
			tn.chains = append(tn.chains, &chain{token: r.str("refresh_token")})
		}
		tenants = append(tenants, tn)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var ok, unavailable, moves, failedMoves atomic.Int64
	var mu sync.Mutex
	var others []string
	deadline := time.Now().Add(8 * time.Second)
	for w := 0; w < 12; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100000 && !stop.Load() && time.Now().Before(deadline); i++ {
				tn := tenants[(w+i)%len(tenants)]
				ch := tn.chains[(w/len(tenants)+i)%len(tn.chains)]
				ch.mu.Lock() // one request per session at a time, as a client would
				s := ns.nodes[names[(w+i)%3]]
				r := s.do(context.Background(), "POST", "/t/"+tn.slug+"/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.token})
				switch {
				case r.Status == 200 && r.str("refresh_token") != "":
					ch.token = r.str("refresh_token")
					ok.Add(1)
				case r.Status == 503:
					unavailable.Add(1)
				default:
					mu.Lock()
					others = append(others, fmt.Sprintf("%s via %s: %d %s %v", tn.slug, s.base, r.Status, r.Raw, r.Err))
					mu.Unlock()
				}
				ch.mu.Unlock()
			}
		}(w)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; time.Now().Before(deadline.Add(-time.Second)); i++ {
			tn := tenants[(i*5)%len(tenants)]
			via := ns.nodes[names[i%3]]
			owner := via.do(context.Background(), "GET", "/admin/tenants/"+tn.slug, tok, nil).str("node")
			to := names[(slices.Index(names, owner)+1+i%2)%3]
			r := via.do(context.Background(), "POST", "/admin/tenants/"+tn.slug+"/move", tok, map[string]any{"node": to})
			switch {
			case r.Status == 200:
				moves.Add(1)
			case r.Status == 400 && strings.Contains(string(r.Raw), "already on node"):
			default:
				failedMoves.Add(1)
				mu.Lock()
				others = append(others, fmt.Sprintf("move %s to %s via %s: %d %s", tn.slug, to, via.base, r.Status, r.Raw))
				mu.Unlock()
			}
			time.Sleep(150 * time.Millisecond)
		}
	}()
	wg.Wait()
	t.Logf("%d refreshes ok, %d answered 503, %d moves done, %d failed", ok.Load(), unavailable.Load(), moves.Load(), failedMoves.Load())
	if len(others) > 0 {
		t.Fatalf("%d unexpected answers, first: %v", len(others), others[:min(5, len(others))])
	}
	if moves.Load() < 5 {
		t.Fatalf("only %d moves happened", moves.Load())
	}
	for _, tn := range tenants {
		for i, ch := range tn.chains {
			r := ns.nodes["a"].do(context.Background(), "POST", "/t/"+tn.slug+"/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.token})
			if r.Status != 200 {
				t.Fatalf("%s session %d: its last acknowledged token after the moves: %d %s", tn.slug, i, r.Status, r.Raw)
			}
		}
	}
}

// TestNodes_RestartWhilePaused: node a is paused past its lease and a new
// process takes its name (a supervisor restarted it elsewhere). The new
// one moves each tenant's epoch on before serving it; when the old one
// wakes up, none of its writes lands.
func TestNodes_RestartWhilePaused(t *testing.T) {
	ns := newNodeSet(t, "a")
	old := ns.nodes["a"]
	tok := ns.adminToken
	r := old.must(http.StatusCreated, "POST", "/admin/tenants", tok, map[string]any{"slug": "acme", "name": "Acme"})
	id := r.str("id")
	old.must(http.StatusOK, "POST", "/admin/tenants/acme/approve", tok, nil)
	ns.recordWrites(id)
	chains := make([]*chain, 6)
	for i := range chains {
		email := fmt.Sprintf("u%d@example.com", i)
		r := old.must(http.StatusOK, "POST", "/t/acme/signup", "", map[string]any{"email": email, "password": "correct horse battery " + email})
		chains[i] = &chain{token: r.str("refresh_token")}
	}
	// Load on the old process; it is paused mid-load, with requests in it.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, ch := range chains {
		wg.Add(1)
		go func(ch *chain) {
			defer wg.Done()
			for i := 0; i < 100000 && !stop.Load(); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				r := old.do(ctx, "POST", "/t/acme/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.get()})
				cancel()
				if r.Status == 200 && r.str("refresh_token") != "" {
					ch.mu.Lock()
					ch.token = r.str("refresh_token")
					ch.mu.Unlock()
				} else {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}(ch)
	}
	time.Sleep(700 * time.Millisecond)
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // past its 2 s lease
	nu := ns.startAs("a", "node-a-new")
	// The new process serves the tenant: its first request moves the
	// epoch on (and ends the paused process's open transaction).
	r = nu.do(context.Background(), "POST", "/t/acme/token?grant_type=refresh_token", "", map[string]any{"refresh_token": chains[0].get()})
	if r.Status != 200 {
		t.Fatalf("the new process of node a: %d %s", r.Status, r.Raw)
	}
	chains[0].mu.Lock()
	chains[0].token = r.str("refresh_token")
	chains[0].mu.Unlock()
	var takeover time.Time
	if err := ns.db.QueryRow(`SELECT clock_timestamp()`).Scan(&takeover); err != nil {
		t.Fatal(err)
	}
	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	stop.Store(true)
	wg.Wait()
	var late int
	if err := ns.db.QueryRow(`SELECT count(*) FROM public.ks_writes WHERE app = 'node-a' AND at > $1`, takeover).Scan(&late); err != nil {
		t.Fatal(err)
	}
	if late > 0 {
		t.Fatalf("the paused process wrote %d rows after a new process took its name", late)
	}
	for i, ch := range chains {
		r := nu.do(context.Background(), "POST", "/t/acme/token?grant_type=refresh_token", "", map[string]any{"refresh_token": ch.get()})
		if r.Status != 200 {
			t.Fatalf("chain %d's last acknowledged token: %d %s", i, r.Status, r.Raw)
		}
	}
}

// TestNodes_ClientAddrHeader: behind a proxy that appends to
// X-Forwarded-For (every node run with --rate-limit-header), a request
// another node forwards to the tenant's owner keeps the client's address
// the proxy gave, not the proxy's nor the forwarding node's: the owner's
// session row says so. (The forwarding drops X-Forwarded-For: only the
// address the first node resolved and signed reaches the owner.)
func TestNodes_ClientAddrHeader(t *testing.T) {
	ns := newNodeSet(t)
	ns.env = append(ns.env, "KEYSHARD_RATE_LIMIT_HEADER=X-Forwarded-For", "KEYSHARD_TRUSTED_PROXIES=127.0.0.1")
	a, b := ns.start("a"), ns.start("b")
	tok := ns.adminToken
	id := a.must(http.StatusCreated, "POST", "/admin/tenants", tok, map[string]any{"slug": "acme", "name": "Acme"}).str("id")
	a.must(http.StatusOK, "POST", "/admin/tenants/acme/approve", tok, nil)
	for i, s := range []*server{a, b} { // the owner itself, then through b
		req, _ := http.NewRequest("POST", s.base+"/t/acme/signup",
			strings.NewReader(fmt.Sprintf(`{"email":"u%d@example.com","password":"correct horse battery"}`, i)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.1, 203.0.113.%d", 10+i))
		res, err := s.http.Do(req)
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("signup through %s: %v %v", s.base, res, err)
		}
		res.Body.Close()
	}
	rows, err := ns.db.Query(`SELECT u.email, s.ip FROM t_` + id + `.sessions s JOIN t_` + id + `.users u ON u.id = s.user_id ORDER BY u.email`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var email, ip string
		if err := rows.Scan(&email, &ip); err != nil {
			t.Fatal(err)
		}
		got = append(got, email+" "+ip)
	}
	if want := []string{"u0@example.com 203.0.113.10", "u1@example.com 203.0.113.11"}; !slices.Equal(got, want) {
		t.Fatalf("sessions %v, want %v", got, want)
	}
}
