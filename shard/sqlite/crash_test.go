//go:build unix

package sqlite_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/shard"
	"github.com/keyshard/keyshard/shard/sqlite"
)

// The crash test runs the test binary again as a child that writes until it
// is killed; these variables switch the child on and tell it where to write.
const (
	helperEnv    = "KEYSHARD_TEST_HELPER"
	helperDirEnv = "KEYSHARD_TEST_HELPER_DIR"
	// helperReuseEnv set: the child's shards run on reused connections
	// (Options.ReuseConnections), the server's default.
	helperReuseEnv = "KEYSHARD_TEST_HELPER_REUSE"
	crashShards    = 3
)

func crashShardPath(dir string, i int) string {
	return filepath.Join(dir, fmt.Sprintf("shard%d.db", i))
}

// openChildShard opens the child's shard at path: on a kept connection
// (openOnKept) with helperReuseEnv set, else on a connection of its own.
func openChildShard(path string) (*shard.Shard, error) {
	if os.Getenv(helperReuseEnv) != "" {
		return openOnKept(path, sqlite.Options{})
	}
	return sqlite.Open(context.Background(), path, sqlite.Options{}, shard.Options{})
}

// bothConnections runs f as a subtest with the shards of the child on
// connections of their own, then on reused ones.
func bothConnections(t *testing.T, f func(t *testing.T, env ...string)) {
	t.Run("own", func(t *testing.T) { f(t) })
	t.Run("reused", func(t *testing.T) { f(t, helperReuseEnv+"=1") })
}

// TestHelperProcess is not a test: run as a child by TestOpen_AfterSIGKILL,
// it opens a few shards and writes numbered rows from several goroutines,
// printing "ack SHARD KEY" on stdout after each Write returned nil.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "crash-writer" {
		return
	}
	dir := os.Getenv(helperDirEnv)
	const (
		writers  = 4
		maxIters = 20000 // bounds the child should its parent vanish
		maxTime  = 60 * time.Second
	)
	var mu sync.Mutex // one line per write(2) on the unbuffered stdout
	deadline := time.Now().Add(maxTime)
	var wg sync.WaitGroup
	for i := 0; i < crashShards; i++ {
		s, err := openChildShard(crashShardPath(dir, i))
		if err != nil {
			fmt.Fprintf(os.Stderr, "open shard %d: %v\n", i, err)
			os.Exit(2)
		}
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; n < maxIters && time.Now().Before(deadline); n++ {
					key := fmt.Sprintf("w%d-%d", w, n)
					if err := s.Write(context.Background(), setSetting(key, strconv.Itoa(n))); err != nil {
						fmt.Fprintf(os.Stderr, "write %d %s: %v\n", i, key, err)
						continue
					}
					mu.Lock()
					_, err := fmt.Fprintf(os.Stdout, "ack %d %s\n", i, key)
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	os.Exit(3) // the parent should have killed us long before
}

// stallAtSync is the sync at which the sync-stall child stops for good.
const stallAtSync = 40

// TestHelperProcess_SyncStall is not a test: run as a child by
// TestOpen_KilledBetweenCommitAndSync, it writes numbered rows one after
// the other, printing "try KEY" before each write and "ack KEY" after it
// returned nil, and stalls its stallAtSync-th sync for good after printing
// "stalled": the write in flight then has committed and waits for its sync.
func TestHelperProcess_SyncStall(t *testing.T) {
	if os.Getenv(helperEnv) != "sync-stall" {
		return
	}
	s, err := openChildShard(crashShardPath(os.Getenv(helperDirEnv), 0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "open: %v\n", err)
		os.Exit(2)
	}
	var syncs atomic.Int64
	sqlite.SetSyncHook(func() error {
		if syncs.Add(1) == stallAtSync {
			fmt.Fprintln(os.Stdout, "stalled")
			select {} // until SIGKILL
		}
		return nil
	})
	deadline := time.Now().Add(60 * time.Second)
	for n := 0; n < 10000 && time.Now().Before(deadline); n++ {
		key := fmt.Sprintf("k%d", n)
		fmt.Fprintf(os.Stdout, "try %s\n", key)
		if err := s.Write(context.Background(), setSetting(key, strconv.Itoa(n))); err != nil {
			fmt.Fprintf(os.Stderr, "write %s: %v\n", key, err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stdout, "ack %s\n", key)
	}
	os.Exit(3) // the parent should have killed us long before
}

// TestOpen_KilledBetweenCommitAndSync kills the process while a write has
// committed (its WAL written, not synced) and its sync has not returned: the write
// was never acknowledged, every acknowledged one is there after reopening,
// and the file is intact. The unacknowledged write is there too (a killed
// process leaves its writes in the operating system's cache; only a power
// loss could drop it), which shows the kill came after its commit.
func TestOpen_KilledBetweenCommitAndSync(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	bothConnections(t, killedBetweenCommitAndSync)
}

func killedBetweenCommitAndSync(t *testing.T, env ...string) {
	dir := t.TempDir()
	cmd, stderr, lines := startChild(t, "TestHelperProcess_SyncStall", "sync-stall", dir, env...)
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	acked := map[string]bool{}
	var inFlight string
	stalled := false
	timeout := time.After(30 * time.Second)
	for !stalled {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("child ended before its sync stalled\nstderr:\n%s", stderr.String())
			}
			switch {
			case strings.HasPrefix(line, "try "):
				inFlight = strings.TrimPrefix(line, "try ")
			case strings.HasPrefix(line, "ack "):
				acked[strings.TrimPrefix(line, "ack ")] = true
			case line == "stalled":
				stalled = true
			}
		case <-timeout:
			t.Fatalf("no stalled sync in 30 s\nstderr:\n%s", stderr.String())
		}
	}
	// Whatever the child still prints in a while must not acknowledge the
	// write waiting for the stalled sync.
	grace := time.After(200 * time.Millisecond)
wait:
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				break wait
			}
			if strings.HasPrefix(line, "ack ") {
				acked[strings.TrimPrefix(line, "ack ")] = true
			}
		case <-grace:
			break wait
		}
	}
	if inFlight == "" || acked[inFlight] {
		t.Fatalf("write in flight %q acknowledged before its sync returned", inFlight)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for range lines {
	}
	if len(acked) < stallAtSync/2 {
		t.Fatalf("only %d writes acknowledged before the stall", len(acked))
	}

	s := openAt(t, crashShardPath(dir, 0), sqlite.Options{}, shard.Options{})
	present := settingKeys(t, s)
	for key := range acked {
		if !present[key] {
			t.Errorf("acknowledged write %s lost", key)
		}
	}
	if !present[inFlight] {
		t.Errorf("the write in flight (%s) is not there: the kill did not come between its commit and its sync", inFlight)
	}
	var check string
	if err := s.Read(context.Background(), func(q engine.Querier) error {
		return q.QueryRow("PRAGMA integrity_check").Scan(&check)
	}); err != nil || check != "ok" {
		t.Errorf("integrity_check = %q, %v; want ok", check, err)
	}
	t.Logf("%d writes acknowledged; %s committed, unacknowledged, killed before its sync, found after reopening", len(acked), inFlight)
}

