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
//
// release gives back the stream's place under the session's cap (see
// acceptStreams); nil means it has none, and the stream is refused. The
// place is given back as soon as the stream no longer uses it, before the
// log line; a refused stream gives it back at once, so that one its
// client is slow to finish (Finish waits up to the header timeout) does
// not keep other streams out.
func (s *Server) serveStream(ctx context.Context, sess *tunnel.Session, st *tunnel.Stream, release func(), log *slog.Logger) {
	start := time.Now()
	var (
		req    tunnel.Request
		target net.Conn
		resp   = tunnel.Response{Status: tunnel.StatusUnavailable,
			Reason: fmt.Sprintf("too many streams on this session (limit %d)", s.cfg.Session.StreamCap())}
		err error
	)
	if release != nil {
		req, target, resp, err = s.admit(ctx, sess, st)
	}
	// The stream's attributes go with each line rather than into a
	// log.With: a With per stream (two with an origin) formats and
	// allocates a child logger that logs one line.
	id := []any{"route", req.Route, "stream", st.StreamID()}
	if req.HasOrigin() {
		id = append(id, "app", req.Src.String())
	}
	with := func(kv ...any) []any { return append(id[:len(id):len(id)], kv...) }
	meter := s.meter(req.Route)
	if resp.Status != tunnel.StatusOK {
		if release != nil {
			release()
		}
		meter.Refused(resp.Status.String())
		log.Warn("stream rejected", with("result", resp.Status.String(), "reason", resp.Reason, "err", err)...)
		s.reply(st, resp)
		st.Finish(s.cfg.HeaderTimeout)
		return
	}
	if err := s.reply(st, resp); err != nil {
		target.Close()
		st.Reset() // the client reset it, or it is unusable: free it on both ends
		release()
		meter.Refused(tunnel.ResultError)
		log.Warn("stream ended", with("result", tunnel.ResultError, "err", err)...)
		return
	}
	meter.Opened(time.Since(start))
	// The target is the local side: what it sends goes down to the app.
	res := tunnel.Join(target, st, tunnel.JoinConfig{
		HalfCloseTimeout: s.cfg.HalfCloseTimeout, IdleTimeout: s.cfg.IdleTimeout,
		Sent: meter.Down, Received: meter.Up,
		Go: s.workers.Go,
	})
	release() // before the log line: a client that saw it may open the next stream
	attrs := with("sent", res.Received, "received", res.Sent, "duration", time.Since(start).Round(time.Microsecond))
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
// client, and err (if any) carries the detail for our own log. req is as
// much of the header as was read.
func (s *Server) admit(ctx context.Context, sess *tunnel.Session, st *tunnel.Stream) (tunnel.Request, net.Conn, tunnel.Response, error) {
	st.SetReadDeadline(time.Now().Add(s.cfg.HeaderTimeout))
	req, err := tunnel.ReadRequest(st)
	st.SetReadDeadline(time.Time{})
	if err != nil {
		return req, nil, tunnel.Response{Status: tunnel.StatusBadRequest, Reason: err.Error()}, err
	}
	name := req.Route
	route, ok := s.cfg.Routes[name]
	if !ok {
		return req, nil, tunnel.Response{Status: tunnel.StatusUnknownRoute, Reason: fmt.Sprintf("no route %q on this server", name)}, nil
	}
	if ok, _ := route.ACL.Allows(sess.Peer); !ok {
		return req, nil, tunnel.Response{Status: tunnel.StatusForbidden,
			Reason: fmt.Sprintf("identity %s is not allowed on route %q", tunnel.PeerID(sess.Peer), name)}, nil
	}
	target, resp, err := s.connect(ctx, sess, req, route)
	return req, target, resp, err
}

// connect dials the route's target and, if the route says so, writes the
// PROXY protocol header, within DialTimeout.
func (s *Server) connect(ctx context.Context, sess *tunnel.Session, req tunnel.Request, route Route) (net.Conn, tunnel.Response, error) {
	var header []byte
	if route.ProxyProtocol == ProxyV2 {
		var err error
		header, err = tunnel.AppendProxyHeader(nil, tunnel.ProxyHeader{
			Src: req.Src, Dst: req.Dst, Peer: sess.Peer, TLSVersion: sess.TLSVersion,
		})
		if err != nil { // built before dialling: the target never sees a connection we give up
			return nil, tunnel.Response{Status: tunnel.StatusForbidden,
				Reason: fmt.Sprintf("route %q: the client identity does not fit in a PROXY protocol header", req.Route)}, err
		}
	}
	// Not cancelled by shutdown: a stream that reaches us while we drain
	// crossed our GoAway and is served like any other.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DialTimeout)
	defer cancel()
	// DialContext, not Dialer.DialTCP with a netip.AddrPort: that binds the
	// socket to port 0 before connecting, and bind picks ports without
	// regard to the destination, so under connection churn (TIME_WAIT) it
	// ran out of ports ("bind: address already in use") in the
	// connection-rate bench, where connect alone does not.
	network, address, _ := tunnel.SplitNetwork(route.Target) // checked by Validate
	d := net.Dialer{KeepAlive: tunnel.KeepAlive(address)}
	target, err := d.DialContext(dctx, network, address)
	if err == nil && header != nil {
		// One write, as the spec asks: receivers such as HAProxy read the
		// header at once and refuse one that arrives in pieces.
		deadline, _ := dctx.Deadline()
		target.SetWriteDeadline(deadline)
		if _, err = target.Write(header); err != nil {
			target.Close()
			err = fmt.Errorf("write PROXY protocol header: %w", err)
		}
		target.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		reason := "target unreachable"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "target dial timed out"
		}
		return nil, tunnel.Response{Status: tunnel.StatusUnreachable, Reason: fmt.Sprintf("route %q: %s", req.Route, reason)}, err
	}
	return target, tunnel.Response{Status: tunnel.StatusOK}, nil
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
