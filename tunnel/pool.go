package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// ErrPoolClosed is returned by Pool.Get after Close.
var ErrPoolClosed = errors.New("session pool closed")

// Pool keeps Size sessions to one server and hands out the least loaded
// live one. Sessions are dialled on demand; a dead or draining session is
// dropped and replaced by the next demand. A session carrying its stream
// cap (Dialer.Session.StreamCap, which keeps it inside its memory budget)
// takes no more: when every session is full the pool dials another, so
// Size is a floor, not a ceiling.
type Pool struct {
	Dialer *Dialer
	Size   int // default 1
	Logger *slog.Logger
	Guard  *Guard // if set, every session is added to it while open

	mu       sync.Mutex
	sessions []*Session
	draining map[*Session]bool // sent us GoAway: open no new streams
	opening  map[*Session]int  // streams being opened, not yet in NumStreams
	dialing  chan struct{}     // closed when the running dial ends
	lastErr  error
	closed   bool
	ctx      context.Context // cancelled by Close, ends a running dial
	cancel   context.CancelFunc
	wg       sync.WaitGroup // dials and session watchers
}

// Open opens a stream on the least loaded live session, dialling one if
// needed, and retries on another session if the chosen one is going away.
func (p *Pool) Open(ctx context.Context) (*Stream, *Session, error) {
	for {
		s, err := p.get(ctx)
		if err != nil {
			return nil, nil, err
		}
		st, err := s.OpenStream()
		p.mu.Lock()
		if p.opening[s]--; p.opening[s] == 0 {
			delete(p.opening, s)
		}
		p.mu.Unlock()
		if err == nil {
			return st, s, nil
		}
		if errors.Is(err, yamux.ErrRemoteGoAway) {
			p.markDraining(s)
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("open stream: %w", err)
		}
	}
}

func (p *Pool) get(ctx context.Context) (*Session, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, ErrPoolClosed
		}
		best := p.leastLoaded()
		if (best == nil || len(p.usable()) < max(p.Size, 1)) && p.dialing == nil {
			if p.ctx == nil {
				p.ctx, p.cancel = context.WithCancel(context.Background())
			}
			p.dialing = make(chan struct{})
			p.wg.Add(1)
			go p.dial()
		}
		wait := p.dialing
		if best != nil {
			if p.opening == nil {
				p.opening = make(map[*Session]int)
			}
			p.opening[best]++ // counts towards its load until opened
			p.mu.Unlock()
			return best, nil
		}
		p.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, p.waitErr(ctx)
		}
		p.mu.Lock()
		err := p.lastErr
		full := p.leastLoaded() == nil
		p.mu.Unlock()
		if full && err != nil {
			return nil, err
		}
	}
}

func (p *Pool) waitErr(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastErr != nil {
		return fmt.Errorf("no session to %s: %w (last dial: %w)", p.Dialer.Address, ctx.Err(), p.lastErr)
	}
	return fmt.Errorf("no session to %s: %w", p.Dialer.Address, ctx.Err())
}

// usable lists live sessions that accept new streams. Caller holds mu.
func (p *Pool) usable() []*Session {
	var out []*Session
	for _, s := range p.sessions {
		if !s.IsClosed() && !p.draining[s] {
			out = append(out, s)
		}
	}
	return out
}

// leastLoaded returns the usable session with the fewest streams that is
// below the stream cap, or nil. Caller holds mu.
func (p *Pool) leastLoaded() *Session {
	limit := p.Dialer.Session.StreamCap()
	var best *Session
	bestLoad := 0
	for _, s := range p.usable() {
		load := s.NumStreams() + p.opening[s]
		if load < limit && (best == nil || load < bestLoad) {
			best, bestLoad = s, load
		}
	}
	return best
}

func (p *Pool) markDraining(s *Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining == nil {
		p.draining = make(map[*Session]bool)
	}
	p.draining[s] = true
}

func (p *Pool) dial() {
	defer p.wg.Done()
	s, err := p.Dialer.Dial(p.ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.dialing)
	p.dialing = nil
	p.lastErr = err
	if err != nil {
		p.log().Error("session dial failed", "server", p.Dialer.Address, "reason", Classify(err), "err", err)
		return
	}
	if p.closed {
		s.Close()
		return
	}
	p.sessions = append(p.sessions, s)
	if p.Guard != nil {
		p.Guard.Add(s)
	}
	p.log().Info("session established", "server", p.Dialer.Address, "peer", PeerID(s.Peer),
		"remote", s.Remote.String(), "rtt", s.RTT)
	p.wg.Add(1)
	go p.watch(s)
}

// watch waits for s to end, logs it, and drops it from the pool.
func (p *Pool) watch(s *Session) {
	defer p.wg.Done()
	<-s.CloseChan()
	p.mu.Lock()
	for i, x := range p.sessions {
		if x == s {
			p.sessions = append(p.sessions[:i], p.sessions[i+1:]...)
			break
		}
	}
	delete(p.draining, s)
	if p.Guard != nil {
		p.Guard.Remove(s)
	}
	closing := p.closed
	p.mu.Unlock()
	reason := "closed by client"
	if !closing {
		reason = EndReason(s.Cause())
	}
	p.log().Info("session ended", "server", p.Dialer.Address, "peer", PeerID(s.Peer),
		"remote", s.Remote.String(), "duration", time.Since(s.Established).Round(time.Millisecond), "reason", reason)
}

// Close closes every session (their streams end with a reset to the apps)
// and waits for the pool's goroutines.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	if p.cancel != nil {
		p.cancel()
	}
	sessions := append([]*Session(nil), p.sessions...)
	p.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
	p.wg.Wait()
}

func (p *Pool) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}
