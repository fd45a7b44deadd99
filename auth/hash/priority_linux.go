package hash

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// lowerProcessPriority moves every thread of this process to SCHED_IDLE (or
// nice 19 where that is refused): the kernel runs them only on CPU that no
// normal thread wants, and a waking normal thread preempts them at once.
// On Linux the policy is per thread and a new thread inherits its creator's,
// so the loop lowers the threads it finds until a pass finds none left at
// normal priority; later threads are created by lowered ones. Failure (e.g.
// a seccomp policy) leaves the process as it was.
func lowerProcessPriority() {
	idle := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}
	for pass := 0; pass < 10; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return
		}
		lowered := 0
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if attr, err := unix.SchedGetAttr(tid, 0); err == nil && attr.Policy == unix.SCHED_IDLE {
				continue
			}
			if unix.SchedSetAttr(tid, &idle, 0) != nil {
				_ = unix.Setpriority(unix.PRIO_PROCESS, tid, 19)
			}
			lowered++
		}
		if lowered == 0 {
			return
		}
	}
}

// selfExecutable names this process's executable: /proc/self/exe still
// reaches it when the file was replaced on disk by an upgrade.
func selfExecutable() (string, error) {
	if _, err := os.Stat("/proc/self/exe"); err == nil {
		return "/proc/self/exe", nil
	}
	return os.Executable()
}
