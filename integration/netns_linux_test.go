package integration

import (
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// enterNetns runs fn on an OS thread that has joined the network namespace
// at path (a file under /var/run/netns), and returns fn's error.
//
// A socket belongs to the namespace its creator was in when it was made,
// and stays there: a listener or connection fn makes works from any thread
// afterwards, served by the same netpoller as every other socket. So the
// test process can be an app or a backend on another "host" without helper
// processes: only the socket call needs the namespace.
func enterNetns(path string, fn func() error) error {
	done := make(chan error, 1)
	go func() { done <- inNetns(path, fn) }()
	return <-done
}

// inNetns runs in its own goroutine. The thread stays locked until it is
// back in the test's own namespace; should that fail, the goroutine exits
// still locked and the Go runtime ends the thread rather than let other
// goroutines run in the wrong namespace (runtime.LockOSThread).
func inNetns(path string, fn func() error) error {
	runtime.LockOSThread()
	self, err := syscall.Open("/proc/thread-self/ns/net", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer syscall.Close(self)
	target, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open network namespace: %w", err)
	}
	defer syscall.Close(target)
	if err := setns(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", path, err)
	}
	ferr := fn()
	if err := setns(self); err != nil {
		return fmt.Errorf("setns back from %s: %w", path, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// setns moves the calling thread into the network namespace of fd
// (setns(2); the syscall package has no wrapper, and its table of syscall
// numbers lacks SYS_SETNS on amd64).
func setns(fd int) error { return unix.Setns(fd, unix.CLONE_NEWNET) }
