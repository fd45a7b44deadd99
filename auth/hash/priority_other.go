//go:build !unix

package hash

import "os"

// lowerProcessPriority does nothing where there is no portable way.
func lowerProcessPriority() {}

func selfExecutable() (string, error) { return os.Executable() }
