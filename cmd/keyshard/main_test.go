package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/internal/testbin"
)

// keyshardBin is the binary built by TestMain; empty when no go tool was
// found.
var keyshardBin string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m, &keyshardBin))
}

func needBinary(tb testing.TB) {
	tb.Helper()
	testbin.Need(tb, keyshardBin)
}

// baseEnv is the test's environment without KEYSHARD_ variables, so that
// the caller's settings cannot leak into the commands.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYSHARD_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

type result struct {
	code           int
	stdout, stderr string
}

// keyshard runs the binary to completion (at most a minute) with env added
// to baseEnv, in directory dir ("" for a fresh temporary one).
func keyshard(tb testing.TB, dir string, env []string, args ...string) result {
	tb.Helper()
	needBinary(tb)
	if dir == "" {
		dir = tb.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, keyshardBin, args...)
	cmd.Dir = dir
	cmd.Env = baseEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		tb.Fatalf("keyshard %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		tb.Fatalf("keyshard %s: still running after a minute", strings.Join(args, " "))
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// ok runs keyshard and fails unless it exits 0.
func ok(tb testing.TB, env []string, args ...string) result {
	tb.Helper()
	r := keyshard(tb, "", env, args...)
	if r.code != 0 {
		tb.Fatalf("keyshard %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// tenantJSON runs a tenant action printing a tenant and decodes it.
func tenantJSON(tb testing.TB, args ...string) engine.Tenant {
	tb.Helper()
	r := ok(tb, nil, args...)
	var t engine.Tenant
	if err := json.Unmarshal([]byte(r.stdout), &t); err != nil {
		tb.Fatalf("keyshard %s: output is not a tenant: %v\n%s", strings.Join(args, " "), err, r.stdout)
	}
	return t
}

// listed returns the `tenant list` rows as slug → status.
func listed(tb testing.TB, dataDir string) map[string]string {
	tb.Helper()
	r := ok(tb, nil, "tenant", "list", "--data", dataDir)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "SLUG") {
		tb.Fatalf("tenant list: no header:\n%s", r.stdout)
	}
	out := map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 4 {
			tb.Fatalf("tenant list: short row %q", l)
		}
		out[f[0]] = f[2]
	}
	return out
}

// shardFiles lists the regular files under dataDir/shards.
func shardFiles(tb testing.TB, dataDir string) []string {
	tb.Helper()
	var out []string
	root := filepath.Join(dataDir, "shards")
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestTenant_Commands(t *testing.T) {
	needBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	var id string
	t.Run("Create", func(t *testing.T) {
		tn := tenantJSON(t, "tenant", "create", "--slug", "acme", "--name", "Acme Inc.", "--data", data)
		if tn.Slug != "acme" || tn.Name != "Acme Inc." || tn.Status != engine.StatusPending || tn.Backend != engine.BackendSQLite || !engine.ValidTenantID(tn.ID) {
			t.Fatalf("created %+v", tn)
		}
		id = tn.ID
		if fs := shardFiles(t, data); len(fs) != 0 {
			t.Fatalf("a pending tenant has files: %v", fs)
		}
		// The slug may also be the argument.
		if tn := tenantJSON(t, "tenant", "create", "--data", data, "beta"); tn.Slug != "beta" || tn.Name != "beta" {
			t.Fatalf("create by argument: %+v", tn)
		}
	})
	t.Run("Approve", func(t *testing.T) {
		tn := tenantJSON(t, "tenant", "approve", "--data", data, "acme")
		if tn.Status != engine.StatusActive || tn.ApprovedAt == nil || tn.ID != id {
			t.Fatalf("approved %+v", tn)
		}
		// The shard, and the WAL and its index that its writer's close
		// may leave beside it (a small WAL is not checkpointed at close),
		// the WAL emptied when the command's server part stopped.
		fs := shardFiles(t, data)
		names := map[string]bool{}
		for _, f := range fs {
			names[filepath.Base(f)] = true
			if fi, err := os.Stat(f); err == nil && strings.HasSuffix(f, "-wal") && fi.Size() != 0 {
				t.Errorf("after approve %s holds %d bytes: the stopping command did not checkpoint it", filepath.Base(f), fi.Size())
			}
		}
		delete(names, id+".db-wal")
		delete(names, id+".db-shm")
		if len(names) != 1 || !names[id+".db"] {
			t.Fatalf("shard files after approve: %v, want %s.db and at most its -wal and -shm", fs, id)
		}
	})
	t.Run("List", func(t *testing.T) {
		got := listed(t, data)
		if len(got) != 2 || got["acme"] != "active" || got["beta"] != "pending" {
			t.Fatalf("list = %v", got)
		}
		r := ok(t, nil, "tenant", "list", "--data", data)
		if !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "Acme Inc.") {
			t.Fatalf("list lacks id or name:\n%s", r.stdout)
		}
	})
	t.Run("Show", func(t *testing.T) {
		for _, key := range []string{"acme", id} {
			tn := tenantJSON(t, "tenant", "show", "--data", data, key)
			if tn.ID != id || tn.Status != engine.StatusActive {
				t.Fatalf("show %s: %+v", key, tn)
			}
		}
	})
	t.Run("Suspend", func(t *testing.T) {
		if tn := tenantJSON(t, "tenant", "suspend", "--data", data, "acme"); tn.Status != engine.StatusSuspended {
			t.Fatalf("suspended %+v", tn)
		}
		if got := listed(t, data); got["acme"] != "suspended" {
			t.Fatalf("list after suspend = %v", got)
		}
	})
	t.Run("Resume", func(t *testing.T) {
		if tn := tenantJSON(t, "tenant", "resume", "--data", data, id); tn.Status != engine.StatusActive {
			t.Fatalf("resumed %+v", tn)
		}
	})
	t.Run("Errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"tenant", "create", "--slug", "acme"},    // taken
			{"tenant", "create", "--slug", "../evil"}, // invalid
			{"tenant", "create", "--slug", "Acme"},    // invalid
			{"tenant", "create"},                      // no slug
			{"tenant", "approve", "acme"},             // active already
			{"tenant", "resume", "acme"},              // active already
			{"tenant", "suspend", "beta"},             // pending
			{"tenant", "approve", "nope"},             // unknown
			{"tenant", "show", "nope"},                // unknown
			{"tenant", "create", "--slug", "x", "--backend", "oracle"},
			{"tenant", "frobnicate"},
			{"tenant"},
		} {
			r := keyshard(t, "", nil, append(args, "--data", data)...)
			if r.code != 1 || !strings.Contains(r.stderr, "keyshard:") {
				t.Errorf("keyshard %s: exit %d, stderr %q; want exit 1 with an error", strings.Join(args, " "), r.code, r.stderr)
			}
		}
		if got := listed(t, data); len(got) != 2 || got["acme"] != "active" || got["beta"] != "pending" {
			t.Fatalf("list after refused commands = %v", got)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(data), "evil")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a bad slug created a file outside the data dir: %v", err)
		}
		if r := keyshard(t, "", nil, "nope"); r.code != 2 {
			t.Errorf("unknown command: exit %d, want 2", r.code)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		r := ok(t, nil, "tenant", "delete", "--data", data, "acme")
		if !strings.Contains(r.stdout, "deleted acme") {
			t.Fatalf("delete output %q", r.stdout)
		}
		if fs := shardFiles(t, data); len(fs) != 0 {
			t.Fatalf("files after delete: %v", fs)
		}
		if got := listed(t, data); len(got) != 1 || got["beta"] != "pending" {
			t.Fatalf("list after delete = %v", got)
		}
	})
}

// Flags may follow the slug; they must never be ignored in favour of the
// default ./data (a delete would hit whatever tenant ./data holds).
func TestTenant_FlagsAfterSlug(t *testing.T) {
	needBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	cwd := t.TempDir()
	run := func(args ...string) result {
		t.Helper()
		return keyshard(t, cwd, nil, args...)
	}
	if r := run("tenant", "create", "acme", "--data", data); r.code != 0 {
		t.Fatalf("create: exit %d: %s", r.code, r.stderr)
	}
	for _, action := range []string{"approve", "suspend", "resume", "show"} {
		if r := run("tenant", action, "acme", "--data", data); r.code != 0 {
			t.Fatalf("%s acme --data: exit %d: %s", action, r.code, r.stderr)
		}
	}
	if r := run("tenant", "show", "acme", "extra", "--data", data); r.code != 1 || !strings.Contains(r.stderr, "unexpected") {
		t.Fatalf("extra argument: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := run("tenant", "delete", "acme", "--data", data); r.code != 0 {
		t.Fatalf("delete acme --data: exit %d: %s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(cwd, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the default ./data was created: %v", err)
	}
	if got := listed(t, data); len(got) != 0 {
		t.Fatalf("list after delete = %v", got)
	}
}

func TestTenant_DataEnv(t *testing.T) {
	needBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	cwd := t.TempDir()
	t.Run("Honored", func(t *testing.T) {
		r := keyshard(t, cwd, []string{"KEYSHARD_DATA=" + data}, "tenant", "create", "--slug", "acme")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(data, "catalog.db")); err != nil {
			t.Fatalf("KEYSHARD_DATA ignored: %v", err)
		}
		if _, err := os.Stat(filepath.Join(cwd, "data")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the default ./data was used: %v", err)
		}
		if got := listed(t, data); got["acme"] != "pending" {
			t.Fatalf("list = %v", got)
		}
		r = keyshard(t, cwd, []string{"KEYSHARD_DATA=" + data}, "tenant", "approve", "acme")
		if r.code != 0 {
			t.Fatalf("approve via KEYSHARD_DATA: exit %d: %s", r.code, r.stderr)
		}
	})
	t.Run("FlagWins", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other")
		r := keyshard(t, cwd, []string{"KEYSHARD_DATA=" + other}, "tenant", "create", "--slug", "beta", "--data", data)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("KEYSHARD_DATA used although --data was given: %v", err)
		}
		if got := listed(t, data); got["beta"] != "pending" || got["acme"] != "active" {
			t.Fatalf("list = %v", got)
		}
	})
	t.Run("BadValue", func(t *testing.T) {
		r := keyshard(t, cwd, []string{"KEYSHARD_DATA=" + data, "KEYSHARD_CACHE_CAPACITY=lots"}, "tenant", "list")
		if r.code != 1 || !strings.Contains(r.stderr, "KEYSHARD_CACHE_CAPACITY") {
			t.Fatalf("bad env value: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

func TestMigrate_All(t *testing.T) {
	needBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	for _, slug := range []string{"acme", "beta"} {
		ok(t, nil, "tenant", "create", "--slug", slug, "--data", data)
		ok(t, nil, "tenant", "approve", slug, "--data", data)
	}
	ok(t, nil, "tenant", "suspend", "beta", "--data", data)
	pending := tenantJSON(t, "tenant", "create", "--slug", "later", "--data", data)
	before := shardFiles(t, data)

	for run := 1; run <= 2; run++ {
		r := ok(t, nil, "migrate", "--all", "--data", data, "--quiet")
		if !strings.Contains(r.stdout, "0 failed") || !strings.Contains(r.stdout, "migrated 2 shards") {
			t.Fatalf("run %d: output %q", run, r.stdout)
		}
		if _, err := os.Stat(filepath.Join(data, "migrate-failures.json")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("run %d: failure record left: %v", run, err)
		}
		after := shardFiles(t, data)
		if strings.Join(after, ",") != strings.Join(before, ",") {
			t.Fatalf("run %d: shard files %v, before %v", run, after, before)
		}
		for _, f := range after {
			if strings.Contains(f, pending.ID) {
				t.Fatalf("run %d: migrate created the pending tenant's shard %s", run, f)
			}
		}
	}
	if got := listed(t, data); got["acme"] != "active" || got["beta"] != "suspended" || got["later"] != "pending" {
		t.Fatalf("statuses after migrate: %v", got)
	}
	t.Run("RetryFailedNothing", func(t *testing.T) {
		r := ok(t, nil, "migrate", "--all", "--retry-failed", "--data", data, "--quiet")
		if !strings.Contains(r.stdout, "migrated 0 shards, 0 failed") {
			t.Fatalf("output %q", r.stdout)
		}
	})
	t.Run("NeedsAll", func(t *testing.T) {
		if r := keyshard(t, "", nil, "migrate", "--data", data); r.code != 1 || !strings.Contains(r.stderr, "--all") {
			t.Fatalf("migrate without --all: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// serveProc is a running `keyshard serve`.
type serveProc struct {
	url    string
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when the process exited
}

// startServe starts `keyshard serve` on a free loopback port and waits until
// /healthz answers. The process is killed at cleanup if still running.
func startServe(tb testing.TB, dataDir string, env []string) *serveProc {
	tb.Helper()
	needBinary(tb)
	var last string
	for attempt := 0; attempt < 3; attempt++ {
		// Pick a free port: another process may take it before the server
		// does, so a failed bind is retried with a new one.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()

		p := &serveProc{url: "http://" + addr, stderr: &syncBuffer{}, done: make(chan struct{})}
		p.cmd = exec.Command(keyshardBin, "serve", "--addr", addr, "--data", dataDir, "--shutdown-timeout", "20s")
		p.cmd.Dir = tb.TempDir()
		p.cmd.Env = baseEnv(env...)
		p.cmd.Stdout, p.cmd.Stderr = io.Discard, p.stderr
		if err := p.cmd.Start(); err != nil {
			tb.Fatal(err)
		}
		go func() {
			_ = p.cmd.Wait()
			close(p.done)
		}()
		tb.Cleanup(func() {
			select {
			case <-p.done:
			default:
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		})
		if p.waitHealthy(tb) {
			return p
		}
		last = p.stderr.String()
		if !strings.Contains(last, "address already in use") {
			break
		}
	}
	tb.Fatalf("keyshard serve did not start:\n%s", last)
	return nil
}

// waitHealthy polls /healthz for at most 30s; false if the process exited.
func (p *serveProc) waitHealthy(tb testing.TB) bool {
	tb.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	for i := 0; i < 300; i++ {
		select {
		case <-p.done:
			return false
		default:
		}
		resp, err := c.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("/healthz did not answer within 30s:\n%s", p.stderr.String())
	return false
}

// stop sends SIGTERM and returns the exit code (at most 30s later).
func (p *serveProc) stop(tb testing.TB) int {
	tb.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		tb.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		tb.Fatalf("serve still running 30s after SIGTERM:\n%s", p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// call sends an HTTP request to the server and returns status and body.
func (p *serveProc) call(tb testing.TB, method, path, token string, body any) (int, []byte) {
	tb.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, p.url+path, r)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestServe(t *testing.T) {
	needBinary(t)
	const token = "serve-test-token-4f1c"
	data := filepath.Join(t.TempDir(), "data")
	p := startServe(t, data, []string{"KEYSHARD_ADMIN_TOKEN=" + token})

	t.Run("AdminAPI", func(t *testing.T) {
		if code, b := p.call(t, http.MethodPost, "/admin/tenants", token, map[string]string{"slug": "acme"}); code != http.StatusCreated {
			t.Fatalf("create: %d %s", code, b)
		}
		if code, b := p.call(t, http.MethodPost, "/admin/tenants/acme/approve", token, nil); code != http.StatusOK {
			t.Fatalf("approve: %d %s", code, b)
		}
		if code, b := p.call(t, http.MethodGet, "/t/acme/health", "", nil); code != http.StatusOK {
			t.Fatalf("health: %d %s", code, b)
		}
		if code, _ := p.call(t, http.MethodGet, "/admin/tenants", "wrong", nil); code != http.StatusUnauthorized {
			t.Fatalf("wrong token: %d", code)
		}
	})
	t.Run("SeesCLIChanges", func(t *testing.T) {
		// The CLI writes the catalog directly; the server polls it.
		ok(t, nil, "tenant", "create", "--slug", "beta", "--data", data)
		ok(t, nil, "tenant", "approve", "beta", "--data", data)
		for i := 0; ; i++ {
			code, _ := p.call(t, http.MethodGet, "/t/beta/health", "", nil)
			if code == http.StatusOK {
				break
			}
			if i == 100 {
				t.Fatalf("the server did not see the CLI's tenant within 10s: %d", code)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("SIGTERM", func(t *testing.T) {
		if code := p.stop(t); code != 0 {
			t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, p.stderr.String())
		}
		log := p.stderr.String()
		if !strings.Contains(log, "keyshard stopped") || strings.Contains(log, "level=ERROR") {
			t.Fatalf("shutdown log:\n%s", log)
		}
		if got := listed(t, data); got["acme"] != "active" || got["beta"] != "active" {
			t.Fatalf("catalog after shutdown: %v", got)
		}
	})
}

func TestServe_AdminTokenFile(t *testing.T) {
	needBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	p := startServe(t, data, nil)
	path := filepath.Join(data, "admin-token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("admin-token not written: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("admin-token mode %o, want 600", perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	if len(token) < 32 {
		t.Fatalf("admin token %q is too short", token)
	}
	if code, body := p.call(t, http.MethodPost, "/admin/tenants", token, map[string]string{"slug": "acme"}); code != http.StatusCreated {
		t.Fatalf("create with the file's token: %d %s", code, body)
	}
	if code, _ := p.call(t, http.MethodGet, "/admin/tenants", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, p.stderr.String())
	}
	log := p.stderr.String()
	if strings.Contains(log, token) {
		t.Fatalf("the server log contains the admin token:\n%s", log)
	}
	if !strings.Contains(log, "generated the platform admin token") {
		t.Fatalf("the log does not say where the token is:\n%s", log)
	}

	t.Run("Reused", func(t *testing.T) {
		p := startServe(t, data, nil)
		defer p.stop(t)
		if code, body := p.call(t, http.MethodGet, "/admin/tenants/acme", token, nil); code != http.StatusOK {
			t.Fatalf("the token from the file is not accepted after a restart: %d %s", code, body)
		}
		if b2, _ := os.ReadFile(path); strings.TrimSpace(string(b2)) != token {
			t.Fatal("the admin-token file was rewritten on restart")
		}
		if strings.Contains(p.stderr.String(), token) {
			t.Fatalf("the server log contains the admin token:\n%s", p.stderr.String())
		}
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestTenant_NoDataDir: a command that acts on a data directory, run where
// there is none and without --data, refuses instead of creating ./data.
func TestTenant_NoDataDir(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"tenant", "list"}, {"tenant", "create", "--slug", "acme"}, {"migrate", "--all"}} {
		r := keyshard(t, dir, nil, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "no Keyshard data directory") {
			t.Fatalf("%v outside a data directory: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("./data was created: %v", err)
	}
	// Named, it is made; and then ./data is found without --data.
	if r := keyshard(t, dir, nil, "tenant", "create", "--slug", "acme", "--data", "data"); r.code != 0 {
		t.Fatalf("with --data: exit %d %s", r.code, r.stderr)
	}
	if r := keyshard(t, dir, nil, "tenant", "list"); r.code != 0 || !strings.Contains(r.stdout, "acme") {
		t.Fatalf("in a directory with ./data: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := keyshard(t, dir, []string{"KEYSHARD_DATA=" + filepath.Join(dir, "data")}, "tenant", "list"); r.code != 0 {
		t.Fatalf("with KEYSHARD_DATA: exit %d %s", r.code, r.stderr)
	}
}
