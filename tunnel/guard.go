package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Guard re-verifies the peers of open sessions, so that revocation (a new
// CRL, an OCSP answer) and expiry end sessions that are already open: on a
// long-lived session a check at handshake time alone would do nothing.
type Guard struct {
	// Verify runs the full peer verification on a session's peer chain.
	Verify func(*Session) error
	// Interval between rechecks of every session. Default 30 s, so a
	// revoked or expired peer is cut within about that long.
	Interval time.Duration
	Logger   *slog.Logger

	mu       sync.Mutex
	sessions map[*Session]struct{}
	kick     chan struct{}
}

func (g *Guard) init() {
	if g.sessions == nil {
		g.sessions = map[*Session]struct{}{}
		g.kick = make(chan struct{}, 1)
	}
}

// Add starts guarding s.
func (g *Guard) Add(s *Session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	g.sessions[s] = struct{}{}
}

// Remove stops guarding s.
func (g *Guard) Remove(s *Session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.sessions, s)
}

// Recheck asks for a recheck of every session now, for example after a CRL
// was reloaded. It never blocks.
func (g *Guard) Recheck() {
	g.mu.Lock()
	g.init()
	kick := g.kick
	g.mu.Unlock()
	select {
	case kick <- struct{}{}:
	default:
	}
}

// Run rechecks on every tick and every Recheck until ctx is done.
func (g *Guard) Run(ctx context.Context) {
	g.mu.Lock()
	g.init()
	kick := g.kick
	g.mu.Unlock()
	interval := g.Interval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		g.checkAll()
	}
}

func (g *Guard) checkAll() {
	g.mu.Lock()
	sessions := make([]*Session, 0, len(g.sessions))
	for s := range g.sessions {
		sessions = append(sessions, s)
	}
	g.mu.Unlock()
	for _, s := range sessions {
		if s.IsClosed() {
			continue
		}
		if err := g.Verify(s); err != nil {
			g.log().Warn("closing session: peer no longer passes verification",
				"peer", PeerID(s.Peer), "remote", s.Remote.String(), "session", s.ID, "reason", Classify(err), "err", err)
			// The cause keeps the reason for the "session ended" line and
			// the metrics (ClassifyEnd).
			s.closeWith(fmt.Errorf("peer no longer passes verification: %w", err))
		}
	}
}

func (g *Guard) log() *slog.Logger {
	if g.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Logger
}
