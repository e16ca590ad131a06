package tunnel

import (
	"sync"
	"sync/atomic"
	"time"
)

// Bulk sessions at a lower priority.
//
// A 64-byte message beside a bulk transfer waits, at every hop, for a
// processor in two busy Go processes, and Go's scheduler has no
// priorities: a ping through mtunnel took 6 ms (median) and 20 ms (p99)
// beside 8 bulk streams on 2 cores, while a ping bypassing the tunnel
// beside the same load took 37 us at p99 (bench, head-of-line floor). The
// kernel does have priorities. So while some session is busy (moving more
// than DefaultBusyRate) and another, quiet one carries streams that moved
// some bytes since the last look (an idle pool does not count), the busy
// sessions' three loops (yamux's receive and send loops and the flusher
// under TLS) are each locked to an OS thread of their own that runs at a
// lower priority (nice), and the agent runs with more Ps than cores, so
// that the quiet streams' goroutines find a P and the kernel runs their
// threads first. When the mix ends, the threads get their priority back
// and are let go.
//
// The price is the locking: handing a locked goroutine the processor is a
// thread switch. Bulk throughput beside quiet streams drops (see README),
// and a transfer with no quiet stream beside it is left alone.

// priority is the process-wide view: every live session, and how
// much each had moved at the last judgement.
var priority struct {
	mu       sync.Mutex
	sessions map[*Session]uint64 // bytes moved at the last judgement
	at       time.Time
	nice     atomic.Int32 // nice value of lowered threads; 0: feature off
	lowered  atomic.Int32 // sessions marked low by the last judgement (metric)
}

func trackPriority(s *Session) {
	priority.mu.Lock()
	defer priority.mu.Unlock()
	if priority.sessions == nil {
		priority.sessions = map[*Session]uint64{}
	}
	priority.sessions[s] = uint64(s.up.Load() + s.down.Load())
}

func untrackPriority(s *Session) {
	priority.mu.Lock()
	delete(priority.sessions, s)
	priority.mu.Unlock()
	s.low.Store(false)
}

// SetBulkNice sets the nice value (1-19) that busy sessions' threads take
// while quiet streams run beside them; 0 turns the feature off. It
// returns an error, and leaves it off, if this process may not give a
// thread its priority back (Linux without CAP_SYS_NICE or RLIMIT_NICE):
// a thread that kept a low priority would slow whatever Go ran on it
// next.
func SetBulkNice(n int) error {
	if n <= 0 {
		priority.nice.Store(0)
		return nil
	}
	if err := canRestorePriority(min(n, 19)); err != nil {
		priority.nice.Store(0)
		return err
	}
	priority.nice.Store(int32(min(n, 19)))
	return nil
}

// JudgePriority looks at every session's traffic since the last call and
// marks the busy ones low when quiet streams talk beside them. It returns
// how many sessions it marked: the caller then runs LowPriorityProcs Ps.
// rate is bytes per second; 0 means DefaultBusyRate.
func JudgePriority(now time.Time, rate float64) int {
	if rate <= 0 {
		rate = DefaultBusyRate
	}
	priority.mu.Lock()
	defer priority.mu.Unlock()
	d := now.Sub(priority.at)
	priority.at = now
	on := priority.nice.Load() > 0 && d > 0 && d <= busyStale
	busy := map[*Session]bool{}
	quiet := false
	for s, seen := range priority.sessions {
		moved := uint64(s.up.Load() + s.down.Load())
		priority.sessions[s] = moved
		switch {
		case float64(moved-seen) > rate*d.Seconds():
			busy[s] = true
		case moved > seen && s.streams.Load() > 0:
			quiet = true // streams that talk, slowly: what bulk data would hold up
		}
	}
	low := on && quiet
	n := 0
	for s := range priority.sessions {
		// One store each: a loop that looks in between must not see its
		// flag drop and come back (a thread switch and two setpriority).
		s.low.Store(low && busy[s])
		if low && busy[s] {
			n++
		}
	}
	priority.lowered.Store(int32(n))
	return n
}

// LowPriorityProcs is GOMAXPROCS while lowered sessions run: a P for each
// of their three locked loops, and the CPUs for everything else.
func LowPriorityProcs(cpus, lowered int) int { return cpus + 3*lowered }

// loopPriority follows a session's low flag for the loop goroutine that
// calls follow: it locks the goroutine to its thread and lowers the
// thread's priority when the flag is set, and restores and unlocks when it
// clears. A loop that ends while low ends its thread with it (Go does that
// for a goroutine that exits locked), so no lowered thread goes back to
// Go's pool.
type loopPriority struct {
	flag *atomic.Bool
	low  bool
	tid  int
}

func (l *loopPriority) follow() {
	if l.flag == nil || l.flag.Load() == l.low {
		return
	}
	if !l.low {
		l.low, l.tid = true, lockLowered(int(priority.nice.Load()))
		return
	}
	if unlockRestored(l.tid) {
		l.low = false
	}
}
