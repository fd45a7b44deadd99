package hash

import (
	"bufio"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A background Pool computes in a worker process: this same executable,
// started with workerEnv set, which lowers itself to the lowest CPU priority
// the system grants (SCHED_IDLE on Linux) before it reads a request. Within one
// process that is not possible:
// golang.org/x/crypto/argon2 runs every segment of a hash on a goroutine of
// its own, so the work lands on ordinary threads whatever thread called it,
// and a low-priority thread in the server would still have to answer the
// garbage collector's stop-the-world, which every 19 MiB hash triggers.
// In a process of its own, hashing gets only the CPU that requests leave,
// and its allocations never pause the server.
const (
	workerEnv      = "KEYSHARD_INTERNAL_HASH_WORKER"
	workerProtocol = "keyshard-hash-worker/1"
	// workerStartTimeout bounds the wait for a new worker's hello.
	workerStartTimeout = 10 * time.Second
	// workerGCPercent is the worker's GC target unless GOGC is set. Every
	// hash allocates its memory anew; at GOGC=100 the collector hands the
	// freed memory back to the OS between hashes, and the next hash faults
	// it in again: logins at 16 clients, 8 s, in-process bench, mean hash
	// 46.1 and 47.3 ms at 100, 37.7 and 43.8 ms at 400. The heap that 400
	// allows (5 × the hashes in hand) is capped by the GOMEMLIMIT that
	// startWorker sets: 190 MB resident with 2 workers at 19 MiB.
	workerGCPercent = 400
)

// Variables for the tests.
var (
	// workerCallTimeout bounds one computation, from before it is sent:
	// past it the worker is presumed hung (or stopped) and is killed. The
	// bounds on stored hashes (maxWork, maxBcryptCost) keep an honest
	// computation far under it.
	workerCallTimeout = 5 * time.Minute
	// workerExecutable names the executable to start as the worker.
	workerExecutable = selfExecutable
	// workerRespawnDelay spaces attempts to start a worker after one failed
	// to start or died younger than this, so that a broken installation or
	// a worker that crashes at once does not fork per request.
	workerRespawnDelay = time.Second
	// workerCloseGrace is how long Close lets the computations in hand
	// finish before it kills the worker.
	workerCloseGrace = 10 * time.Second
)

// ErrWorkerFailed: the hash worker process could not be started, or died
// with the computation in hand twice (the pool retries once on a new
// worker). A later request starts a new one.
var ErrWorkerFailed = errors.New("password hash worker process failed")

func init() {
	// Any binary that links this package can serve as its own hash worker,
	// test binaries included; the worker never returns to main.
	if os.Getenv(workerEnv) == workerProtocol {
		os.Exit(serveWorker(os.Stdin, os.Stdout))
	}
}

// workerHello is the worker's first message.
type workerHello struct {
	Protocol string
	PID      int
}

// serveWorker answers the kdfRequests read from r on w, concurrently, until
// r ends; it returns the process's exit code.
func serveWorker(r io.Reader, w io.Writer) int {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(workerGCPercent)
	}
	dec := gob.NewDecoder(bufio.NewReader(r))
	enc := gob.NewEncoder(w)
	var mu sync.Mutex
	send := func(v any) error {
		mu.Lock()
		defer mu.Unlock()
		return enc.Encode(v)
	}
	if err := send(workerHello{Protocol: workerProtocol, PID: os.Getpid()}); err != nil {
		return 1
	}
	// Lowered after the hello and before the first request is read, so
	// that no computation runs at normal priority, and a worker started
	// while normal threads keep every core busy still says hello within
	// workerStartTimeout (lowered first, it waited for a CPU nobody left
	// it, and its start failed: logins answered 503 until the next try).
	// Its computations may then wait: the pool rescues the queued ones,
	// answers those in hand 429 after its bound on waits, and seeds a new
	// pool in the server process (seedWithin). It is done
	// here rather than by starting the process from a lowered thread,
	// because that thread would hold a P and the fork lock at idle
	// priority until the new process execs.
	lowerProcessPriority()
	// The parent has at most one request in hand per pool worker.
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		var req kdfRequest
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return 0 // the pool closed, or its process died
			}
			fmt.Fprintf(os.Stderr, "keyshard hash worker: %v\n", err)
			return 1
		}
		wg.Go(func() {
			if err := send(computeRecover(req)); err != nil {
				fmt.Fprintf(os.Stderr, "keyshard hash worker: %v\n", err)
				os.Exit(1)
			}
		})
	}
}

// computeRecover computes r, answering a panic as the result's Err rather
// than dying with the other computations in hand.
func computeRecover(r kdfRequest) (out kdfResult) {
	defer func() {
		if p := recover(); p != nil {
			out = kdfResult{ID: r.ID, Err: fmt.Sprintf("panic: %v", p)}
		}
	}()
	return computeLocal(r)
}

// worker is the parent's handle on one worker process.
type worker struct {
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	done  chan struct{} // closed when the process is gone and reaped

	encMu sync.Mutex
	enc   *gob.Encoder

	mu      sync.Mutex
	pending map[uint64]chan kdfResult
	nextID  uint64
	err     error // why the worker stopped; set once
}

