package tunnel

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// lockLowered locks the calling goroutine to its thread, sets the
// thread's nice value and returns its id.
func lockLowered(nice int) int {
	runtime.LockOSThread()
	tid := unix.Gettid()
	unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
	return tid
}

// unlockRestored gives thread tid (the caller's) nice 0 back and unlocks
// the goroutine; if the kernel refuses, the goroutine stays locked to its
// lowered thread and false is returned.
func unlockRestored(tid int) bool {
	if unix.Setpriority(unix.PRIO_PROCESS, tid, 0) != nil {
		return false
	}
	runtime.UnlockOSThread()
	return true
}

// canRestorePriority tries, on a thread that ends afterwards, to lower the
// priority to nice and raise it back to 0.
func canRestorePriority(nice int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends with the goroutine
		tid := unix.Gettid()
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil {
			errc <- fmt.Errorf("lower a thread's priority: %w", err)
			return
		}
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 0); err != nil {
			errc <- fmt.Errorf("give a thread its priority back (needs CAP_SYS_NICE or RLIMIT_NICE): %w", err)
			return
		}
		errc <- nil
	}()
	return <-errc
}
