package integration

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// snapshot is what the test process holds at one moment: its goroutines
// and its open file descriptors.
type snapshot struct {
	goroutines int
	ids        map[string]bool   // goroutine IDs, from a full stack dump
	nfds       int               // open descriptors; 0 without /proc
	fds        map[string]string // fd number -> what it points at
}

// takeSnapshot records the process's goroutines and descriptors. It primes
// the network poller first: its epoll and event descriptors are opened on
// the first network use and kept for the life of the process, so a test
// that happens to run first must not count them as its own.
func takeSnapshot() snapshot {
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	s := snapshot{goroutines: runtime.NumGoroutine(), ids: map[string]bool{}}
	for _, g := range goroutineDump() {
		s.ids[goroutineID(g)] = true
	}
	s.nfds, s.fds = countFDs(), openFDs()
	return s
}

// checkLeaks records the goroutines and descriptors the test starts with
// and, once the test and every cleanup registered after this call are done
// (agents stopped, backends closed), requires the process to be back at
// or below that baseline. Call it first in a test: cleanups run last in,
// first out.
func checkLeaks(t *testing.T) {
	t.Helper()
	base := takeSnapshot()
	t.Cleanup(func() { waitSettled(t, base, "after the test") })
}

// waitSettled waits until the process holds no more goroutines and
// descriptors than base, and fails with what is left over otherwise.
//
// Polled, with a deadline, because nothing signals the end: a stopped
// agent has waited for its own goroutines, but some end on their own
// schedule once their socket or session is closed (a session's watchdog
// and lifetime timers, yamux's loops, a runtime netpoll close), and a
// closed descriptor of a finished test may be released a moment later.
// The tolerance is zero: the baseline is taken in the same process, after
// the poller is primed, and nothing the agents start is meant to outlive
// them.
func waitSettled(t *testing.T, base snapshot, when string) {
	t.Helper()
	const poll, limit = 25 * time.Millisecond, 5 * time.Second
	start := time.Now()
	deadline := start.Add(limit)
	for {
		g, fds := runtime.NumGoroutine(), countFDs()
		if g <= base.goroutines && fds <= base.nfds {
			if waited := time.Since(start); waited > time.Second {
				t.Logf("%s: back to the baseline after %v", when, waited.Round(time.Millisecond))
			}
			return
		}
		if time.Now().After(deadline) {
			break
		}
		// io.Copy between TCP sockets splices through pipes that Go keeps
		// in a sync.Pool and closes from a finalizer: only garbage
		// collections (two, the pool keeps a victim cache) give them back.
		runtime.GC()
		time.Sleep(poll) // a polling interval, see above
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: not back to the baseline after %v:\n", when, limit)
	if g := runtime.NumGoroutine(); g > base.goroutines {
		fmt.Fprintf(&b, "goroutines: %d, baseline %d (+%d); new ones:\n", g, base.goroutines, g-base.goroutines)
		extra := 0
		for _, st := range goroutineDump() {
			if base.ids[goroutineID(st)] {
				continue
			}
			if extra++; extra <= 20 {
				b.WriteString(trim(st, 1500))
				b.WriteString("\n\n")
			}
		}
		if extra > 20 {
			fmt.Fprintf(&b, "... and %d more\n", extra-20)
		}
	}
	if n := countFDs(); n > base.nfds {
		fmt.Fprintf(&b, "file descriptors: %d, baseline %d (+%d); new ones:\n", n, base.nfds, n-base.nfds)
		var extra []string
		for fd, target := range openFDs() {
			if base.fds[fd] != target {
				extra = append(extra, fmt.Sprintf("  fd %s -> %s", fd, target))
			}
		}
		slices.Sort(extra)
		if len(extra) > 30 {
			extra = append(extra[:30], fmt.Sprintf("  ... and %d more", len(extra)-30))
		}
		b.WriteString(strings.Join(extra, "\n"))
	}
	t.Error(b.String())
}

// goroutineDump returns the stack of every goroutine, one per element.
func goroutineDump() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Split(string(bytes.TrimSpace(buf[:n])), "\n\n")
		}
		buf = make([]byte, 2*len(buf))
	}
}

var goroutineHeader = regexp.MustCompile(`^goroutine (\d+) `)

func goroutineID(stack string) string {
	if m := goroutineHeader.FindStringSubmatch(stack); m != nil {
		return m[1]
	}
	return ""
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "\n\t..."
}

const fdDir = "/proc/self/fd"

// countFDs is the number of open descriptors (cheap: no readlink), or 0
// where /proc is missing.
func countFDs() int {
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return 0
	}
	return len(ents)
}

// openFDs maps each open descriptor to its target (socket:[inode], a
// path, anon_inode:[eventpoll]), or is nil where /proc is missing. The
// descriptor that read the directory is gone by the time of the readlink
// and left out; countFDs counts it, in the baseline and later alike.
func openFDs() map[string]string {
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil
	}
	fds := make(map[string]string, len(ents))
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue // closed between the listing and now
		}
		fds[e.Name()] = target
	}
	return fds
}
