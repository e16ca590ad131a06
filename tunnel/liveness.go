package tunnel

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrPeerUnresponsive ends a session when nothing, not even the answer to a
// ping, arrived from the peer for SessionConfig.KeepAlive+KeepAliveTimeout.
var ErrPeerUnresponsive = errors.New("peer unresponsive")

// ErrLifetimeExceeded ends a session that outlived
// SessionConfig.MaxLifetime plus its drain grace, or its peer certificate.
var ErrLifetimeExceeded = errors.New("session lifetime exceeded")

// watchdog decides whether the peer is alive by whether bytes arrive, not
// by yamux's keepalive. yamux fails a session when one ping's answer takes
// longer than ConnectionWriteTimeout, and that answer queues behind the
// peer's data frames, so a link saturated by a bulk stream could be taken
// for a dead peer (FIELD-NOTES). Here any frame from the peer proves it is
// alive; a ping is only sent after KeepAlive of silence, and the session is
// closed after KeepAlive+KeepAliveTimeout of silence. A peer that vanishes
// (no FIN, no RST) is therefore found within about that bound whether the
// session was idle or busy; TCP_USER_TIMEOUT (tuneTunnelSocket) backs it up
// in the kernel.
type watchdog struct {
	s       *Session
	every   time.Duration // tick
	ping    int           // silent ticks before a ping
	dead    int           // silent ticks before the session is closed
	pinging atomic.Bool
}

func newWatchdog(s *Session, keepAlive, timeout time.Duration) *watchdog {
	every := max(min(keepAlive, timeout)/4, time.Millisecond)
	return &watchdog{
		s:     s,
		every: every,
		ping:  max(1, int(keepAlive/every)),
		dead:  max(2, int((keepAlive+timeout)/every)),
	}
}

func (w *watchdog) run(keepAlive, timeout time.Duration) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	last, silent := w.s.conn.reads.Load(), 0
	for {
		select {
		case <-w.s.CloseChan():
			w.s.wakeStreams()
			return
		case <-t.C:
		}
		if n := w.s.conn.reads.Load(); n != last {
			last, silent = n, 0
			continue
		}
		silent++
		if silent >= w.dead {
			w.s.closeWith(fmt.Errorf("%w: nothing received for %s (keepalive %s + timeout %s)",
				ErrPeerUnresponsive, time.Duration(silent)*w.every, keepAlive, timeout))
			return
		}
		if silent >= w.ping && w.pinging.CompareAndSwap(false, true) {
			go func() {
				defer w.pinging.Store(false)
				w.s.Ping() // its answer counts as a read; the error is not needed
			}()
		}
	}
}

// retire replaces a session before it must end, so that its streams are
// not cut: at the end of MaxLifetime, or a grace period before the peer
// certificate expires (with hot reload the peer may have a new one by
// then), the session stops taking new streams (GoAway to the peer, and
// OpenStream refuses locally so the client's pool dials a replacement); its
// streams get the grace period to finish, then it is closed. A certificate
// already within a grace period of expiry (or past it, within the clock
// skew) is left to the Guard, which ends the session at expiry.
func (s *Session) retire(lifetime, grace time.Duration) {
	soft := time.Duration(-1)
	if left := time.Until(s.Peer.NotAfter); left > 2*grace {
		soft = left - grace
	}
	if lifetime > 0 && (soft < 0 || lifetime < soft) {
		soft = lifetime
	}
	if soft < 0 {
		return
	}
	st := time.NewTimer(soft)
	defer st.Stop()
	select {
	case <-s.CloseChan():
		return
	case <-st.C:
	}
	s.StopStreams()
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	poll := time.NewTicker(min(grace/10+time.Millisecond, time.Second))
	defer poll.Stop()
	for s.NumStreams() > 0 {
		select {
		case <-s.CloseChan():
			return
		case <-deadline.C:
			s.closeWith(fmt.Errorf("%w: %d streams still open after %s", ErrLifetimeExceeded, s.NumStreams(), grace))
			return
		case <-poll.C:
		}
	}
	s.closeWith(ErrLifetimeExceeded)
}

// StopStreams makes the session take no new streams while its open ones
// go on: OpenStream refuses locally (so the client's pool dials a
// replacement) and the peer is sent a GoAway, which makes its OpenStream
// fail with ErrRemoteGoAway so it opens streams elsewhere at once. Streams
// the peer opened before the GoAway reached it are still accepted, unlike
// with yamux's Session.GoAway, which resets them (see frameConn).
//
// It returns after a ping round trip (bounded by WriteTimeout): the peer
// answers the ping after it has read the GoAway, and frames arrive in
// order, so by then the streams it opened before are in NumStreams and a
// drain that waits for NumStreams to reach zero does not miss them.
func (s *Session) StopStreams() {
	if s.retired.CompareAndSwap(false, true) {
		s.conn.sendGoAway()
	}
	s.Ping()
}

// Retired reports whether the session takes no new streams (StopStreams).
func (s *Session) Retired() bool { return s.retired.Load() }

// closeWith closes the session and records why, for Cause.
func (s *Session) closeWith(err error) {
	s.cause.CompareAndSwap(nil, &err)
	s.Close()
}
