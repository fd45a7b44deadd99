package sqlite

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data (and the size, when it changed) to the disk.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
