package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/urfave/cli/v2"
)

func clientCommand() *cli.Command {
	return &cli.Command{
		Name:  "client",
		Usage: "run the client agent: listen locally and carry each connection to the server agent",
		Flags: slices.Concat(tlsFlags(), verifyFlags(), adminFlags(), []cli.Flag{
			&cli.BoolFlag{Name: "legacy-cn", Usage: "accept a server certificate without any SAN whose common name matches --server-name (logged)", EnvVars: env("LEGACY_CN")},
			&cli.StringFlag{Name: "listen", Usage: "local listen `ADDR`, e.g. 127.0.0.1:15432, or a unix socket, unix:/run/mtunnel/pg.sock", EnvVars: env("LISTEN")},
			&cli.StringFlag{Name: "listen-mode", Usage: "permission bits of a unix: --listen socket file, in octal; whoever can connect uses this agent's identity", DefaultText: "0600", EnvVars: env("LISTEN_MODE")},
			&cli.StringSliceFlag{Name: "server", Usage: "server agent `HOST:PORT`; repeat it for several servers serving the same routes (MTUNNEL_SERVER: comma-separated)", EnvVars: env("SERVER")},
			&cli.StringFlag{Name: "server-name", Usage: "name every server certificate must carry (default: the host of each --server)", EnvVars: env("SERVER_NAME")},
			&cli.StringFlag{Name: "route", Value: "default", Usage: "route `NAME` on the server for --listen", EnvVars: env("ROUTE")},
			&cli.IntFlag{Name: "sessions", Usage: "sessions kept open to the server; streams go to the least loaded", DefaultText: "CPUs, at least 2", EnvVars: env("SESSIONS")},
			&cli.DurationFlag{Name: "connect-wait", Usage: "how long a new connection waits for a session before a reset", DefaultText: "10s", EnvVars: env("CONNECT_WAIT")},
			&cli.DurationFlag{Name: "reconnect-max", Usage: "longest delay between redials of a server that is down", DefaultText: "30s; waiting connections cut it to 1s", EnvVars: env("RECONNECT_MAX")},
		}),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg, tl, adm, err := clientSetup(c)
			if err != nil {
				return err
			}
			cfg.Logger = log
			tl.setLogger(log)
			cfg.TLS.Logger = log
			cfg.Metrics = adm.agentMetrics()
			cl, err := client.New(cfg)
			if err != nil {
				return configErr(err)
			}
			addrs, err := cl.Listen()
			if err != nil {
				return configErrorf("%w (the address comes from --listen, MTUNNEL_LISTEN or a route's listen in the config file)", err)
			}
			_, stopAdmin, err := adm.start(log, agentView{ready: clientReadiness(cl), sessions: cl.Sessions})
			if err != nil {
				return err
			}
			defer stopAdmin()
			defer startTrimmer(c.Context, 2*time.Second)()
			if c.Int("gomaxprocs") == 0 {
				busy, _ := busyRateFlag(c.String("busy-rate")) // checked in setup
				defer startProcsTuner(c.Context, log, 250*time.Millisecond, c.Int("bulk-nice"), busy)()
			}
			wait := tl.start(c.Context, c, cl.Recheck)
			defer wait()
			defer notifyLifecycle(c.Context, log, fmt.Sprintf("listening on %v", addrs))()
			return cl.Serve(c.Context)
		},
	}
}

// clientConfig merges the config file (if any) with flags and environment.
func clientConfig(c *cli.Context) (client.Config, error) {
	cfg, _, _, err := clientSetup(c)
	return cfg, err
}

