package server

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// Failed handshakes are logged one line each up to failureBurst lines per
// failureWindow; beyond that they are counted by reason, and one line per
// reason says how many went unlogged when the window ends. A flood of bad
// connections (2,000 half-open ones, say) would otherwise write a line
// each. The metrics count every failure either way.
const (
	failureWindow = 5 * time.Second
	failureBurst  = 20
)

// failureLog logs failed handshakes without letting a flood of them flood
// the log.
type failureLog struct {
	log *slog.Logger

	mu      sync.Mutex
	start   time.Time // of the current window
	logged  int       // lines in the current window
	dropped map[tunnel.Reason]int
	timer   *time.Timer // flushes dropped at the window's end
}

// failed logs one failed handshake, or counts it if the window's lines are
// used up.
func (f *failureLog) failed(reason tunnel.Reason, attrs ...any) {
	now := time.Now()
	f.mu.Lock()
	if now.Sub(f.start) >= failureWindow {
		f.start, f.logged = now, 0
	}
	if f.logged < failureBurst {
		f.logged++
		f.mu.Unlock()
		f.log.Warn("handshake failed", append(attrs, "reason", reason)...)
		return
	}
	if f.dropped == nil {
		f.dropped = map[tunnel.Reason]int{}
		f.timer = time.AfterFunc(f.start.Add(failureWindow).Sub(now), f.flush)
	}
	f.dropped[reason]++
	f.mu.Unlock()
}

// flush logs the counts of the failures not logged, one line per reason.
func (f *failureLog) flush() {
	f.mu.Lock()
	dropped := f.dropped
	f.dropped = nil
	if f.timer != nil {
		f.timer.Stop()
		f.timer = nil
	}
	f.mu.Unlock()
	reasons := make([]tunnel.Reason, 0, len(dropped))
	for r := range dropped {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		f.log.Warn("handshake failures not logged", "reason", r, "count", dropped[r],
			"window", failureWindow, "limit", failureBurst)
	}
}
