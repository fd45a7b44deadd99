//go:build linux

package e2e_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestFaults_Shard damages the shard files of some tenants while the
// server is stopped (unreadable, garbage header, garbage pages), restarts
// it, and checks: those tenants answer 503 tenant_unavailable, the others
// keep working, the process stays up, and the fault shows in /metrics and
// the logs.
func TestFaults_Shard(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	c := newCluster(t, "")
	s := c.start()
	tenants := s.createTenants("fault", 5)
	for _, tn := range tenants {
		s.must(200, "POST", "/t/"+tn.Slug+"/signup", "", map[string]any{"email": "a@example.com", "password": "password1"})
	}
	s.stop()

	faults := map[string]func(path string){
		"unreadable": func(path string) {
			if os.Geteuid() != 0 {
				if err := os.Chmod(path, 0); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = os.Chmod(path, 0o600) })
				return
			}
			// root reads a mode-000 file: make the path a directory instead.
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		},
		"corrupt-header": func(path string) { overwrite(t, path, 0, 100) },
		"corrupt-pages":  func(path string) { overwrite(t, path, 4096, -1) },
	}
	victims := map[string]string{} // slug → fault
	i := 0
	for name, f := range faults {
		tn := tenants[i]
		i++
		f(shardPath(c.dataDir, tn.ID))
		victims[tn.Slug] = name
	}

	s = c.start()
	before := s.metric("keyshard_sqlite_storage_errors_total")
	for round := 0; round < 2; round++ { // the second round finds the fault again: no cached half-open shard
		for _, tn := range tenants {
			fault, bad := victims[tn.Slug]
			base := "/t/" + tn.Slug
			h := s.do(t.Context(), "GET", base+"/health", "", nil)
			login := s.do(t.Context(), "POST", base+"/token?grant_type=password", "", map[string]any{"email": "a@example.com", "password": "password1"})
			signup := s.do(t.Context(), "POST", base+"/signup", "", map[string]any{"email": fmt.Sprintf("r%d@example.com", round), "password": "password1"})
			if !bad {
				if h.Status != 200 || login.Status != 200 || signup.Status != 200 {
					t.Errorf("healthy tenant %s beside damaged ones: health %d, login %d %s, signup %d %s", tn.Slug, h.Status, login.Status, login.Raw, signup.Status, signup.Raw)
				}
				continue
			}
			for what, r := range map[string]resp{"health": h, "login": login, "signup": signup} {
				if r.Status != 503 || r.code() != "tenant_unavailable" || r.Header.Get("Retry-After") == "" {
					t.Errorf("%s tenant %s, %s: %d %q %s, want 503 tenant_unavailable with Retry-After", fault, tn.Slug, what, r.Status, r.code(), r.Raw)
				}
			}
		}
	}
	if !s.alive() {
		t.Fatal("the server exited")
	}
	if after := s.metric("keyshard_sqlite_storage_errors_total"); after <= 0 || after < before {
		t.Errorf("keyshard_sqlite_storage_errors_total = %v (was %v at start): the faults are not in /metrics", after, before)
	}
	if m := s.must(200, "GET", "/metrics", "", nil); bytes.Contains(m.Raw, []byte("fault-")) {
		t.Error("/metrics names a tenant")
	}
	s.stop()
	if n := strings.Count(c.allLogs(), "tenant storage unavailable"); n < len(victims) {
		t.Errorf("%d log lines about unavailable storage, want at least %d\n%s", n, len(victims), c.allLogs())
	}
	t.Logf("faults injected: %d (%v); healthy tenants kept serving", len(victims), victims)
}

// overwrite writes garbage over the file from off for n bytes (n < 0: to
// the end).
func overwrite(tb testing.TB, path string, off, n int64) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	if n < 0 {
		n = fi.Size() - off
	}
	if n <= 0 {
		tb.Fatalf("%s: %d bytes, nothing to overwrite at %d", path, fi.Size(), off)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	pat := []byte("\xde\xad\xbe\xef garbage ")
	junk := bytes.Repeat(pat, int(n)/len(pat)+1)[:n]
	if _, err := f.WriteAt(junk, off); err != nil {
		tb.Fatal(err)
	}
}

