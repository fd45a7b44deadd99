package hash

import "golang.org/x/sys/unix"

// lowerThreadPriority sets the calling OS thread's nice value to 19. On
// Linux, setpriority with a thread id affects only that thread. Failure
// (e.g. a seccomp policy) leaves the thread at normal priority.
func lowerThreadPriority() {
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
}