// startChild runs the test binary again as helper (a TestHelperProcess*
// function) with the helper environment set to mode and dir; lines carries
// its stdout until it dies; env is added to its environment.
func startChild(t *testing.T, helper, mode, dir string, env ...string) (*exec.Cmd, *strings.Builder, chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+mode, helperDirEnv+"="+dir), env...)
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, stderr, lines
}

func TestOpen_AfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	bothConnections(t, afterSIGKILL)
}

func afterSIGKILL(t *testing.T, env ...string) {
	const (
		wantAcks = 300
		maxWait  = 30 * time.Second
	)
	dir := t.TempDir()
	cmd, stderr, lines := startChild(t, "TestHelperProcess", "crash-writer", dir, env...)
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	acked := make([]map[string]bool, crashShards)
	for i := range acked {
		acked[i] = make(map[string]bool)
	}
	total := 0
	record := func(line string) {
		var i int
		var key string
		if _, err := fmt.Sscanf(line, "ack %d %s", &i, &key); err != nil || i < 0 || i >= crashShards {
			return // the test framework's own output
		}
		acked[i][key] = true
		total++
	}
	timeout := time.After(maxWait)
collect:
	for total < wantAcks {
		select {
		case line, ok := <-lines:
			if !ok {
				break collect
			}
			record(line)
		case <-timeout:
			break collect
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	for line := range lines { // acknowledged before the kill, still in the pipe
		record(line)
	}
	err := cmd.Wait()
	killed = true
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("child did not die of SIGKILL: %v\nstderr:\n%s", err, stderr.String())
	}
	if total == 0 {
		t.Fatalf("the child acknowledged no write\nstderr:\n%s", stderr.String())
	}
	t.Logf("%d writes acknowledged before SIGKILL", total)

	for i := 0; i < crashShards; i++ {
		s := openAt(t, crashShardPath(dir, i), sqlite.Options{}, shard.Options{})
		present := settingKeys(t, s)
		for key := range acked[i] {
			if !present[key] {
				t.Errorf("shard %d: acknowledged write %s lost", i, key)
			}
		}
		var check string
		if err := s.Read(context.Background(), func(q engine.Querier) error {
			return q.QueryRow("PRAGMA integrity_check").Scan(&check)
		}); err != nil || check != "ok" {
			t.Errorf("shard %d: integrity_check = %q, %v; want ok", i, check, err)
		}
	}
}
