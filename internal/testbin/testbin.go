// Package testbin builds the keyshard binary once for a test package whose
// tests run it as a child process (cmd/keyshard, internal/e2e).
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds cmd/keyshard into a temporary directory, stores its path in
// *bin (left empty when there is no go tool: Need then skips), runs the
// tests and removes the binary. A TestMain calls os.Exit(testbin.Main(m, &bin)).
func Main(m *testing.M, bin *string) int {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "keyshard-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "keyshard")
	out, err := exec.Command(goTool, "build", "-o", path, "github.com/keyshard/keyshard/cmd/keyshard").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build keyshard: %v\n%s", err, out)
		return 1
	}
	*bin = path
	return m.Run()
}

// Need skips tb when Main could not build the binary.
func Need(tb testing.TB, bin string) {
	tb.Helper()
	if bin == "" {
		tb.Skip("no go tool in PATH: the keyshard binary was not built")
	}
}
