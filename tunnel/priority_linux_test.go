package tunnel

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lowerablePriority skips t (fails it under CI, which runs as root) if
// this process cannot restore a thread's priority, and otherwise turns the
// feature on at nice 10 for the test.
func lowerablePriority(t *testing.T) {
	t.Helper()
	if err := canRestorePriority(10); err != nil {
		msg := fmt.Sprintf("this process cannot restore thread priorities (run as root or with CAP_SYS_NICE): %v", err)
		if os.Getenv("MTUNNEL_REQUIRE_EXTERNAL") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	priority.nice.Store(10)
	t.Cleanup(func() { priority.nice.Store(0) })
}

// TestLoopPriority: a loop following a low flag runs on a thread of its
// own with the nice value asked for, and gets nice 0 back when the flag
// clears.
func TestLoopPriority(t *testing.T) {
	lowerablePriority(t)
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

// TestCopierPriority: a copier reading full big buffers goes to a thread
// at the bulk nice value only while another copier talks (a short read
// with no full one in copierWindow), is counted while there, and gets its
// thread back when the talk stops, when it stops being bulk, and when it
// ends. A burst's first reads (filling the small buffer) are not talk.
func TestCopierPriority(t *testing.T) {
	lowerablePriority(t)
	talk := copiers.lastTalk.Load()
	t.Cleanup(func() { copiers.lastTalk.Store(talk) })
	base := time.Since(copiers.epoch) + time.Hour // after any real copier's talk
	copiers.lastTalk.Store(0)
	type step struct {
		who         string // "bulk" or "quiet": which copier reads
		at          time.Duration
		n           int
		filled, big bool
		wantNice    int // the bulk copier's thread afterwards
		wantLowered int
	}
	steps := []step{
		{"bulk", 0, 128 << 10, true, true, 0, 0},                     // bulk, nobody talks
		{"quiet", 10 * time.Millisecond, 2 << 10, true, false, 0, 0}, // a burst starting: not talk
		{"bulk", 20 * time.Millisecond, 128 << 10, true, true, 0, 0},
		{"quiet", 30 * time.Millisecond, 64, false, false, 0, 0}, // talk
		{"bulk", 40 * time.Millisecond, 128 << 10, true, true, 10, 1},
		{"bulk", 50 * time.Millisecond, 500, false, true, 10, 1}, // a short read amid bulk: still bulk, not talk
		{"bulk", 30*time.Millisecond + copierWindow, 128 << 10, true, true, 10, 1},
		{"bulk", 31*time.Millisecond + copierWindow, 128 << 10, true, true, 0, 0}, // the talk is old
		{"quiet", 40*time.Millisecond + copierWindow, 64, false, false, 0, 0},     // talk again
		{"bulk", 50*time.Millisecond + copierWindow, 128 << 10, true, true, 10, 1},
		{"bulk", 60*time.Millisecond + 2*copierWindow, 500, false, true, 0, 0}, // no full read lately: not bulk
	}
	type look struct{ tid, nice, lowered int }
	looks := make(chan look)
	todo := make(chan step)
	done := make(chan struct{})
	go func() { // the bulk copier, on a goroutine of its own as in Join
		var p copierPriority
		for s := range todo {
			p.observeAt(base+s.at, s.n, s.filled, s.big)
			tid := unix.Gettid()
			nice, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
			if err != nil {
				nice = -100
			}
			looks <- look{tid, 20 - nice, LoweredCopiers()} // getpriority returns 20 - nice
		}
		p.done()
		tid := unix.Gettid()
		nice, _ := unix.Getpriority(unix.PRIO_PROCESS, tid)
		looks <- look{tid, 20 - nice, LoweredCopiers()}
		close(done)
	}()
	var quiet copierPriority
	for i, s := range steps {
		if s.who == "quiet" {
			quiet.observeAt(base+s.at, s.n, s.filled, s.big)
			continue
		}
		todo <- s
		got := <-looks
		if got.nice != s.wantNice || got.lowered != s.wantLowered {
			close(todo)
			<-looks
			<-done
			t.Fatalf("step %d (%+v): thread nice %d, %d copiers lowered; want %d and %d", i, s, got.nice, got.lowered, s.wantNice, s.wantLowered)
		}
	}
	// Lowered again, then ended: done restores it.
	copiers.lastTalk.Store(int64(base + 3*copierWindow))
	todo <- step{"bulk", 3 * copierWindow, 128 << 10, true, true, 10, 1}
	if got := <-looks; got.nice != 10 || got.lowered != 1 {
		t.Fatalf("lowered again: nice %d, %d lowered", got.nice, got.lowered)
	}
	close(todo)
	if got := <-looks; got.nice != 0 || got.lowered != 0 {
		t.Errorf("after done: nice %d, %d copiers lowered; want 0 and 0", got.nice, got.lowered)
	}
	<-done
	if quiet.lp.low {
		t.Error("the talking copier was lowered")
	}
}
