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

// ErrConnAborted ends a session whose connection the kernel aborted (a
// reset, or TCP_USER_TIMEOUT) when the abort's error went to a write and
// the read saw only an end of data: the peer did not close it. It wraps
// that write's error.
var ErrConnAborted = errors.New("connection aborted (timeout or reset)")

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
	// Stop new streams. A server sends GoAway; a client stops opening
	// streams here and its pool drains the session as if the server had
	// sent one (it answers with its own GoAway once its streams are done,
	// so it cannot cross a stream it is opening). Either way the session
	// ends the way a drain does ("Drain" in doc.go) once both sides are
	// done with it, or at the end of the grace period.
	s.cause.CompareAndSwap(nil, &errRetired)
	s.retired.Store(true)
	if s.client {
		s.conn.stopStreams()
	} else {
		s.GoAway()
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	select {
	case <-s.CloseChan():
	case <-deadline.C:
		err := fmt.Errorf("%w: %d streams still open after %s", ErrLifetimeExceeded, s.NumStreams(), grace)
		s.cause.Store(&err)
		s.Close()
	}
}

var errRetired error = ErrLifetimeExceeded

// Retired reports whether the session reached its lifetime and takes no
// new streams.
func (s *Session) Retired() bool { return s.retired.Load() }

// closeWith closes the session and records why, for Cause.
func (s *Session) closeWith(err error) {
	s.cause.CompareAndSwap(nil, &err)
	s.Close()
}
