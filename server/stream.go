package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// serveStream reads the stream header, authorises and dials, answers, and
// joins the stream with the target. The target is dialled as soon as the
// header is read, never waiting for app bytes, so server-first protocols
// (MySQL, SMTP) get their greeting through.
func (s *Server) serveStream(ctx context.Context, sess *tunnel.Session, st *tunnel.Stream, log *slog.Logger) {
	start := time.Now()
	route, target, resp, err := s.admit(ctx, sess, st)
	log = log.With("route", route, "stream", st.StreamID())
	meter := s.meter(route)
	if resp.Status != tunnel.StatusOK {
		meter.Refused(resp.Status.String())
		log.Warn("stream rejected", "result", resp.Status.String(), "reason", resp.Reason, "err", err)
		s.reply(st, resp)
		st.Finish(s.cfg.HeaderTimeout)
		return
	}
	if err := s.reply(st, resp); err != nil {
		target.Close()
		st.Reset() // the client reset it, or it is unusable: free it on both ends
		meter.Refused(tunnel.ResultError)
		log.Warn("stream ended", "result", tunnel.ResultError, "err", err)
		return
	}
	meter.Opened(time.Since(start))
	// The target is the local side: what it sends goes down to the app.
	res := tunnel.Join(target, st, tunnel.JoinConfig{
		HalfCloseTimeout: s.cfg.HalfCloseTimeout, IdleTimeout: s.cfg.IdleTimeout,
		Sent: meter.Down, Received: meter.Up,
	})
	attrs := []any{"sent", res.Received, "received", res.Sent, "duration", time.Since(start).Round(time.Microsecond)}
	if res.Err != nil {
		meter.Ended(tunnel.ResultReset)
		log.Warn("stream ended", append(attrs, "result", tunnel.ResultReset, "err", res.Err)...)
		return
	}
	meter.Ended(tunnel.ResultOK)
	log.Info("stream ended", append(attrs, "result", tunnel.ResultOK)...)
}

// meter returns the metrics of route. A stream that names no configured
// route is counted under the route "", so that clients cannot add labels.
func (s *Server) meter(route string) *tunnel.RouteMeter {
	if _, ok := s.cfg.Routes[route]; !ok {
		route = ""
	}
	return s.cfg.Metrics.Route(route)
}

// admit reads the header and decides. On StatusOK target is the dialled
// connection; otherwise target is nil, resp says why in words fit for the
// client, and err (if any) carries the detail for our own log.
func (s *Server) admit(ctx context.Context, sess *tunnel.Session, st *tunnel.Stream) (string, net.Conn, tunnel.Response, error) {
	// A stream beyond the cap is refused: the cap keeps the session within
	// its memory budget (tunnel.SessionConfig.MemoryBudget).
	if n, limit := sess.NumStreams(), s.cfg.Session.StreamCap(); n > limit {
		return "", nil, tunnel.Response{Status: tunnel.StatusUnavailable,
			Reason: fmt.Sprintf("too many streams on this session (%d, limit %d)", n, limit)}, nil
	}
	st.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	name, err := tunnel.ReadRequest(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		return "", nil, tunnel.Response{Status: tunnel.StatusBadRequest, Reason: err.Error()}, err
	}
	route, ok := s.cfg.Routes[name]
	if !ok {
		return name, nil, tunnel.Response{Status: tunnel.StatusUnknownRoute, Reason: fmt.Sprintf("no route %q on this server", name)}, nil
	}
	if ok, _ := route.ACL.Allows(sess.Peer); !ok {
		return name, nil, tunnel.Response{Status: tunnel.StatusForbidden,
			Reason: fmt.Sprintf("identity %s is not allowed on route %q", tunnel.PeerID(sess.Peer), name)}, nil
	}
	// Not cancelled by shutdown: a stream that reaches us while we drain
	// crossed our GoAway and is served like any other.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	target, err := d.DialContext(dctx, "tcp", route.Target)
	if err != nil {
		reason := "target unreachable"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "target dial timed out"
		}
		return name, nil, tunnel.Response{Status: tunnel.StatusUnreachable, Reason: fmt.Sprintf("route %q: %s", name, reason)}, err
	}
	return name, target, tunnel.Response{Status: tunnel.StatusOK}, nil
}

// reply writes resp with a bound, since a stalled client must not pin this
// goroutine.
func (s *Server) reply(st *tunnel.Stream, resp tunnel.Response) error {
	st.SetWriteDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	defer st.SetWriteDeadline(time.Time{})
	_, err := st.Write(tunnel.AppendResponse(nil, resp))
	if err != nil {
		return fmt.Errorf("write stream response: %w", err)
	}
	return nil
}
