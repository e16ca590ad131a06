package tunnel

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoopPriority: a loop following a low flag runs on a thread of its
// own with the nice value asked for, and gets nice 0 back when the flag
// clears.
func TestLoopPriority(t *testing.T) {
	if err := canRestorePriority(10); err != nil {
		msg := fmt.Sprintf("this process cannot restore thread priorities (run as root or with CAP_SYS_NICE): %v", err)
		if os.Getenv("MTUNNEL_REQUIRE_EXTERNAL") == "1" { // CI runs as root
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	priority.nice.Store(10)
	t.Cleanup(func() { priority.nice.Store(0) })
	flag := new(atomic.Bool)
	type look struct{ tid, nice int }
	looks := make(chan look)
	steps := make(chan bool)
	go func() {
		l := loopPriority{flag: flag}
		for want := range steps {
			flag.Store(want)
			l.follow()
			tid := unix.Gettid()
			nice, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
			if err != nil {
				nice = -100
			}
			// Linux's getpriority returns 20 - nice.
			looks <- look{tid, 20 - nice}
		}
		// Returning while still locked (a failed step) ends the thread.
	}()
	defer close(steps)
	steps <- true
	low := <-looks
	if low.nice != 10 {
		t.Fatalf("flag set: thread %d has nice %d, want 10", low.tid, low.nice)
	}
	steps <- true
	if again := <-looks; again.tid != low.tid {
		t.Fatalf("flag still set: the loop moved from thread %d to %d; want it locked", low.tid, again.tid)
	}
	steps <- false
	if back := <-looks; back.nice != 0 || back.tid != low.tid {
		t.Fatalf("flag cleared: thread %d has nice %d, want thread %d with nice 0", back.tid, back.nice, low.tid)
	}
}
