//go:build !linux

package hash

import (
	"os"
	"os/exec"
)

// startLowPriority starts cmd; only Linux lowers its priority.
func startLowPriority(cmd *exec.Cmd) error { return cmd.Start() }

func selfExecutable() (string, error) { return os.Executable() }
