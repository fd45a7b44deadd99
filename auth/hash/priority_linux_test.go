package hash

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// workerPID returns the pid of p's running worker process.
func workerPID(t *testing.T, p *Pool) int {
	t.Helper()
	pid := p.WorkerPID()
	if pid == 0 {
		t.Fatal("no worker process")
	}
	return pid
}

// reaped reports that process pid no longer exists, not even as a zombie.
func reaped(pid int) bool {
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err != nil
}

func TestPool_Background(t *testing.T) {
	t.Setenv("KEYSHARD_MASTER_KEY", "secret-not-for-the-worker")
	before := runtime.GOMAXPROCS(0)
	params := Params{MemoryKiB: 64, Time: 1, Threads: 1}
	p, err := NewPool(Config{Params: params, Workers: 2, Background: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Errorf("GOMAXPROCS with a background pool = %d, want %d unchanged", got, before)
	}
	pid := workerPID(t, p)
	if pid == os.Getpid() {
		t.Fatal("the worker is this process")
	}

	// Every thread of the worker runs at idle priority; this process's
	// threads keep theirs.
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) == 0 {
		t.Fatal("worker has no threads")
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			t.Fatalf("sched_getattr %d: %v", tid, err)
		}
		if attr.Policy != unix.SCHED_IDLE {
			t.Errorf("worker thread %d: policy %d, want SCHED_IDLE (%d)", tid, attr.Policy, unix.SCHED_IDLE)
		}
	}
	own, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range own {
		tid, _ := strconv.Atoi(task.Name())
		if attr, err := unix.SchedGetAttr(tid, 0); err == nil && attr.Policy == unix.SCHED_IDLE {
			t.Errorf("thread %d of this process was lowered to SCHED_IDLE", tid)
		}
	}

	// The server's secrets stay out of the worker's environment.
	env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(env), "secret-not-for-the-worker") {
		t.Error("the worker's environment holds KEYSHARD_MASTER_KEY")
	}

	// Hashes made in the worker verify here and the other way round.
	ctx := context.Background()
	local, err := NewPool(Config{Params: params, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	h, err := p.Hash(ctx, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if ok, stale, err := local.Verify(ctx, h, "correct horse"); !ok || stale || err != nil {
		t.Errorf("worker's hash verified here: ok=%v stale=%v err=%v", ok, stale, err)
	}
	h2, err := local.Hash(ctx, "battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := p.Verify(ctx, h2, "battery staple"); !ok || err != nil {
		t.Errorf("local hash verified in the worker: ok=%v err=%v", ok, err)
	}
	if ok, _, err := p.Verify(ctx, h2, "battery stapler"); ok || err != nil {
		t.Errorf("wrong password in the worker: ok=%v err=%v", ok, err)
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("imported"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if ok, stale, err := p.Verify(ctx, string(bc), "imported"); !ok || !stale || err != nil {
		t.Errorf("bcrypt in the worker: ok=%v stale=%v err=%v", ok, stale, err)
	}
	if ok, _, err := p.Verify(ctx, string(bc), "exported"); ok || err != nil {
		t.Errorf("bcrypt mismatch in the worker: ok=%v err=%v", ok, err)
	}
	if _, _, err := p.Verify(ctx, "$2b$10$short", "x"); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("damaged bcrypt in the worker: err=%v, want ErrUnknownFormat", err)
	}
	if err := p.VerifyDummy(ctx, "whatever"); err != nil {
		t.Errorf("dummy verify: %v", err)
	}

	// Close stops the worker process and reaps it before it returns.
	p.Close()
	if !reaped(pid) {
		t.Errorf("worker %d still exists after Close", pid)
	}
	if _, err := p.Hash(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("hash after Close: %v, want ErrClosed", err)
	}
}

// startInFlight starts n hashes on p and waits until the worker has them in
// hand; their outcomes arrive on the returned channel.
func startInFlight(t *testing.T, p *Pool, n int) <-chan error {
	t.Helper()
	errc := make(chan error, n)
	for range n {
		go func() {
			h, err := p.Hash(context.Background(), "in flight")
			if err == nil {
				if ok, _, verr := verify(localKDF, h, "in flight", p.params); !ok || verr != nil {
					err = fmt.Errorf("the hash made after the retry does not verify: ok=%v err=%v", ok, verr)
				}
			}
			errc <- err
		}()
	}
	waitPending(t, p, n)
	return errc
}

// A worker process that dies with hashes in hand: the hashes are sent once
// more, to a new worker, unless their caller left; a second death fails them with ErrWorkerFailed, at
// once rather than at a timeout; a worker that died young is not replaced
// before workerRespawnDelay.
func TestPool_BackgroundWorkerDies(t *testing.T) {
	defer func(d time.Duration) { workerRespawnDelay = d }(workerRespawnDelay)
	// Slow enough that the hashes are surely in the worker when it is killed.
	params := Params{MemoryKiB: 128 << 10, Time: 4, Threads: 1}
	newBG := func(t *testing.T) *Pool {
		p, err := NewPool(Config{Params: params, Workers: 2, Background: true, Budget: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	kill := func(t *testing.T, pid int) {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("RetriedOnANewWorker", func(t *testing.T) {
		workerRespawnDelay = 0
		p := newBG(t)
		first := workerPID(t, p)
		errc := startInFlight(t, p, 2)
		kill(t, first)
		for range 2 {
			if err := <-errc; err != nil {
				t.Errorf("hash in flight when the worker died: %v, want it retried", err)
			}
		}
		if pid := p.WorkerPID(); pid == 0 || pid == first {
			t.Errorf("worker %d after the death of %d", pid, first)
		}
	})

	t.Run("LeftCallerNotRetried", func(t *testing.T) {
		workerRespawnDelay = 0
		p := newBG(t)
		first := workerPID(t, p)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		gone := make(chan error, 1)
		go func() { _, err := p.Hash(ctx, "gone"); gone <- err }()
		waitPending(t, p, 1)
		stays := make(chan error, 1)
		go func() { _, err := p.Hash(context.Background(), "stays"); stays <- err }()
		waitPending(t, p, 2)
		cancel()
		if err := <-gone; !errors.Is(err, context.Canceled) {
			t.Fatalf("a hash whose caller left: %v, want context.Canceled", err)
		}
		observed0 := histogramCount(t, hashSeconds)
		kill(t, first)
		if err := <-stays; err != nil {
			t.Fatalf("hash in flight when the worker died: %v, want it retried", err)
		}
		waitFor(t, func() bool { return p.busy.Load() == 0 }, "the workers to be free")
		w := procOf(p)
		if w == nil || w.pid == first {
			t.Fatal("no new worker")
		}
		if p.starving.Load() { // a hash took 30 s: probes count as sends too
			t.Skip("the machine starved the worker process; the count would include probes")
		}
		w.mu.Lock()
		sent := w.nextID
		w.mu.Unlock()
		if sent != 1 {
			t.Fatalf("the new worker was sent %d computations, want 1: the left caller's was sent again", sent)
		}
		// The left caller's job failed at once: its time is no hash's.
		if n := histogramCount(t, hashSeconds) - observed0; n != 1 {
			t.Fatalf("%d hash times observed after the death, want 1 (the retried hash's)", n)
		}
	})

	t.Run("SecondDeathFails", func(t *testing.T) {
		workerRespawnDelay = 0
		p := newBG(t)
		first := workerPID(t, p)
		errc := startInFlight(t, p, 2)
		kill(t, first)
		// The retries reach a new worker; kill that one too.
		deadline := time.Now().Add(10 * time.Second)
		var second int
		for second == 0 || second == first {
			if time.Now().After(deadline) {
				t.Fatal("no new worker after the first death")
			}
			time.Sleep(time.Millisecond)
			second = p.WorkerPID()
		}
		waitPending(t, p, 2)
		killed := time.Now()
		kill(t, second)
		for range 2 {
			if err := <-errc; !errors.Is(err, ErrWorkerFailed) {
				t.Errorf("hash whose worker died twice: %v, want ErrWorkerFailed", err)
			}
		}
		if d := time.Since(killed); d > 5*time.Second {
			t.Errorf("the hashes failed %s after the second kill", d)
		}
	})

	t.Run("DiedYoungIsNotReplacedAtOnce", func(t *testing.T) {
		workerRespawnDelay = time.Hour
		p := newBG(t)
		first := workerPID(t, p)
		errc := startInFlight(t, p, 1)
		kill(t, first)
		if err := <-errc; !errors.Is(err, ErrWorkerFailed) {
			t.Errorf("hash in flight when a young worker died: %v, want ErrWorkerFailed", err)
		}
		before := testutilStarts()
		if _, err := p.Hash(context.Background(), "x"); !errors.Is(err, ErrWorkerFailed) {
			t.Errorf("hash right after a young worker died: %v, want ErrWorkerFailed", err)
		}
		if started := testutilStarts() - before; started != 0 {
			t.Errorf("%v workers started within workerRespawnDelay of a young death", started)
		}
		workerRespawnDelay = 0
		if _, err := p.Hash(context.Background(), "x"); err != nil {
			t.Errorf("hash once the delay passed: %v", err)
		}
	})
}

// testutilStarts reads keyshard_hash_worker_starts_total.
func testutilStarts() float64 {
	var m dto.Metric
	if err := workerStarts.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// waitPending waits until p's worker process has n computations in hand.
func waitPending(t *testing.T, p *Pool, n int) {
	t.Helper()
	waitFor(t, func() bool {
		w := procOf(p)
		if w == nil {
			return false
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.pending) >= n
	}, fmt.Sprintf("%d computations in the worker", n))
}

// procOf returns p's worker process (nil when it has none).
func procOf(p *Pool) *worker {
	p.procMu.Lock()
	defer p.procMu.Unlock()
	return p.proc
}

// A worker that stops answering (here: stopped by SIGSTOP) is killed after
// workerCallTimeout, failing the computation in hand, even when it stopped
// reading its input.
func TestPool_BackgroundWorkerHangs(t *testing.T) {
	defer func(d time.Duration) { workerCallTimeout = d }(workerCallTimeout)
	workerCallTimeout = 500 * time.Millisecond
	p, err := NewPool(Config{Params: Params{MemoryKiB: 64, Time: 1, Threads: 1}, Workers: 1, Background: true, Budget: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pid := workerPID(t, p)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = p.Hash(context.Background(), "x")
	if !errors.Is(err, ErrWorkerFailed) || !strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("hash on a stopped worker: %v, want ErrWorkerFailed (no answer)", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 10*time.Second {
		t.Errorf("failed after %s, want about %s", d, workerCallTimeout)
	}
	// The failure is returned only after the worker was reaped.
	if !reaped(pid) {
		t.Errorf("the stopped worker %d was not killed and reaped", pid)
	}
}

// An executable that does not speak the protocol fails NewPool at once
// with ErrWorkerFailed, leaving no process behind.
func TestPool_BackgroundWorkerDoesNotStart(t *testing.T) {
	defer func(f func() (string, error)) { workerExecutable = f }(workerExecutable)
	for _, exe := range []string{"/bin/true", "/no/such/keyshard"} {
		workerExecutable = func() (string, error) { return exe, nil }
		start := time.Now()
		_, err := NewPool(Config{Params: Params{MemoryKiB: 64, Time: 1, Threads: 1}, Workers: 1, Background: true})
		if !errors.Is(err, ErrWorkerFailed) {
			t.Errorf("%s as the worker: %v, want ErrWorkerFailed", exe, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: failed after %s", exe, d)
		}
	}
}

// A panic in a computation is answered as an error, not a dead worker.
func TestComputeRecover(t *testing.T) {
	res := computeRecover(kdfRequest{ID: 7, Password: []byte("x"), Salt: []byte("saltsalt"), Time: 0, MemoryKiB: 64, Threads: 1, KeyLen: 32})
	if res.ID != 7 || !strings.HasPrefix(res.Err, "panic: ") {
		t.Fatalf("argon2 with time 0: %+v, want a recovered panic", res)
	}
}

// Close with a computation in a worker that does not answer kills the
// worker after workerCloseGrace: Close returns, the computation fails, and
// it is not retried on a new worker.
func TestPool_BackgroundCloseKillsHungWorker(t *testing.T) {
	defer func(d time.Duration) { workerCloseGrace = d }(workerCloseGrace)
	defer func(d time.Duration) { workerRespawnDelay = d }(workerRespawnDelay)
	workerCloseGrace, workerRespawnDelay = 200*time.Millisecond, 0
	p, err := NewPool(Config{Params: Params{MemoryKiB: 64, Time: 1, Threads: 1}, Workers: 1, Background: true, Budget: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	pid := workerPID(t, p)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	errc := startInFlight(t, p, 1)
	starts := testutilStarts()
	closed := make(chan struct{})
	start := time.Now()
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(pid, syscall.SIGKILL)
		t.Fatal("Close did not return within 10 s of a hung worker")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("Close returned after %s, before the grace", d)
	}
	if err := <-errc; err == nil {
		t.Error("the computation in the hung worker succeeded")
	}
	if n := testutilStarts() - starts; n != 0 {
		t.Errorf("%v workers started while closing", n)
	}
}
