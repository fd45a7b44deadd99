package api_test

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data as SQLite's WAL commit does on Linux.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }
