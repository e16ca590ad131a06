package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// Client is a client agent. Create it with New, then Listen and Serve (or
// Run, which does both).
type Client struct {
	cfg       Config
	log       *slog.Logger
	pool      *tunnel.Pool
	guard     *tunnel.Guard
	listeners []net.Listener
	wg        sync.WaitGroup // accept loops and connection handlers
	workers   tunnel.Workers // run connection handlers and their copiers
}

// New validates cfg and returns a client that is not yet listening.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	policies := map[string]*tunnel.TLSPolicy{}
	var dialers []*tunnel.Dialer
	for _, srv := range c.Servers {
		policy := c.serverPolicy(srv)
		policies[srv] = &policy
		dialers = append(dialers, &tunnel.Dialer{
			Address:          srv,
			TLS:              policy.ClientConfig(),
			Session:          c.Session,
			HandshakeTimeout: c.HandshakeTimeout,
		})
	}
	guard := &tunnel.Guard{
		Verify:   func(s *tunnel.Session) error { return policies[s.Server].VerifyServer(s) },
		Interval: c.RecheckInterval,
		Logger:   c.Logger,
	}
	for _, r := range c.Routes {
		c.Metrics.Route(r.Route) // reported from the start, with zero counts
	}
	return &Client{
		cfg:   c,
		log:   c.Logger,
		guard: guard,
		pool: &tunnel.Pool{
			Dialers:   dialers,
			Size:      c.Sessions,
			BusyRate:  c.BusyRate,
			Reconnect: c.Reconnect,
			Logger:    c.Logger,
			Guard:     guard,
			Metrics:   c.Metrics,
		},
	}, nil
}

// Listen binds every route's listener and returns their addresses in route
// order. On error nothing stays bound.
func (c *Client) Listen() ([]net.Addr, error) {
	var addrs []net.Addr
	for _, r := range c.cfg.Routes {
		ln, err := listen(r)
		if err != nil {
			c.closeListeners()
			return nil, fmt.Errorf("client: listen on %s for route %q: %w", r.Listen, r.Route, err)
		}
		c.listeners = append(c.listeners, ln)
		addrs = append(addrs, ln.Addr())
		c.log.Info("listening", "addr", ln.Addr().String(), "route", r.Route, "servers", strings.Join(c.cfg.Servers, ","))
	}
	return addrs, nil
}

func (c *Client) closeListeners() {
	for _, ln := range c.listeners {
		ln.Close()
	}
}

// Ready reports whether a new app connection would get a session now
// (some server has a usable one), and the state of every server: "up",
// "down: draining", "down: connecting" (no dial has ended yet) or
// "down: " and the reason and error of the last failed dial.
func (c *Client) Ready() (bool, map[string]string) {
	ready := false
	servers := map[string]string{}
	for _, st := range c.pool.Status() {
		switch {
		case st.Sessions > 0:
			ready = true
			servers[st.Address] = "up"
		case st.Draining > 0:
			servers[st.Address] = "down: draining"
		case st.LastErr != nil:
			servers[st.Address] = fmt.Sprintf("down: %s (%d failed dials): %v", tunnel.Classify(st.LastErr), st.Failures, st.LastErr)
		default:
			servers[st.Address] = "down: connecting"
		}
	}
	return ready, servers
}

// Sessions returns a snapshot of the open sessions, server by server.
func (c *Client) Sessions() []tunnel.SessionInfo {
	var out []tunnel.SessionInfo
	for _, s := range c.pool.Sessions() {
		out = append(out, s.Info())
	}
	return out
}

// Recheck verifies the server certificate of every open session again now
// and closes sessions that no longer pass. It does not block.
func (c *Client) Recheck() { c.guard.Recheck() }

// Run listens and serves until ctx is done.
func (c *Client) Run(ctx context.Context) error {
	if _, err := c.Listen(); err != nil {
		return err
	}
	return c.Serve(ctx)
}

// Serve dials the servers and accepts app connections until ctx is done.
// Then it stops listening, lets open connections finish for up to
// DrainTimeout, closes the sessions (the remaining apps get resets) and
// returns when all goroutines ended.
func (c *Client) Serve(ctx context.Context) error {
	if len(c.listeners) == 0 {
		return errors.New("client: Serve before Listen")
	}
	c.pool.Start()
	conns := &connSet{m: map[net.Conn]struct{}{}}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.guard.Run(ctx)
	}()
	for i, ln := range c.listeners {
		c.wg.Add(1)
		go c.acceptLoop(ctx, ln, c.cfg.Routes[i].Route, conns)
	}
	<-ctx.Done()
	c.closeListeners()
	c.log.Info("draining", "connections", conns.len(), "timeout", c.cfg.DrainTimeout)
	if !conns.wait(c.cfg.DrainTimeout) {
		c.log.Warn("drain timeout: resetting open connections", "connections", conns.len())
	}
	c.pool.Close()
	conns.resetAll()
	c.wg.Wait()
	c.workers.Close()
	c.log.Info("drained")
	return nil
}

