//go:build unix && !linux

package hash

import (
	"os"

	"golang.org/x/sys/unix"
)

// lowerProcessPriority sets this process's nice value to 19.
func lowerProcessPriority() { _ = unix.Setpriority(unix.PRIO_PROCESS, 0, 19) }

func selfExecutable() (string, error) { return os.Executable() }
