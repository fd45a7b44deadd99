package hash

import (
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// startLowPriority starts cmd from an OS thread lowered to SCHED_IDLE (or
// nice 19 where that is refused), so that the process and every thread it
// creates inherit the policy: the kernel runs them only on CPU that no
// normal thread wants, and a waking normal thread preempts them at once.
// Failure to lower (e.g. a seccomp policy) starts cmd at normal priority.
func startLowPriority(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	go func() {
		// No UnlockOSThread: the lowered thread exits with this goroutine
		// and never runs other goroutines.
		runtime.LockOSThread()
		lowerThreadPriority()
		errc <- cmd.Start()
	}()
	return <-errc
}

// lowerThreadPriority lowers the calling OS thread: on Linux, sched_setattr
// and setpriority with 0 or a thread id affect that thread only.
func lowerThreadPriority() {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}
	if unix.SchedSetAttr(0, &attr, 0) != nil {
		_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
	}
}

// selfExecutable names this process's executable; /proc/self/exe still
// reaches it when the file was replaced on disk by an upgrade.
func selfExecutable() (string, error) { return "/proc/self/exe", nil }
