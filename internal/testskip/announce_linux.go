package testskip

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// announce writes line to the standard output of the go command that runs
// this test binary, once per go command (see the package comment).
func announce(line string) {
	out, run, ok := goCommandOutput()
	if !ok {
		return
	}
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "keyshard-test-skips"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer lock.Close()
	// The test binaries of one run start in parallel: the lock makes the
	// check and the write one step.
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX) != nil {
		return
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	told, _ := io.ReadAll(lock)
	if string(told) == run {
		return
	}
	w, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return
	}
	defer w.Close()
	if _, err := io.WriteString(w, line); err != nil {
		return
	}
	if lock.Truncate(0) == nil {
		lock.WriteAt([]byte(run), 0)
	}
}

// goCommandOutput returns the path of the parent go command's standard
// output and a key naming that go command's run (its pid and start time,
// since pids are reused). ok is false when the parent is not the go command,
// or when its output is a regular file: a second writer there would be
// overwritten at the go command's own offset.
func goCommandOutput() (out, run string, ok bool) {
	ppid := strconv.Itoa(os.Getppid())
	comm, err := os.ReadFile("/proc/" + ppid + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "go" {
		return "", "", false
	}
	out = "/proc/" + ppid + "/fd/1"
	fi, err := os.Stat(out)
	if err != nil || fi.Mode()&(os.ModeNamedPipe|os.ModeCharDevice|os.ModeSocket) == 0 {
		return "", "", false
	}
	stat, err := os.ReadFile("/proc/" + ppid + "/stat")
	if err != nil {
		return "", "", false
	}
	// The fields after the parenthesised command name; the start time is the
	// 22nd field of the line, the 20th after the name.
	_, rest, found := strings.Cut(string(stat), ") ")
	fields := strings.Fields(rest)
	if !found || len(fields) < 20 {
		return "", "", false
	}
	return out, ppid + " " + fields[19], true
}
