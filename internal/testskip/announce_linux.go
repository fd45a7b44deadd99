package testskip

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// announce writes line to the standard output of the go command that runs
// this test binary, once per go command (see the package comment). Nothing
// here may block or fail a test: every obstacle drops the line.
func announce(line string) {
	out, run, ok := goCommandOutput()
	if !ok {
		return
	}
	dir, ok := markerDir()
	if !ok {
		return
	}
	// The test binaries of one run start in parallel: whichever creates the
	// run's marker first writes the line.
	f, err := os.OpenFile(filepath.Join(dir, run), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return
	}
	f.Close()
	// Non-blocking: a FIFO without a reader (ENXIO) or a full pipe (EAGAIN)
	// drops the line instead of stalling the test binary.
	w, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
	if err != nil {
		return
	}
	defer w.Close()
	_, _ = w.WriteString(line) // one write of less than PIPE_BUF: not interleaved
}

// markerDir returns this user's directory for run markers, made if needed,
// with markers older than a day removed.
func markerDir() (string, bool) {
	dir := filepath.Join(os.TempDir(), "keyshard-test-skips-"+strconv.Itoa(os.Getuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", false
	}
	// Not a symlink planted by someone else, and ours alone.
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		return "", false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != os.Getuid() {
		return "", false
	}
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	return dir, true
}

// goCommandOutput returns the path of the parent go command's standard
// output and a key naming that go command's run (its pid and start time,
// since pids are reused). ok is false when the parent is not the go command;
// when it runs with -json or -v (the output is then machine-read, or shows
// the skips already); or when its output is a regular file, where a second
// writer would be overwritten at the go command's own offset.
func goCommandOutput() (out, run string, ok bool) {
	ppid := strconv.Itoa(os.Getppid())
	comm, err := os.ReadFile("/proc/" + ppid + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "go" {
		return "", "", false
	}
	cmdline, err := os.ReadFile("/proc/" + ppid + "/cmdline")
	if err != nil {
		return "", "", false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	args = append(args, strings.Fields(os.Getenv("GOFLAGS"))...)
	if slices.ContainsFunc(args, verboseFlag) {
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
	return out, ppid + "-" + fields[19], true
}
