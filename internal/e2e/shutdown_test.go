//go:build unix

package e2e_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestShutdown_SIGTERM sends SIGTERM under a load that includes failed
// logins (whose audit events wait in the shards' deferred buffers) and
// checks, after exit 0, that every acknowledged write and every answered
// failed login's event is on disk.
func TestShutdown_SIGTERM(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	seed := envInt(t, seedEnv, uint64(time.Now().UnixNano()))
	t.Logf("shutdown test seed %d (replay with %s=%d)", seed, seedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	const rounds = 3
	c := newCluster(t, "")
	s := c.start()
	tenants := s.createTenants("term", 8)
	l := newLoad(tenants, seed)
	failed := 0
	for k := 0; k < rounds; k++ {
		ctx, cancel := doneAfter(time.Minute)
		done := make(chan struct{})
		go func() {
			defer close(done)
			l.run(ctx, s, 12, 3000, 3)
		}()
		time.Sleep(time.Duration(200+rng.IntN(800)) * time.Millisecond)
		s.stop() // fails unless exit 0
		cancel()
		<-done
		l.verify(t, c.dataDir, k == rounds-1, true)
		if t.Failed() {
			t.Fatalf("round %d (seed %d): acknowledged writes or buffered audit events lost at shutdown", k, seed)
		}
		s = c.start()
	}
	s.stop()
	for _, u := range l.users {
		failed += u.failedAcked
	}
	t.Logf("SIGTERM rounds: %d; writes acknowledged: %d; failed-login events checked: %d", rounds, l.acked, failed)
	if failed == 0 {
		t.Fatal("no failed login was answered: the buffered-audit check did not run")
	}
	scanSecrets(t, c.allLogs(), l.secretsOf(t, c))
}

// TestShutdown_SecondSignal: a request in flight holds the drain of a
// SIGTERM (up to --shutdown-timeout, 20 s here); a second SIGTERM, once the
// drain has begun or 20 ms after the first, stops the process at once,
// with SIGTERM's exit status, and the data stays whole: the next start
// serves the tenant and logs in the user signed up before. (Two signals
// sent with no gap can merge into one, in the kernel or in Go's runtime,
// before the process sees the first: POSIX does not queue them.)
func TestShutdown_SecondSignal(t *testing.T) {
	needBinary(t)
	if testing.Short() {
		t.Skip("runs keyshard serve as a child process")
	}
	for _, soon := range []bool{false, true} {
		t.Run(map[bool]string{false: "during the drain", true: "20 ms after the first"}[soon], func(t *testing.T) {
			c := newCluster(t, "")
			s := c.start()
			ten := s.createTenants("twice", 1)[0]
			s.must(200, "POST", "/t/"+ten.Slug+"/signup", "", map[string]any{"email": "kept@example.com", "password": "password-123"})
			// A request whose body never finishes: its handler runs until
			// the drain's deadline.
			conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := fmt.Fprintf(conn, "POST /t/%s/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", ten.Slug); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // the server reads the head
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			if soon {
				time.Sleep(20 * time.Millisecond)
			} else {
				if err := waitFor(10*time.Second, func() bool { return strings.Contains(c.allLogs(), "draining requests") }); err != nil {
					t.Fatalf("no drain after the first SIGTERM: %v\n%s", err, c.allLogs())
				}
				select {
				case <-s.exited:
					t.Fatalf("exited before the second signal (%v): the request in flight did not hold the drain\n%s", s.err, c.allLogs())
				case <-time.After(500 * time.Millisecond):
				}
			}
			start := time.Now()
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(10 * time.Second):
				t.Fatalf("still running 10 s after a second SIGTERM\n%s", c.allLogs())
			}
			var ee *exec.ExitError
			if !errors.As(s.err, &ee) || ee.ExitCode() != 128+int(syscall.SIGTERM) {
				t.Fatalf("exit after a second SIGTERM: %v, want status %d\n%s", s.err, 128+int(syscall.SIGTERM), c.allLogs())
			}
			if !strings.Contains(c.allLogs(), "signal during the stop: stopping at once") {
				t.Fatalf("the second signal was not logged\n%s", c.allLogs())
			}
			t.Logf("stopped %v after the second SIGTERM", time.Since(start).Round(time.Millisecond))
			s = c.start()
			s.must(200, "POST", "/t/"+ten.Slug+"/token?grant_type=password", "", map[string]any{"email": "kept@example.com", "password": "password-123"})
			s.stop()
		})
	}
}
