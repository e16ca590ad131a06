package client

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// Config is the client agent's configuration. Zero durations take the
// defaults documented on each field.
type Config struct {
	// Servers are the server agents (host:port), at least one. They must
	// all serve the same routes: each stream goes to the least loaded
	// session of any server that is up and not draining.
	Servers []string
	// TLS is the policy for every server. When ServerName is empty, each
	// server's certificate must name that server's own host.
	TLS    tunnel.TLSPolicy
	Routes []Route // at least one

	Session tunnel.SessionConfig
	// Sessions is how many sessions are kept to each server; streams go to
	// the least loaded. More than one lets TLS use more than one core and
	// keeps one bulk stream from delaying the others behind it in one
	// connection. Default: the number of CPUs, at least 2.
	Sessions int
	// BusyRate is the traffic (bytes a second, both ways) above which a
	// session counts as busy, so that new streams go to a quiet or spare
	// session instead of queueing behind its bulk data (tunnel.Pool).
	// 0: tunnel.DefaultBusyRate; negative: off.
	BusyRate         int64
	HandshakeTimeout time.Duration // dial + TLS + confirming ping; default 10 s
	// ConnectWait is how long an app connection waits for a session when
	// no server has a usable one (down, restarting, draining) before it is
	// reset. It is reset at once when every server refused the session in
	// the TLS handshake, which waiting does not mend. Default 10 s.
	ConnectWait time.Duration
	// Reconnect tunes the redials of a server that failed (backoff from
	// 200 ms to 30 s with full jitter; see tunnel.Reconnect).
	Reconnect        tunnel.Reconnect
	HeaderTimeout    time.Duration // wait for the server's answer to a stream; default 10 s
	HalfCloseTimeout time.Duration // see tunnel.JoinConfig; default 5 min
	DrainTimeout     time.Duration // on shutdown, wait for open streams; default 30 s
	RecheckInterval  time.Duration // re-verify the server of open sessions; default 30 s

	Logger  *slog.Logger    // nil discards logs
	Metrics *tunnel.Metrics // nil: none
}

// Route binds a local listener to a route on the server.
type Route struct {
	// Listen is a local TCP address (127.0.0.1:15432) or unix:/abs/path for
	// a unix stream socket (tunnel.UnixPrefix).
	Listen string
	Route  string // route name on the server; "default" when empty
	// ListenMode is the permission bits of a unix socket file (connecting
	// needs write permission). Default 0600: only the agent's own user,
	// since whoever can connect uses the agent's identity. Only for unix:
	// listeners.
	ListenMode os.FileMode
}

// Validate checks the configuration without touching the network.
func (c *Config) Validate() error {
	if len(c.Servers) == 0 {
		return errors.New("client: no server address")
	}
	for i, srv := range c.Servers {
		if _, _, err := net.SplitHostPort(srv); err != nil {
			return fmt.Errorf("client: server address %q: %w", srv, err)
		}
		if slices.Contains(c.Servers[:i], srv) {
			return fmt.Errorf("client: server %s given twice", srv)
		}
	}
	if err := c.Reconnect.Validate(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := c.Session.Validate(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if len(c.Routes) == 0 {
		return errors.New("client: no routes")
	}
	seen := map[string]bool{}
	for i, r := range c.Routes {
		if r.Listen == "" {
			return fmt.Errorf("client: route %d: no listen address", i+1)
		}
		if _, port, _ := net.SplitHostPort(r.Listen); seen[r.Listen] && port != "0" {
			return fmt.Errorf("client: listen address %s used twice", r.Listen)
		}
		seen[r.Listen] = true
		if err := checkListen(r); err != nil {
			return fmt.Errorf("client: route %d: %w", i+1, err)
		}
		if name := cmp.Or(r.Route, "default"); !tunnel.ValidRoute(name) {
			return fmt.Errorf("client: route %d: invalid route name %q", i+1, name)
		}
	}
	return nil
}

// checkListen checks a unix: listen address and its mode. A TCP address is
// checked by Listen, which names the route when it fails.
func checkListen(r Route) error {
	network, _, err := tunnel.SplitNetwork(r.Listen)
	switch {
	case err != nil:
		return fmt.Errorf("listen: %w", err)
	case network != "unix" && r.ListenMode != 0:
		return fmt.Errorf("listen mode %#o: a mode applies to unix: listeners only, not to %s", uint32(r.ListenMode), r.Listen)
	case r.ListenMode&^os.ModePerm != 0:
		return fmt.Errorf("listen mode %#o: want permission bits only (at most 0777)", uint32(r.ListenMode))
	}
	return nil
}

func (c *Config) withDefaults() Config {
	d := *c
	d.Servers = slices.Clone(c.Servers)
	d.Sessions = cmp.Or(d.Sessions, max(2, runtime.NumCPU()))
	d.ConnectWait = cmp.Or(d.ConnectWait, 10*time.Second)
	d.HeaderTimeout = cmp.Or(d.HeaderTimeout, 10*time.Second)
	d.HalfCloseTimeout = cmp.Or(d.HalfCloseTimeout, 5*time.Minute)
	d.DrainTimeout = cmp.Or(d.DrainTimeout, 30*time.Second)
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	d.Routes = slices.Clone(c.Routes)
	for i := range d.Routes {
		d.Routes[i].Route = cmp.Or(d.Routes[i].Route, "default")
		d.Routes[i].ListenMode = cmp.Or(d.Routes[i].ListenMode, 0o600)
	}
	return d
}

// serverPolicy is the TLS policy for one server: ServerName, if not set,
// is the server's own host.
func (c *Config) serverPolicy(server string) tunnel.TLSPolicy {
	p := c.TLS
	if p.ServerName == "" {
		p.ServerName, _, _ = net.SplitHostPort(server)
	}
	return p
}
