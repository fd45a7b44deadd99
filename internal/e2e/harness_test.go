// Package e2e runs the keyshard binary as a child process and checks what
// survives crashes, faults and shutdowns, and what its logs reveal.
package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3"

	"github.com/keyshard/keyshard/internal/testbin"
)

// keyshardBin is the binary built once by TestMain (without -race: the
// server's speed is not what these tests measure).
var keyshardBin string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m, &keyshardBin))
}

func needBinary(tb testing.TB) {
	tb.Helper()
	testbin.Need(tb, keyshardBin)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cluster is one data directory served by successive keyshard processes.
type cluster struct {
	tb         testing.TB
	dataDir    string
	adminToken string
	extraArgs  []string
	env        []string // more KEYSHARD_* settings for its processes

	mu   sync.Mutex // guards logs
	logs bytes.Buffer
}

func newCluster(tb testing.TB, dataDir string, extraArgs ...string) *cluster {
	tb.Helper()
	needBinary(tb)
	if dataDir == "" {
		dataDir = filepath.Join(tb.TempDir(), "data")
	}
	return &cluster{tb: tb, dataDir: dataDir, adminToken: "adm_" + randHex(16), extraArgs: extraArgs}
}

// allLogs returns everything every process of the cluster wrote to stderr.
func (c *cluster) allLogs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.logs.String()
}

// server is one running keyshard process.
type server struct {
	c      *cluster
	cmd    *exec.Cmd
	base   string
	http   *http.Client
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

var addrLine = regexp.MustCompile(`msg="keyshard serving" addr=(\S+)`)

// start runs `keyshard serve` on a free loopback port and waits until it
// listens. The process is SIGKILLed at cleanup if still running.
func (c *cluster) start() *server {
	c.tb.Helper()
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", c.dataDir,
		"--argon2-memory-kib", "64", "--argon2-time", "1", "--shutdown-timeout", "20s"}, c.extraArgs...)
	cmd := exec.Command(keyshardBin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEYSHARD_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(append(env, "KEYSHARD_ADMIN_TOKEN="+c.adminToken), c.env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		c.tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.tb.Fatal(err)
	}
	s := &server{c: c, cmd: cmd, exited: make(chan struct{}),
		http: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.logs.WriteString(line + "\n")
			c.mu.Unlock()
			if m := addrLine.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		s.err = cmd.Wait()
		close(s.exited)
	}()
	c.tb.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = cmd.Process.Kill()
			<-s.exited
		}
		s.http.CloseIdleConnections()
	})
	select {
	case a := <-addr:
		s.base = "http://" + a
	case <-s.exited:
		c.tb.Fatalf("keyshard serve exited before listening: %v\n%s", s.err, c.allLogs())
	case <-time.After(60 * time.Second):
		c.tb.Fatalf("keyshard serve did not listen within a minute\n%s", c.allLogs())
	}
	return s
}

// kill SIGKILLs the server and waits for it to die.
func (s *server) kill() {
	s.c.tb.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	s.http.CloseIdleConnections()
}

// stop sends SIGTERM and fails unless the process exits 0 within a minute.
func (s *server) stop() {
	s.c.tb.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.c.tb.Fatalf("keyshard did not exit within a minute of SIGTERM")
	}
	s.http.CloseIdleConnections()
	if s.err != nil {
		s.c.tb.Fatalf("keyshard exited with %v after SIGTERM\n%s", s.err, s.c.allLogs())
	}
}

// alive reports whether the process is still running.
func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// resp is a decoded response; Status 0 means no answer (connection error).
type resp struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    []byte
	Err    error
}

func (r resp) str(key string) string {
	s, _ := r.Body[key].(string)
	return s
}

// code returns the stable error code of an error answer, in either shape.
func (r resp) code() string {
	if c := r.Header.Get("X-Sb-Error-Code"); c != "" {
		return c
	}
	if c, ok := r.Body["error_code"].(string); ok {
		return c
	}
	return r.str("code")
}