func (c *Client) acceptLoop(ctx context.Context, ln net.Listener, route string, conns *connSet) {
	defer c.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				c.log.Error("accept failed", "route", route, "err", err)
			}
			return
		}
		conns.add(conn)
		c.wg.Add(1)
		c.workers.Go(func() {
			defer c.wg.Done()
			defer conns.remove(conn)
			c.serveConn(ctx, conn, route)
		})
	}
}

// serveConn carries one app connection through a stream.
func (c *Client) serveConn(ctx context.Context, app net.Conn, route string) {
	start := time.Now()
	meter := c.cfg.Metrics.Route(route)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ConnectWait)
	st, sess, err := c.pool.Open(wctx)
	cancel()
	if err != nil {
		tunnel.Reset(app)
		meter.Refused(tunnel.ResultNoSession)
		c.logOpenFailed(c.log.With("route", route, "app", appName(app)), err)
		return
	}
	defer c.pool.Release(sess)
	// One child logger per stream, made once the stream is open. There
	// were two (one before Open, one after): 4% of the client agent's CPU
	// in a connection-rate profile.
	log := c.log.With("route", route, "app", appName(app), "server", sess.Server, "peer", tunnel.PeerID(sess.Peer), "session", sess.ID, "stream", st.StreamID())
	req := tunnel.Request{Route: route}
	req.Src, req.Dst = appOrigin(app)
	hdr, err := tunnel.AppendRequest(nil, req)
	if err == nil {
		_, err = st.Write(hdr)
	}
	if err != nil {
		tunnel.Reset(app)
		st.Reset()
		meter.Refused(tunnel.ResultError)
		log.Error("stream open failed: resetting app connection", "err", err)
		return
	}
	c.carry(log, app, st, meter, start)
}

// carry joins an app connection with its stream once the header is sent,
// then counts and logs how the stream ended.
func (c *Client) carry(log *slog.Logger, app net.Conn, st *tunnel.Stream, meter *tunnel.RouteMeter, start time.Time) {
	opened := false // the server said ok: the stream counts as open
	res := tunnel.Join(app, st, tunnel.JoinConfig{
		HalfCloseTimeout: c.cfg.HalfCloseTimeout,
		Prelude: func(r io.Reader) error {
			st.SetReadDeadline(time.Now().Add(c.cfg.HeaderTimeout))
			defer st.SetReadDeadline(time.Time{})
			if err := checkResponse(r); err != nil {
				return err
			}
			opened = true
			meter.Opened(time.Since(start))
			return nil
		},
		Sent: meter.Up, Received: meter.Down,
		Go: c.workers.Go,
	})
	// Counted before the log line, so that whoever reads the line finds
	// the stream in the metrics.
	var refused *RefusedError
	result := tunnel.ResultOK
	switch {
	case errors.As(res.Err, &refused):
		result = refused.Status.String()
	case res.Err != nil:
		result = tunnel.ResultReset
	}
	if opened {
		meter.Ended(result)
	} else {
		meter.Refused(result)
	}
	attrs := []any{"sent", res.Sent, "received", res.Received, "duration", time.Since(start).Round(time.Microsecond), "result", result}
	switch {
	case refused != nil:
		log.Warn("stream refused by server", append(attrs, "reason", refused.Reason)...)
	case res.Err != nil:
		log.Warn("stream ended", append(attrs, "err", res.Err)...)
	default:
		log.Info("stream ended", attrs...)
	}
}

// appOrigin returns the app's address and the one it connected to, for the
// server agent to pass on (PROXY protocol). An app on a unix socket has
// none. IPv4 apps on a dual-stack listener show as IPv4, not IPv4-mapped
// IPv6.
func appOrigin(app net.Conn) (src, dst netip.AddrPort) {
	remote, ok1 := app.RemoteAddr().(*net.TCPAddr)
	local, ok2 := app.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return src, dst
	}
	src, dst = remote.AddrPort(), local.AddrPort()
	return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
}

// appName names an app connection in logs: its address, or "unix" for a
// unix socket peer, which has no name.
func appName(app net.Conn) string {
	if _, ok := app.(*net.UnixConn); ok {
		return "unix"
	}
	return app.RemoteAddr().String()
}

func (c *Client) logOpenFailed(log *slog.Logger, err error) {
	var ns *tunnel.NoSessionError
	if !errors.As(err, &ns) {
		log.Error("stream open failed: resetting app connection", "err", err)
		return
	}
	attrs := []any{"servers", strings.Join(ns.Servers, ","), "waited", ns.Waited.Round(time.Millisecond), "refused", ns.Refused}
	if ns.Last != nil {
		attrs = append(attrs, "last_dial_error", ns.Last.Error(), "reason", tunnel.Classify(ns.Last))
	}
	log.Error("no session: resetting app connection", attrs...)
}

// RefusedError is a stream the server agent did not accept.
type RefusedError struct {
	Status tunnel.Status
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("server refused stream: %s: %s", e.Status, e.Reason)
}

func checkResponse(r io.Reader) error {
	resp, err := tunnel.ReadResponse(r)
	if err != nil {
		return err
	}
	if resp.Status != tunnel.StatusOK {
		return &RefusedError{Status: resp.Status, Reason: resp.Reason}
	}
	return nil
}
