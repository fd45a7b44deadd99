//go:build !linux

package hash

// lowerThreadPriority is a no-op where threads have no priority of their own.
func lowerThreadPriority() {}
