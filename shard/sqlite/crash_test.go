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
	crashShards  = 3
)

func crashShardPath(dir string, i int) string {
	return filepath.Join(dir, fmt.Sprintf("shard%d.db", i))
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
		s, err := sqlite.Open(context.Background(), crashShardPath(dir, i), sqlite.Options{}, shard.Options{})
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

func TestOpen_AfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	const (
		wantAcks = 300
		maxWait  = 30 * time.Second
	)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=crash-writer", helperDirEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})

	// Lines arrive until the child dies and its stdout closes.
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
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
	err = cmd.Wait()
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