// clientSetup is clientConfig plus the TLS jobs the agent must run and its
// admin endpoint (nil when off).
func clientSetup(c *cli.Context) (client.Config, *agentTLS, *adminEndpoint, error) {
	fail := func(err error) (client.Config, *agentTLS, *adminEndpoint, error) {
		return client.Config{}, nil, nil, err
	}
	if err := noArgs(c); err != nil {
		return fail(err)
	}
	var f clientFile
	file := c.String("config")
	if file != "" {
		if err := loadYAML(file, &f); err != nil {
			return fail(err)
		}
	}
	tl, err := buildTLS(c, f.TLS, file, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return fail(err)
	}
	sess, err := sessionFlags(c)
	if err != nil {
		return fail(err)
	}
	servers, err := pickServers(c, f, file)
	if err != nil {
		return fail(err)
	}
	routes, err := clientRoutes(c, f, file)
	if err != nil {
		return fail(err)
	}
	if len(routes) == 0 {
		return fail(configErrorf("no route: give --listen (and --route), or routes in --config"))
	}
	tl.policy.ServerName = pick(c, "server-name", f.TLS.ServerName, file, "tls.server_name").value
	tl.policy.LegacyCN = c.Bool("legacy-cn") || (!c.IsSet("legacy-cn") && f.TLS.LegacyCN)
	busy, err := busyRateFlag(c.String("busy-rate"))
	if err != nil {
		return fail(err)
	}
	cfg := client.Config{
		BusyRate:         busy,
		Servers:          servers,
		TLS:              tl.policy,
		Routes:           routes,
		Sessions:         c.Int("sessions"),
		HandshakeTimeout: durationFlag(c, "handshake-timeout"),
		ConnectWait:      durationFlag(c, "connect-wait"),
		HalfCloseTimeout: durationFlag(c, "half-close-timeout"),
		DrainTimeout:     durationFlag(c, "drain-timeout"),
		RecheckInterval:  c.Duration("recheck-interval"),
		Session:          sess,
		Reconnect:        tunnel.Reconnect{Max: durationFlag(c, "reconnect-max")},
	}
	if err := cfg.Validate(); err != nil {
		return fail(configErr(fmt.Errorf("%w%s", err, fileHint(file))))
	}
	adm, err := pickAdmin(c, f.Admin, file)
	if err != nil {
		return fail(err)
	}
	return cfg, tl, newAdminEndpoint(adm, "client", tl), nil
}

// clientReadiness is /readyz of a client agent: ready when every server
// has a session up. (client.Client.Ready's own verdict is "some server
// has", which is what an app connection needs; readiness asks more, so
// that a server the client cannot reach shows before it is the last.)
func clientReadiness(cl *client.Client) func() readiness {
	return func() readiness {
		_, servers := cl.Ready()
		r := readiness{Ready: len(servers) > 0, Servers: servers}
		var down []string
		for addr, state := range servers {
			if state != "up" {
				down = append(down, addr+" "+state)
			}
		}
		if len(down) > 0 {
			slices.Sort(down)
			r.Ready, r.Reason = false, "no session to "+strings.Join(down, "; ")
		}
		return r
	}
}

// clientRoutes resolves the routes: the file's, with --listen, --route and
// --listen-mode describing one route. They override the file's route when
// it has exactly one, and are refused when it has several (which one would
// they mean?).
func clientRoutes(c *cli.Context, f clientFile, file string) ([]client.Route, error) {
	var routes []client.Route
	for i, r := range f.Routes {
		mode, err := parseMode(r.ListenMode, fmt.Sprintf("%s: routes[%d].listen_mode", file, i))
		if err != nil {
			return nil, err
		}
		routes = append(routes, client.Route{Listen: r.Listen, Route: r.Route, ListenMode: mode})
	}
	mode, err := parseMode(c.String("listen-mode"), "--listen-mode")
	if err != nil {
		return nil, err
	}
	switch {
	case (c.IsSet("listen") || c.IsSet("route") || c.IsSet("listen-mode")) && len(routes) > 1:
		return nil, configErrorf("--listen/--route/--listen-mode (or MTUNNEL_LISTEN/MTUNNEL_ROUTE/MTUNNEL_LISTEN_MODE) set one route, but %s has %d; set them in the file", file, len(routes))
	case len(routes) == 1:
		if c.IsSet("listen") {
			routes[0].Listen = c.String("listen")
		}
		if c.IsSet("route") {
			routes[0].Route = c.String("route")
		}
		if c.IsSet("listen-mode") {
			routes[0].ListenMode = mode
		}
	case c.IsSet("listen"):
		routes = []client.Route{{Listen: c.String("listen"), Route: c.String("route"), ListenMode: mode}}
	}
	return routes, nil
}

// parseMode parses an octal permission mode like "0660"; "" is the
// agent's default.
func parseMode(s, source string) (os.FileMode, error) {
	if s == "" {
		return 0, nil
	}
	m, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimSpace(s), "0o"), 8, 32)
	if err != nil || m > 0o777 || m == 0 {
		return 0, configErrorf("%s %q: want octal permission bits from 0001 to 0777, like 0660", source, s)
	}
	return os.FileMode(m), nil
}

// pickServers resolves the server list: --server (or MTUNNEL_SERVER) if
// set, else the file's servers, or its server for just one.
func pickServers(c *cli.Context, f clientFile, file string) ([]string, error) {
	switch {
	case c.IsSet("server"):
		return c.StringSlice("server"), nil
	case f.Server != "" && len(f.Servers) > 0:
		return nil, configErrorf("%s: give server (one) or servers (a list), not both", file)
	case f.Server != "":
		return []string{f.Server}, nil
	case len(f.Servers) > 0:
		return f.Servers, nil
	case file != "":
		return nil, configErrorf("%s: server or servers is required (or --server)", file)
	}
	return nil, configErrorf("--server is required")
}
