package api_test

import (
	"os"
	"testing"
	"time"

	"github.com/keyshard/keyshard/auth/hash"
)

// A login whose hash worker dies is sent once more to a new worker; when
// that one dies too, the login gets 503 service_unavailable with
// Retry-After. Other requests never notice, and a later login starts a new
// worker and succeeds.
func TestAuth_HashWorkerDies(t *testing.T) {
	// Slow enough hashes that the login is surely in the worker when it is
	// killed.
	params := hash.Params{MemoryKiB: 64 << 10, Time: 8, Threads: 1}
	e := newAuthEnv(t, authEnvOptions{params: params, workers: 1, budget: time.Minute, background: true})
	base := e.tenant("acme")
	s := e.signup(base, "dora@example.com", "password1")
	access := s.str("access_token")

	first := e.Pool.WorkerPID()
	if first == 0 || first == os.Getpid() {
		t.Fatalf("worker pid %d (this process %d)", first, os.Getpid())
	}
	done := make(chan authResp, 1)
	go func() { done <- e.login(base, "dora@example.com", "password1") }()
	deadline := time.Now().Add(30 * time.Second)
	for e.Pool.Stats().Busy == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the login never reached the hash pool")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // sent to the worker
	kill := func(pid int) {
		proc, err := os.FindProcess(pid)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	kill(first)
	// The retry starts a new worker (unless the first died younger than a
	// second, when the login fails at once): kill that one as well.
	for {
		if pid := e.Pool.WorkerPID(); pid != 0 && pid != first {
			time.Sleep(20 * time.Millisecond) // the retry is sent
			kill(pid)
			break
		}
		if len(done) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	r := <-done
	wantAuthError(t, r, 503, "service_unavailable")
	if r.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}

	// Requests that need no hash are unaffected.
	if u := e.call("GET", base+"/user", access, nil); u.Status != 200 {
		t.Fatalf("GET /user after the worker died: %d %s", u.Status, u.Raw)
	}
	// A later login runs on a new worker: at once, or (when the killed one
	// had run less than a second) after a 503 or two.
	deadline = time.Now().Add(10 * time.Second)
	for {
		r := e.login(base, "dora@example.com", "password1")
		if r.Status == 200 {
			break
		}
		wantAuthError(t, r, 503, "service_unavailable")
		if time.Now().After(deadline) {
			t.Fatal("no login succeeded within 10 s of the worker's death")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pid := e.Pool.WorkerPID(); pid == 0 || pid == first {
		t.Errorf("worker pid %d after the restarts, the first killed one was %d", pid, first)
	}
}