// TestFaults_FullDisk serves from a small tmpfs, fills it, and checks that
// writes answer 503 tenant_unavailable (never 500, never a false success),
// reads keep working, the process stays up, and writes resume once space
// is freed. Needs root and mount(2); skipped otherwise.
func TestFaults_FullDisk(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	mnt := t.TempDir()
	if os.Geteuid() != 0 {
		t.Skip("full-filesystem fault needs root to mount a small tmpfs")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("full-filesystem fault needs mount -t tmpfs, which failed: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	c := newCluster(t, filepath.Join(mnt, "data"))
	s := c.start()
	tenants := s.createTenants("full", 2)
	acked := map[string]string{} // email → tenant slug
	for i, tn := range tenants {
		email := fmt.Sprintf("before%d@example.com", i)
		s.must(200, "POST", "/t/"+tn.Slug+"/signup", "", map[string]any{"email": email, "password": "password1"})
		acked[email] = tn.Slug
	}
	filler := filepath.Join(mnt, "filler")
	fill(t, filler)

	refused := 0
	for i := 0; i < 300 && refused < 5; i++ {
		tn := tenants[i%2]
		email := fmt.Sprintf("full%d@example.com", i)
		r := s.do(t.Context(), "POST", "/t/"+tn.Slug+"/signup", "", map[string]any{"email": email, "password": "password1", "data": map[string]any{"pad": strings.Repeat("x", 4000)}})
		switch {
		case r.Status == 200:
			acked[email] = tn.Slug // the WAL had room left
		case r.Status == 503 && r.code() == "tenant_unavailable":
			refused++
		default:
			t.Fatalf("signup on a full disk: %d %q %v %s, want 200 or 503 tenant_unavailable", r.Status, r.code(), r.Err, r.Raw)
		}
	}
	if refused == 0 {
		t.Fatal("no write was refused on a full filesystem: the fault was not injected")
	}
	for _, tn := range tenants { // reads still work
		s.must(200, "GET", "/t/"+tn.Slug+"/health", "", nil)
	}
	if !s.alive() {
		t.Fatal("the server exited on a full filesystem")
	}
	// The driver reports ENOSPC as a disk I/O error (kind ioerr), not full.
	if v := s.metric("keyshard_sqlite_storage_errors_total"); v <= 0 {
		t.Errorf("full-disk errors in /metrics: %v\n%s", v, c.allLogs())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for i, tn := range tenants { // writes resume without a restart
		email := fmt.Sprintf("after%d@example.com", i)
		r := s.do(t.Context(), "POST", "/t/"+tn.Slug+"/signup", "", map[string]any{"email": email, "password": "password1"})
		if r.Status != 200 {
			t.Fatalf("signup after space was freed: %d %s", r.Status, r.Raw)
		}
		acked[email] = tn.Slug
	}
	s.stop()
	for _, tn := range tenants {
		d := openDB(t, shardPath(c.dataDir, tn.ID))
		d.integrity()
		for email, slug := range acked {
			if slug == tn.Slug && d.one(`SELECT count(*) FROM users WHERE email = ?`, email) != "1" {
				t.Errorf("tenant %s: acknowledged signup %s lost", slug, email)
			}
		}
		d.close()
	}
	if !strings.Contains(c.allLogs(), "tenant storage unavailable") {
		t.Error("no log line about the full filesystem")
	}
	t.Logf("full filesystem: %d writes refused with 503, %d acknowledged writes verified", refused, len(acked))
}

// fill writes path until the filesystem is full (bounded by its size).
func fill(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64*1024)
	for i := 0; i < 100_000; i++ {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			tb.Fatal(err)
		}
	}
	tb.Fatal("the filesystem did not fill")
}
