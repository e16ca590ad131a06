package tunnel

import (
	"context"
	"errors"
	"log/slog"
	"math/bits"
	"time"
)

// serverPool is the part of a Pool that keeps sessions to one server: its
// sessions, its dial loop and its backoff. Fields are guarded by Pool.mu.
type serverPool struct {
	p       *Pool
	dialer  *Dialer
	rc      Reconnect // with defaults applied
	members []*member
	backoff backoff
	// Timing of dials. Losses (a failed dial, an ended session) push
	// retryAt out by the next backoff delay; no dial starts before it,
	// except that apps waiting for a session allow one every rc.Waiting.
	retryAt   time.Time
	lastDial  time.Time // start of the last dial
	lastLoss  time.Time
	failures  int   // dials failed in a row, for the logs and Status
	redial    bool  // a session ended or drained, or a dial failed, since the last dial
	lastErr   error // of the last dial; nil once one succeeds
	lastErrAt time.Time
	wake      chan struct{} // buffered: something changed, look again
}

func (sp *serverPool) poke() {
	select {
	case sp.wake <- struct{}{}:
	default:
	}
}

// run is the server's dial loop: one dial at a time, when the server is
// below its floor of sessions (or apps wait and every session is full) and
// the backoff allows.
func (sp *serverPool) run(ctx context.Context) {
	defer sp.p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		now := time.Now()
		wait, why, need := sp.next(now)
		if need && wait <= 0 {
			sp.dial(ctx, why)
			continue
		}
		reap := sp.reap(now)
		var fire <-chan time.Time
		switch {
		case need && reap > 0:
			timer.Reset(min(wait, reap))
		case need:
			timer.Reset(wait)
		case reap > 0:
			timer.Reset(reap)
		}
		if need || reap > 0 {
			fire = timer.C
		}
		select {
		case <-fire:
		case <-sp.wake:
		case <-ctx.Done():
			return
		}
		timer.Stop()
	}
}

// next says whether a dial is wanted, how long to wait for it and, for a
// session beyond the floor, why ("" for one within it).
func (sp *serverPool) next(now time.Time) (time.Duration, string, bool) {
	p := sp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, "", false
	}
	why := ""
	switch {
	case sp.slotsLocked() < p.size():
	case p.waiting > 0 && !sp.roomLocked(now, false):
		why = "every session full"
	case p.waitingQuiet > 0 && sp.slotsLocked() < p.size()+maxSpares(p.size()) && !sp.roomLocked(now, true):
		why = "every session busy"
	default:
		return 0, "", false
	}
	at := sp.retryAt
	if p.waiting > 0 || p.waitingQuiet > 0 {
		if soon := sp.lastDial.Add(sp.rc.Waiting); soon.Before(at) {
			at = soon
		}
	}
	return at.Sub(now), why, true
}

// slotsLocked counts the sessions towards the floor: those not draining,
// including one that has just died, until its watcher has dropped it and
// scheduled the redial with backoff.
func (sp *serverPool) slotsLocked() int {
	n := 0
	for _, m := range sp.members {
		if !m.draining {
			n++
		}
	}
	return n
}

func (sp *serverPool) usableLocked() int {
	n := 0
	for _, m := range sp.members {
		if m.usable() {
			n++
		}
	}
	return n
}

// errIdleExtra is why reap drains a session.
var errIdleExtra = errors.New("idle beyond the pool's floor of sessions")

// reap drains sessions beyond the floor that have carried no stream for
// Reconnect.Linger: they were dialled for a burst (every session at its stream
// cap) and would otherwise stay open for good. Draining answers with our
// GoAway at once, so the server closes them. It returns how long until the
// next one may be due; 0 if no session beyond the floor is idle.
func (sp *serverPool) reap(now time.Time) time.Duration {
	p := sp.p
	p.mu.Lock()
	defer p.mu.Unlock()
	extra := sp.usableLocked() - p.size()
	var next time.Duration
	for _, m := range sp.members {
		if extra <= 0 {
			break
		}
		if !m.usable() || m.inUse > 0 || m.opening > 0 {
			continue
		}
		if left := m.idleSince.Add(sp.rc.Linger).Sub(now); left > 0 {
			if next == 0 || left < next {
				next = left
			}
			continue
		}
		redial := sp.redial
		m.reaped = true
		p.drainingLocked(m, errIdleExtra)
		sp.redial = redial // no replacement is due: the floor is still met
		extra--
	}
	return next
}

