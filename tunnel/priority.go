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

// LowPriorityProcs is GOMAXPROCS while lowered sessions and copiers run: a
// P for each of the sessions' three locked loops and for each copier (at
// most maxLoweredCopierProcs of those), and the CPUs for everything else.
func LowPriorityProcs(cpus, sessions, copiers int) int {
	return cpus + 3*sessions + min(copiers, maxLoweredCopierProcs)
}

// maxLoweredCopierProcs bounds the Ps added for lowered copiers: hundreds
// of bulk streams must not mean hundreds of Ps.
const maxLoweredCopierProcs = 32

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
	if l.flag != nil {
		l.followTo(l.flag.Load())
	}
}

// followTo lowers (locks) or restores (unlocks) the calling goroutine's
// thread so that it is low as asked.
func (l *loopPriority) followTo(low bool) {
	if low == l.low {
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

// Bulk copiers at a lower priority.
//
// The sessions' loops cannot help a quiet stream that shares its session
// with bulk streams (a database pool's connection, opened long before a
// dump began): its frames pass through the same loops. What can wait is
// the bulk streams' own copiers. So while some copier talks (reads a
// little, and had no full buffer lately), every copier that reads full
// big buffers runs on a thread of its own at the bulk nice value, and the
// procs tuner gives the agent a P more for each (LowPriorityProcs), since
// a lowered copier holds its P while it runs.

// copierWindow is how long a full read keeps a copier bulk, and how long
// a talking copier keeps bulk copiers lowered.
const copierWindow = 250 * time.Millisecond

var copiers struct {
	epoch    time.Time    // monotonic base of the times below
	lastTalk atomic.Int64 // since epoch, of the last read by a quiet copier; 0: never
	lowered  atomic.Int32 // copiers on lowered threads now
}

func init() { copiers.epoch = time.Now() }

// copierPriority follows one copier (Join's copy loop calls observe after
// each read, and done when it ends).
type copierPriority struct {
	lp       loopPriority  // followTo only: no flag
	lastFull time.Duration // since copiers.epoch, of its last full big read; 0: none
	// session is what the copier's session's streams did lately (for
	// its talkWindow); nil: no session.
	session *activity
}

// activity is when a session's streams last talked and last moved bulk
// data (full big reads), since copiers.epoch, as their copiers note it.
type activity struct{ talk, bulk atomic.Int64 }

// mixed reports whether the session's streams both talked and moved bulk
// data within copierWindow: what its talkWindow holds the window for.
func (a *activity) mixed() bool { return recent(&a.talk) && recent(&a.bulk) }

// observe notes a read of n bytes, filled when it filled the buffer (big
// when that was the big one), and lowers or restores the copier's thread
// accordingly. A read that fills the small buffer is the start of a burst,
// not talk. Talk and bulk reads are noted with the feature off too: the
// tunnel sockets' receive windows follow their session's (talkWindow).
func (p *copierPriority) observe(n int, filled, big bool) {
	p.observeAt(time.Since(copiers.epoch), n, filled, big)
}

// observeAt is observe at time now (since copiers.epoch).
func (p *copierPriority) observeAt(now time.Duration, n int, filled, big bool) {
	bulk := false
	switch {
	case filled && big:
		p.lastFull, bulk = now, true
		if p.session != nil {
			noteRecent(&p.session.bulk, now)
		}
	case p.lastFull > 0 && now-p.lastFull <= copierWindow:
		bulk = true // a short read amid bulk data: still bulk
	case n > 0 && !filled:
		noteRecent(&copiers.lastTalk, now)
		if p.session != nil {
			noteRecent(&p.session.talk, now)
		}
	}
	talk := copiers.lastTalk.Load()
	p.set(bulk && priority.nice.Load() > 0 && talk > 0 && now-time.Duration(talk) <= copierWindow)
}

// done restores the copier's thread (its goroutine is a pooled worker).
func (p *copierPriority) done() {
	if p.lp.low {
		p.set(false)
	}
}

func (p *copierPriority) set(low bool) {
	was := p.lp.low
	p.lp.followTo(low)
	switch {
	case !was && p.lp.low:
		copiers.lowered.Add(1)
	case was && !p.lp.low:
		copiers.lowered.Add(-1)
	}
}

// noteRecent records a read at now (since copiers.epoch) in last. Every
// quiet copier notes talk on every read, and every bulk one bulk: it
// stores only when the last is stale, so that they do not all write one
// cache line.
func noteRecent(last *atomic.Int64, now time.Duration) {
	if now-time.Duration(last.Load()) > copierWindow/8 {
		last.Store(int64(now))
	}
}

// recent reports whether last holds a time within copierWindow.
func recent(last *atomic.Int64) bool {
	talk := last.Load()
	return talk > 0 && time.Since(copiers.epoch)-time.Duration(talk) <= copierWindow
}

// LoweredCopiers is how many copiers run on lowered threads now.
func LoweredCopiers() int { return int(copiers.lowered.Load()) }

// heldWindows counts the tunnel sockets whose receive window is held now
// because a stream talks beside bulk data in their session (talkWindow,
// the mtunnel_tunnel_windows_held metric).
var heldWindows atomic.Int32

// heldCount is one socket's share of heldWindows. The receive loop sets
// it and the session's end closes it, so a mutex orders the two.
type heldCount struct {
	mu     sync.Mutex
	held   bool
	closed bool
}

func (c *heldCount) set(held bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(held)
}

func (c *heldCount) setLocked(held bool) {
	if c.closed || held == c.held {
		return
	}
	c.held = held
	if held {
		heldWindows.Add(1)
	} else {
		heldWindows.Add(-1)
	}
}

func (c *heldCount) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(false)
	c.closed = true
}
