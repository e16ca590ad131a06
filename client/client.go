package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
}

// New validates cfg and returns a client that is not yet listening.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	guard := &tunnel.Guard{
		Verify:   c.TLS.VerifyServer,
		Interval: c.RecheckInterval,
		Logger:   c.Logger,
	}
	return &Client{
		cfg:   c,
		log:   c.Logger,
		guard: guard,
		pool: &tunnel.Pool{
			Dialer: &tunnel.Dialer{
				Address:          c.Server,
				TLS:              c.TLS.ClientConfig(),
				Session:          c.Session,
				HandshakeTimeout: c.HandshakeTimeout,
			},
			Size:   c.Sessions,
			Logger: c.Logger,
			Guard:  guard,
		},
	}, nil
}

// Listen binds every route's listener and returns their addresses in route
// order. On error nothing stays bound.
func (c *Client) Listen() ([]net.Addr, error) {
	var addrs []net.Addr
	for _, r := range c.cfg.Routes {
		ln, err := net.Listen("tcp", r.Listen)
		if err != nil {
			c.closeListeners()
			return nil, fmt.Errorf("client: listen on %s for route %q: %w", r.Listen, r.Route, err)
		}
		c.listeners = append(c.listeners, ln)
		addrs = append(addrs, ln.Addr())
		c.log.Info("listening", "addr", ln.Addr().String(), "route", r.Route, "server", c.cfg.Server)
	}
	return addrs, nil
}

func (c *Client) closeListeners() {
	for _, ln := range c.listeners {
		ln.Close()
	}
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

// Serve accepts app connections until ctx is done. Then it stops listening,
// lets open connections finish for up to DrainTimeout, closes the sessions
// (the remaining apps get resets) and returns when all goroutines ended.
func (c *Client) Serve(ctx context.Context) error {
	if len(c.listeners) == 0 {
		return errors.New("client: Serve before Listen")
	}
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
	if !conns.wait(c.cfg.DrainTimeout) {
		c.log.Warn("drain timeout: resetting open connections", "connections", conns.len())
	}
	c.pool.Close()
	conns.resetAll()
	c.wg.Wait()
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
		go func() {
			defer c.wg.Done()
			defer conns.remove(conn)
			c.serveConn(ctx, conn, route)
		}()
	}
}

// serveConn carries one app connection through a stream.
func (c *Client) serveConn(ctx context.Context, app net.Conn, route string) {
	start := time.Now()
	log := c.log.With("route", route, "app", app.RemoteAddr().String())
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ConnectWait)
	st, sess, err := c.pool.Open(wctx)
	cancel()
	if err != nil {
		tunnel.Reset(app)
		log.Error("stream open failed: resetting app connection", "err", err)
		return
	}
	log = log.With("peer", tunnel.PeerID(sess.Peer), "stream", st.StreamID())
	hdr, err := tunnel.AppendRequest(nil, route)
	if err == nil {
		_, err = st.Write(hdr)
	}
	if err != nil {
		tunnel.Reset(app)
		st.Reset()
		log.Error("stream open failed: resetting app connection", "err", err)
		return
	}
	res := tunnel.Join(app, st, tunnel.JoinConfig{
		HalfCloseTimeout: c.cfg.HalfCloseTimeout,
		Prelude: func(r io.Reader) error {
			st.SetReadDeadline(time.Now().Add(c.cfg.HeaderTimeout))
			defer st.SetReadDeadline(time.Time{})
			return checkResponse(r)
		},
	})
	attrs := []any{"sent", res.Sent, "received", res.Received, "duration", time.Since(start).Round(time.Microsecond)}
	var refused *RefusedError
	switch {
	case errors.As(res.Err, &refused):
		log.Warn("stream refused by server", append(attrs, "result", refused.Status.String(), "reason", refused.Reason)...)
	case res.Err != nil:
		log.Warn("stream ended", append(attrs, "result", "reset", "err", res.Err)...)
	default:
		log.Info("stream ended", append(attrs, "result", "ok")...)
	}
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