// startWorker starts a worker process for n concurrent computations of
// memKiB each and waits for its hello.
func startWorker(n int, memKiB uint32) (*worker, error) {
	exe, err := workerExecutable()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWorkerFailed, err)
	}
	cmd := exec.Command(exe)
	cmd.Args = []string{"keyshard-hash-worker"} // its name in ps and top
	// A minimal environment: the server's secrets (master key, admin
	// token) have no business in the worker.
	// GOMEMLIMIT caps what GOGC=400 would let the heap grow to: three
	// times the hashes in hand, plus the runtime's own.
	limit := uint64(n)*uint64(memKiB)*1024*3 + 64<<20
	cmd.Env = []string{workerEnv + "=" + workerProtocol, "GOMAXPROCS=" + strconv.Itoa(n),
		"GOMEMLIMIT=" + strconv.FormatUint(limit, 10)}
	for _, k := range []string{"GOGC", "GOMEMLIMIT", "GOTRACEBACK", "GOCOVERDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v) // the last of a key wins
		}
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWorkerFailed, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		_ = stdin.Close()
		return nil, fmt.Errorf("%w: %v", ErrWorkerFailed, err)
	}
	workerStarts.Inc()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%w: start %s: %v", ErrWorkerFailed, exe, err)
	}
	dec := gob.NewDecoder(bufio.NewReader(stdout))
	hello := make(chan error, 1)
	go func() {
		var h workerHello
		err := dec.Decode(&h)
		if err == nil && h.Protocol != workerProtocol {
			err = fmt.Errorf("speaks %q, want %q", h.Protocol, workerProtocol)
		}
		hello <- err
	}()
	var herr error
	select {
	case herr = <-hello:
	case <-time.After(workerStartTimeout):
		herr = fmt.Errorf("no hello within %s", workerStartTimeout)
	}
	if herr != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("%w: %s did not start as a hash worker: %v", ErrWorkerFailed, exe, herr)
	}
	w := &worker{cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, done: make(chan struct{}),
		enc: gob.NewEncoder(stdin), pending: make(map[uint64]chan kdfResult)}
	go w.read(dec)
	return w, nil
}

// read delivers results until the worker's output ends, then fails the
// computations still in hand and reaps the process.
func (w *worker) read(dec *gob.Decoder) {
	var err error
	for {
		var res kdfResult
		if err = dec.Decode(&res); err != nil {
			break
		}
		w.mu.Lock()
		ch := w.pending[res.ID]
		delete(w.pending, res.ID)
		w.mu.Unlock()
		if ch != nil {
			ch <- res // buffered: never blocks
		}
	}
	if errors.Is(err, io.EOF) {
		err = errors.New("its output ended")
	}
	_ = w.cmd.Process.Kill() // fails when it is gone already
	if werr := w.cmd.Wait(); werr != nil {
		err = fmt.Errorf("%v (%v)", err, werr) // e.g. "signal: killed"
	}
	w.stop(err)
	close(w.done)
}

// stop records why the worker stopped (the first reason wins).
func (w *worker) stop(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = fmt.Errorf("%w: process %d: %v", ErrWorkerFailed, w.pid, err)
	}
}

// failed returns why the worker stopped, or nil while it runs.
func (w *worker) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// call sends r and waits for its result.
func (w *worker) call(r kdfRequest) (kdfResult, error) {
	ch := make(chan kdfResult, 1)
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		return kdfResult{}, w.err
	}
	w.nextID++
	r.ID = w.nextID
	w.pending[r.ID] = ch
	w.mu.Unlock()

	// Armed before the send: a worker that stopped reading fills the pipe
	// and blocks Encode, which the kill then ends.
	var timedOut atomic.Bool
	timer := time.AfterFunc(workerCallTimeout, func() {
		timedOut.Store(true)
		w.kill(fmt.Errorf("no answer within %s", workerCallTimeout))
	})
	defer timer.Stop()
	w.encMu.Lock()
	err := w.enc.Encode(&r)
	w.encMu.Unlock()
	if err != nil {
		w.kill(fmt.Errorf("send: %v", err))
	}
	select {
	case res := <-ch:
		return res, nil
	case <-w.done:
		select {
		case res := <-ch: // answered just before the end
			return res, nil
		default:
		}
		if timedOut.Load() {
			return kdfResult{}, fmt.Errorf("%w: %w", errOwnTimeout, w.failed())
		}
		return kdfResult{}, w.failed()
	}
}

// errOwnTimeout marks the failure of the computation whose timeout killed
// the worker: the one computation not to retry.
var errOwnTimeout = errors.New("this computation timed out")

// kill stops the worker for err; read sees its output end, fails the
// computations in hand and reaps it.
func (w *worker) kill(err error) {
	w.stop(err)
	_ = w.cmd.Process.Kill()
}

// close ends the worker's input, so that it exits after the computations in
// hand, and waits for it (killing it past timeout).
func (w *worker) close(timeout time.Duration) {
	_ = w.stdin.Close()
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.kill(errors.New("closed"))
		<-w.done
	}
}
