//go:build unix

package app

import "syscall"

// openFilesLimit returns the process's limit of open descriptors, soft and
// hard. Go raises the soft limit to the hard one when a program starts
// (since Go 1.19), so the soft limit is what the server really has.
func openFilesLimit() (soft, hard uint64, ok bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0, false
	}
	return uint64(r.Cur), uint64(r.Max), true
}