// do sends a request; body is JSON-encoded unless a string or []byte.
func (s *server) do(ctx context.Context, method, path, bearer string, body any) resp {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return resp{Err: err}
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	if err != nil {
		return resp{Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := s.http.Do(req)
	if err != nil {
		return resp{Err: err}
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	out := resp{Status: res.StatusCode, Header: res.Header, Raw: raw, Err: err}
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &out.Body)
	}
	return out
}

// must sends a request and fails unless it answers want.
func (s *server) must(want int, method, path, bearer string, body any) resp {
	s.c.tb.Helper()
	r := s.do(context.Background(), method, path, bearer, body)
	if r.Status != want {
		s.c.tb.Fatalf("%s %s: %d %v %s, want %d", method, path, r.Status, r.Err, r.Raw, want)
	}
	return r
}

// tenantInfo is an approved tenant.
type tenantInfo struct {
	Slug, ID string
}

// createTenants creates and approves n tenants named prefix-0 … prefix-(n-1).
func (s *server) createTenants(prefix string, n int) []tenantInfo {
	s.c.tb.Helper()
	out := make([]tenantInfo, n)
	for i := range out {
		slug := fmt.Sprintf("%s-%d", prefix, i)
		r := s.must(http.StatusCreated, "POST", "/admin/tenants", s.c.adminToken, map[string]any{"slug": slug, "name": slug})
		s.must(http.StatusOK, "POST", "/admin/tenants/"+slug+"/approve", s.c.adminToken, nil)
		out[i] = tenantInfo{Slug: slug, ID: r.str("id")}
		if out[i].ID == "" {
			s.c.tb.Fatalf("create tenant %s: no id in %s", slug, r.Raw)
		}
	}
	return out
}

// metric returns the sum of the samples of a Prometheus metric whose line
// starts with prefix (name, optionally with labels), or -1 if absent.
func (s *server) metric(prefix string) float64 {
	s.c.tb.Helper()
	r := s.must(http.StatusOK, "GET", "/metrics", "", nil)
	sum, found := 0.0, false
	for _, l := range strings.Split(string(r.Raw), "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		rest := strings.TrimPrefix(l, prefix)
		if rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue // a longer name
		}
		var v float64
		f := strings.Fields(l)
		if _, err := fmt.Sscan(f[len(f)-1], &v); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// shardPath is the file of a tenant's shard (layout of shard/sqlite.Path).
func shardPath(dataDir, id string) string {
	return filepath.Join(dataDir, "shards", id[0:2], id[2:4], id+".db")
}

// db is a read-only connection to a shard file of a stopped server.
type db struct {
	tb   testing.TB
	conn *sqlite3.Conn
	path string
}

func openDB(tb testing.TB, path string) *db {
	tb.Helper()
	c, err := sqlite3.OpenFlags(path, sqlite3.OPEN_READONLY)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	return &db{tb: tb, conn: c, path: path}
}

func (d *db) close() { _ = d.conn.Close() }

// rows runs q with text arguments and returns every row's columns as text.
func (d *db) rows(q string, args ...string) [][]string {
	d.tb.Helper()
	st, _, err := d.conn.Prepare(q)
	if err != nil {
		d.tb.Fatalf("%s: prepare %q: %v", d.path, q, err)
	}
	defer st.Close()
	for i, a := range args {
		if err := st.BindText(i+1, a); err != nil {
			d.tb.Fatal(err)
		}
	}
	var out [][]string
	for st.Step() {
		row := make([]string, st.ColumnCount())
		for i := range row {
			row[i] = st.ColumnText(i)
		}
		out = append(out, row)
	}
	if err := st.Err(); err != nil {
		d.tb.Fatalf("%s: %q: %v", d.path, q, err)
	}
	return out
}

// one returns the first column of the first row, "" if none.
func (d *db) one(q string, args ...string) string {
	d.tb.Helper()
	r := d.rows(q, args...)
	if len(r) == 0 || len(r[0]) == 0 {
		return ""
	}
	return r[0][0]
}

// integrity fails the test unless PRAGMA integrity_check says ok.
func (d *db) integrity() {
	d.tb.Helper()
	if got := d.one("PRAGMA integrity_check"); got != "ok" {
		d.tb.Errorf("%s: integrity_check = %q", d.path, got)
	}
}

// errTimeout marks a bounded wait that ran out.
var errTimeout = errors.New("timed out")

// waitFor polls cond every 20 ms for at most d.
func waitFor(d time.Duration, cond func() bool) error {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return nil
		}
	}
	return errTimeout
}
