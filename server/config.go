package server

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// Config is the server agent's configuration. Zero durations take the
// defaults documented on each field.
type Config struct {
	Listen string           // TCP address of the mTLS listener, e.g. ":8443"
	TLS    tunnel.TLSPolicy // own certificate, trusted client CAs
	Routes map[string]Route // by route name; at least one

	Session tunnel.SessionConfig

	// HandshakeTimeout bounds the time from TCP accept to verified TLS,
	// a wait for one of the MaxHandshakes slots included; default 10 s.
	HandshakeTimeout time.Duration
	MaxHandshakes    int           // handshakes in progress at once; more wait; default 256
	HeaderTimeout    time.Duration // stream open to complete header; default 10 s
	DialTimeout      time.Duration // connect to a target; default 10 s
	HalfCloseTimeout time.Duration // see tunnel.JoinConfig; default 5 min
	IdleTimeout      time.Duration // see tunnel.JoinConfig; default 0, none
	// MaxSessionsPerPeer caps the sessions one client identity may hold
	// at once, so that one client (or a stolen key) cannot take every
	// handshake slot and file descriptor. A client agent keeps a few and
	// opens more only when every one carries its stream cap. Default 64.
	MaxSessionsPerPeer int
	DrainTimeout       time.Duration // on shutdown, wait for open streams; default 30 s
	// RecheckInterval is how often open sessions' client certificates are
	// verified again (revocation, expiry); default 30 s. Server.Recheck
	// forces one at once.
	RecheckInterval time.Duration
	Logger          *slog.Logger    // nil discards logs
	Metrics         *tunnel.Metrics // nil: none
}

// Route is where a route's streams go and who may open them.
type Route struct {
	// Target is dialled for each stream: host:port, or unix:/abs/path for
	// a unix stream socket (tunnel.UnixPrefix).
	Target string
	ACL    tunnel.ACL // deny unless AllowAll or a rule matches
	// ProxyProtocol ProxyV2 makes the agent write a PROXY protocol v2
	// header to the target before the stream's bytes: the app's address
	// as the client agent reported it, and the client's verified identity
	// (tunnel.ProxyHeader). The target must trust this agent, and every
	// client allowed on the route to report its apps' addresses honestly:
	// only the identity comes from the agent's own checks. "" or ProxyNone:
	// no header.
	ProxyProtocol string
}

// Route.ProxyProtocol values.
const (
	ProxyNone = "none"
	ProxyV2   = "v2"
)

// Validate checks the configuration without touching the network.
func (c *Config) Validate() error {
	if c.Listen == "" {
		return errors.New("server: no listen address")
	}
	if err := c.TLS.Validate(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := c.Session.Validate(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if len(c.Routes) == 0 {
		return errors.New("server: no routes")
	}
	for name, r := range c.Routes {
		if !tunnel.ValidRoute(name) {
			return fmt.Errorf("server: route %q: name must be 1-%d letters, digits, '.', '_' or '-'", name, tunnel.MaxRouteLen)
		}
		if err := checkTarget(r.Target); err != nil {
			return fmt.Errorf("server: route %q: %w", name, err)
		}
		if p := r.ProxyProtocol; p != "" && p != ProxyNone && p != ProxyV2 {
			return fmt.Errorf("server: route %q: proxy protocol %q: want %s or %s", name, p, ProxyV2, ProxyNone)
		}
		if err := r.ACL.Validate(); err != nil {
			return fmt.Errorf("server: route %q: %w", name, err)
		}
		if !r.ACL.AllowAll && len(r.ACL.Rules) == 0 {
			return fmt.Errorf("server: route %q allows nobody: add an allow rule or allow_all (deny by default)", name)
		}
	}
	return nil
}

// checkTarget accepts host:port and unix:/abs/path.
func checkTarget(target string) error {
	network, _, err := tunnel.SplitNetwork(target)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if network == "tcp" {
		if _, _, err := net.SplitHostPort(target); err != nil {
			return fmt.Errorf("target %q: %w", target, err)
		}
	}
	return nil
}

func (c *Config) withDefaults() Config {
	d := *c
	d.HandshakeTimeout = cmp.Or(d.HandshakeTimeout, 10*time.Second)
	d.MaxHandshakes = cmp.Or(d.MaxHandshakes, 256)
	d.MaxSessionsPerPeer = cmp.Or(d.MaxSessionsPerPeer, 64)
	d.HeaderTimeout = cmp.Or(d.HeaderTimeout, 10*time.Second)
	d.DialTimeout = cmp.Or(d.DialTimeout, 10*time.Second)
	d.HalfCloseTimeout = cmp.Or(d.HalfCloseTimeout, 5*time.Minute)
	d.DrainTimeout = cmp.Or(d.DrainTimeout, 30*time.Second)
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return d
}