// roomLocked reports whether some usable session is below its stream cap
// and, with quiet set, not busy (member.busy).
func (sp *serverPool) roomLocked(now time.Time, quiet bool) bool {
	for _, m := range sp.members {
		if m.usable() && m.load() < sp.dialer.Session.StreamCap() && !(quiet && m.busy(now)) {
			return true
		}
	}
	return false
}

// lostLocked schedules the next dial after a loss: a failed dial, or the
// session ended (nil if the loss is a dial). The backoff starts again from
// Base if a session was up for rc.Healthy since the previous loss.
func (sp *serverPool) lostLocked(now time.Time, ended *Session) time.Duration {
	healthy := func(s *Session) bool {
		up := s.Established
		if up.Before(sp.lastLoss) {
			up = sp.lastLoss
		}
		return now.Sub(up) >= sp.rc.Healthy
	}
	reset := ended != nil && healthy(ended)
	for _, m := range sp.members {
		reset = reset || healthy(m.s)
	}
	if reset {
		sp.backoff.reset()
	}
	sp.lastLoss = now
	sp.redial = true
	// Every loss wakes the dial loop, even when a redial is already
	// planned: the loop may have looked after an earlier loss, found the
	// floor still met (a session beyond it had ended) and gone to sleep
	// with nothing to wait for. Without this, when a spare and then the
	// floor's sessions ended together (a server killed), the pool never
	// dialled again (TestEveryLossWakesDialLoop).
	sp.poke()
	if ended != nil && sp.retryAt.After(now) {
		return sp.retryAt.Sub(now) // already waiting: sessions often end together
	}
	delay := sp.backoff.next()
	sp.retryAt = now.Add(delay)
	return delay
}

// dial dials one session; why is next's reason for a session beyond the
// floor, for the log.
func (sp *serverPool) dial(ctx context.Context, why string) {
	p := sp.p
	p.mu.Lock()
	sp.lastDial = time.Now()
	if sp.redial {
		sp.redial = false
		p.Metrics.Reconnect()
	}
	p.mu.Unlock()
	start := time.Now()
	s, err := sp.dialer.Dial(ctx)
	p.mu.Lock()
	if err != nil {
		if ctx.Err() != nil { // Close
			p.mu.Unlock()
			return
		}
		p.Metrics.HandshakeFailed(Classify(err))
		now := time.Now()
		delay := sp.lostLocked(now, nil)
		sp.failures++
		sp.lastErr, sp.lastErrAt = err, now
		failures := sp.failures
		p.signalLocked() // waiting apps may give up on a refusal
		p.mu.Unlock()
		sp.logFailure(err, failures, delay)
		return
	}
	after := sp.failures
	sp.failures, sp.lastErr, sp.retryAt = 0, nil, time.Time{}
	p.mu.Unlock()
	// Logged before the session is handed out, so that the line comes
	// before any stream on it.
	attrs := []any{"server", sp.dialer.Address, "peer", PeerID(s.Peer), "remote", s.Remote.String(), "session", s.ID, "rtt", s.RTT, "recv_buffer", s.RecvBuffer, "talk_window", s.TalkWindow}
	if after > 0 {
		attrs = append(attrs, "failed_dials", after)
	}
	if why != "" {
		attrs = append(attrs, "beyond_floor", why)
	}
	p.log().Info("session established", attrs...)
	p.Metrics.SessionUp(time.Since(start))
	if p.Guard != nil {
		p.Guard.Add(s)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := &member{s: s, sp: sp, idle: make(chan struct{}, 1), idleSince: time.Now()}
	sp.members = append(sp.members, m)
	p.bySession[s] = m
	p.wg.Add(1)
	go p.watch(m) // also when closed: it sees the session end and cleans up
	if p.closed {
		s.Close()
		return
	}
	p.signalLocked()
}

// logFailure logs a failed dial without flooding: the first of a row as an
// error, then warnings at the 2nd, 4th, 8th... failure (about one every
// doubling of the downtime once the delay is capped), the rest at debug.
func (sp *serverPool) logFailure(err error, failures int, delay time.Duration) {
	level := slog.LevelDebug
	switch {
	case failures == 1:
		level = slog.LevelError
	case bits.OnesCount(uint(failures)) == 1:
		level = slog.LevelWarn
	}
	sp.p.log().Log(context.Background(), level, "session dial failed", "server", sp.dialer.Address,
		"reason", Classify(err), "err", err, "failures", failures, "retry_in", delay.Round(time.Millisecond))
}
