package testskip

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestLine(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if l := Line(env(map[string]string{"KEYSHARD_TEST_POSTGRES_DSN": "x", "KEYSHARD_TEST_MYSQL_DSN": "y"})); l != "" {
		t.Fatalf("every backend configured, yet: %q", l)
	}
	both := Line(env(nil))
	for _, want := range []string{"SKIPPED", "PostgreSQL and MySQL/MariaDB", "KEYSHARD_TEST_POSTGRES_DSN and KEYSHARD_TEST_MYSQL_DSN are not set", "README.md"} {
		if !strings.Contains(both, want) {
			t.Errorf("line %q lacks %q", both, want)
		}
	}
	one := Line(env(map[string]string{"KEYSHARD_TEST_POSTGRES_DSN": "x"}))
	if strings.Contains(one, "PostgreSQL") || !strings.Contains(one, "KEYSHARD_TEST_MYSQL_DSN is not set") {
		t.Errorf("only MySQL is missing, yet: %q", one)
	}
	if strings.Contains(both, "\n") {
		t.Errorf("one line, yet: %q", both)
	}
}

// TestGoTestNamesSkippedBackends runs go test, as a newcomer would, on the
// two server backend suites with neither DSN set, and expects the one line
// among the go command's own output, without -v.
func TestGoTestNamesSkippedBackends(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs two test binaries")
	}
	if runtime.GOOS != "linux" {
		t.Skip("the line is written on Linux only")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool")
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "CI" && k != "KEYSHARD_TEST_POSTGRES_DSN" && k != "KEYSHARD_TEST_MYSQL_DSN" && k != "GOFLAGS" {
			env = append(env, kv)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "test", "-count=1", "./shard/postgres/", "./shard/mysql/")
	cmd.Dir = "../.."
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test: %v\n%s", err, out)
	}
	n := strings.Count(string(out), "keyshard tests: SKIPPED the PostgreSQL and MySQL/MariaDB backend suites")
	if n != 1 {
		t.Fatalf("the skip line appears %d times, want once:\n%s", n, out)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("go test ran verbosely:\n%s", out)
	}
	// With -json every line stays a JSON event: the line is not written.
	cmd = exec.CommandContext(ctx, gobin, "test", "-json", "-count=1", "./shard/postgres/", "./shard/mysql/")
	cmd.Dir, cmd.Env = "../..", env
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go test -json: %v\n%s", err, out)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !json.Valid([]byte(l)) {
			t.Fatalf("go test -json printed a line that is not JSON: %q", l)
		}
	}
}

func TestVerboseFlag(t *testing.T) {
	for arg, want := range map[string]bool{
		"-v": true, "--v": true, "-v=true": true, "-json": true, "-json=1": true, "-test.v": true,
		"-v=false": false, "-json=0": false, "-vet=off": false, "-run": false, "./...": false, "v": false,
	} {
		if got := verboseFlag(arg); got != want {
			t.Errorf("verboseFlag(%q) = %v, want %v", arg, got, want)
		}
	}
}
