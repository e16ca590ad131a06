package client

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// Config is the client agent's configuration. Zero durations take the
// defaults documented on each field.
type Config struct {
	Server string           // host:port of the server agent
	TLS    tunnel.TLSPolicy // ServerName defaults to the host of Server
	Routes []Route          // at least one

	Session tunnel.SessionConfig
	// Sessions is how many sessions are kept to the server; streams go to
	// the least loaded. More than one lets TLS use more than one core and
	// keeps one bulk stream from delaying the others behind it in one
	// connection. Default: the number of CPUs, at least 2.
	Sessions         int
	HandshakeTimeout time.Duration // dial + TLS + confirming ping; default 10 s
	ConnectWait      time.Duration // how long an app connection waits for a session; default 10 s
	HeaderTimeout    time.Duration // wait for the server's answer to a stream; default 10 s
	HalfCloseTimeout time.Duration // see tunnel.JoinConfig; default 5 min
	DrainTimeout     time.Duration // on shutdown, wait for open streams; default 30 s
	RecheckInterval  time.Duration // re-verify the server of open sessions; default 30 s

	Logger *slog.Logger // nil discards logs
}

// Route binds a local listener to a route on the server.
type Route struct {
	Listen string // local TCP address, e.g. 127.0.0.1:15432
	Route  string // route name on the server; "default" when empty
}

// Validate checks the configuration without touching the network.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Server); err != nil {
		return fmt.Errorf("client: server address %q: %w", c.Server, err)
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
		if name := cmp.Or(r.Route, "default"); !tunnel.ValidRoute(name) {
			return fmt.Errorf("client: route %d: invalid route name %q", i+1, name)
		}
	}
	return nil
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.TLS.ServerName == "" {
		d.TLS.ServerName, _, _ = net.SplitHostPort(d.Server)
	}
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
	}
	return d
}
