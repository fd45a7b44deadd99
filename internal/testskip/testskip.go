// Package testskip tells whoever runs `go test ./...` which backend suites
// were skipped, in one line, without -v.
//
// go test shows a passing package's output only with -v, so a t.Skip message
// is invisible in the everyday run and a newcomer cannot tell a skipped
// PostgreSQL suite from a passing one. Announce writes its line to the go
// command's own standard output instead (on Linux, /proc/<parent>/fd/1, when
// the parent is the go command and that output is a terminal or a pipe),
// once per go test run whichever test binary skips first: the test binaries
// of one run share their parent, and the first to create the run's marker
// file (named by the go command's pid and start time) writes the line.
//
// Nothing is written under -json (the output is machine-read) or -v (the
// skips show already), nor where the write would block. A cached run (go
// test prints "(cached)") runs no test binary and prints no line; -count=1
// runs them again.
package testskip

import (
	"fmt"
	"os"
	"strings"
	"sync"
)

// Servers names each server backend's DSN variable, in the order the line
// lists them.
var Servers = []struct{ Name, Env string }{
	{"PostgreSQL", "KEYSHARD_TEST_POSTGRES_DSN"},
	{"MySQL/MariaDB", "KEYSHARD_TEST_MYSQL_DSN"},
}

var once sync.Once

// Announce prints the line naming the server backends whose DSN is not set,
// if any and if this go test run has not printed it yet. Tests call it where
// they skip for a missing DSN. It never fails a test: where the go command's
// output cannot be reached, the t.Skip message (shown with -v) remains.
func Announce() {
	once.Do(func() {
		line := Line(os.Getenv)
		if line == "" {
			return
		}
		announce(line + "\n")
	})
}

// Line returns the announcement for the environment getenv reads, or "" when
// every server backend is configured.
func Line(getenv func(string) string) string {
	var names, envs []string
	for _, s := range Servers {
		if getenv(s.Env) == "" {
			names = append(names, s.Name)
			envs = append(envs, s.Env)
		}
	}
	if len(names) == 0 {
		return ""
	}
	verb := "is"
	if len(envs) > 1 {
		verb = "are"
	}
	return fmt.Sprintf("keyshard tests: SKIPPED the %s backend suites (%s %s not set; README.md, section Test, shows how to run them)",
		strings.Join(names, " and "), strings.Join(envs, " and "), verb)
}

// verboseFlag reports whether arg turns on go test's -json or -v output.
func verboseFlag(arg string) bool {
	name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	if !strings.HasPrefix(arg, "-") || (name != "v" && name != "json" && name != "test.v") {
		return false
	}
	return !hasValue || (value != "false" && value != "0")
}
