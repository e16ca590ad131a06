package tunnel

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// What a session reports about itself for the status report and the
// metrics: its streams and their bytes, counted as they move, whether it
// still takes new streams, and why it ended.

// Read and Write count the stream's bytes in its session's totals.
func (s *Stream) Read(p []byte) (int, error) {
	n, err := s.Stream.Read(p)
	if s.sess != nil && n > 0 {
		s.sess.count(!s.sess.client, n) // a client reads what comes down
	}
	return n, err
}

func (s *Stream) Write(p []byte) (int, error) {
	n, err := s.Stream.Write(p)
	if s.sess != nil && n > 0 {
		s.sess.count(s.sess.client, n)
	}
	return n, err
}

func (s *Session) count(up bool, n int) {
	if up {
		s.up.Add(int64(n))
	} else {
		s.down.Add(int64(n))
	}
}

// draining reports whether the session takes no new streams: a GoAway
// went either way, or it reached its lifetime.
func (s *Session) draining() bool {
	select {
	case <-s.conn.goAway:
		return true
	default:
		return s.sentGoAway.Load() || s.retired.Load()
	}
}

// SessionInfo is a snapshot of a session, for the status report.
type SessionInfo struct {
	ID           string
	Peer         string // the peer's identity (PeerID)
	Remote       string
	Server       string // client side: the server address it was dialled at
	Established  time.Time
	Streams      int   // open now
	StreamsTotal int64 // opened since the session was established
	Up, Down     int64 // stream bytes, app to target and target to app
	Draining     bool  // takes no new streams
}

// Info returns a snapshot of the session.
func (s *Session) Info() SessionInfo {
	return SessionInfo{
		ID: s.ID, Peer: PeerID(s.Peer), Remote: s.Remote.String(), Server: s.Server,
		Established: s.Established, Streams: s.NumStreams(), StreamsTotal: s.streams.Load(),
		Up: s.up.Load(), Down: s.down.Load(), Draining: s.draining(),
	}
}

// ClassifyEnd names why a session ended in a word fit for a metric label:
// "closed" (by this agent: shutdown, drain, a refused session), the
// verification reason when a recheck ended it (revoked, expired, ...),
// "peer_unresponsive", "lifetime" (replaced after MaxLifetime or before
// its peer certificate expired), "peer_closed", "timeout",
// "rejected_by_peer" or "error".
func ClassifyEnd(cause error) string {
	var verr *VerifyError
	var op *net.OpError
	switch {
	case cause == nil:
		return "closed"
	case errors.As(cause, &verr):
		return string(verr.Reason)
	case errors.Is(cause, ErrPeerUnresponsive):
		return "peer_unresponsive"
	case errors.Is(cause, ErrLifetimeExceeded):
		return "lifetime"
	case errors.Is(cause, io.EOF), errors.Is(cause, io.ErrUnexpectedEOF), errors.Is(cause, syscall.ECONNRESET):
		return "peer_closed"
	case errors.Is(cause, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(cause, &op) && op.Op == "remote error":
		return "rejected_by_peer"
	}
	return "error"
}
