package main

import (
	"crypto/x509"
	"fmt"
	"slices"
	"time"

	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/urfave/cli/v2"
)

func env(name string) []string { return []string{"MTUNNEL_" + name} }

// onUsageError makes a command's flag mistakes (unknown flag, bad value in
// a flag or MTUNNEL_* variable) configuration errors, exit status 2:
// urfave/cli applies App.OnUsageError to the root command's flags only.
func onUsageError(_ *cli.Context, err error, _ bool) error { return configErr(err) }

// tlsFlags are shared by both agents.
// The log flags are accepted after the command too ("mtunnel server
// --log-format json"), the way users write them.
func tlsFlags() []cli.Flag {
	return append(logFlags(),
		&cli.StringFlag{Name: "config", Usage: "YAML config `FILE`", EnvVars: env("CONFIG")},
		&cli.StringFlag{Name: "cert", Usage: "own certificate chain (PEM) `FILE`", EnvVars: env("CERT")},
		&cli.StringFlag{Name: "key", Usage: "own private key (PEM) `FILE`", EnvVars: env("KEY")},
		&cli.StringFlag{Name: "ca", Usage: "CA bundle (PEM) trusted to sign the peer, `FILE`", EnvVars: env("CA")},
		&cli.StringFlag{Name: "tls-min", Value: "1.3", Usage: "lowest TLS version: 1.3 or 1.2", EnvVars: env("TLS_MIN")},
		&cli.DurationFlag{Name: "handshake-timeout", Usage: "bound on TCP connect + TLS handshake", DefaultText: "10s", EnvVars: env("HANDSHAKE_TIMEOUT")},
		&cli.DurationFlag{Name: "half-close-timeout", Usage: "cut a half-closed stream idle this long", DefaultText: "5m", EnvVars: env("HALF_CLOSE_TIMEOUT")},
		&cli.DurationFlag{Name: "drain-timeout", Usage: "on SIGTERM, wait this long for open streams", DefaultText: "30s", EnvVars: env("DRAIN_TIMEOUT")},
		&cli.StringFlag{Name: "stream-window", Value: "4MiB", Usage: "yamux receive window per stream (e.g. 256KiB, 4MiB): throughput per stream is at most window/RTT", EnvVars: env("STREAM_WINDOW")},
		&cli.StringFlag{Name: "session-memory", Value: "1GiB", Usage: "memory budget per session for stream buffers; streams per session are capped at session-memory / stream-window", EnvVars: env("SESSION_MEMORY")},
		&cli.IntFlag{Name: "max-streams", Usage: "streams open at once on one session; the server refuses more, the client opens another session", DefaultText: "session-memory / stream-window, 256", EnvVars: env("MAX_STREAMS")},
		&cli.StringFlag{Name: "tunnel-recv-buffer", Value: "auto", Usage: "kernel receive buffer of the tunnel socket: auto (the kernel's autotuning, but while a stream talks beside bulk data in the session the receive window is held to 256KiB or 2x the bandwidth-delay product at 10 Gbit/s on short paths, so small frames do not queue behind megabytes of bulk data), kernel (always autotuning), or a fixed size like 1MiB", EnvVars: env("TUNNEL_RECV_BUFFER")},
		&cli.DurationFlag{Name: "keepalive", Usage: "ping the peer after this long without hearing from it", DefaultText: "10s", EnvVars: env("KEEPALIVE")},
		&cli.DurationFlag{Name: "keepalive-timeout", Usage: "then close the session if nothing arrives for this much longer: a vanished peer is found within keepalive + timeout", DefaultText: "15s", EnvVars: env("KEEPALIVE_TIMEOUT")},
		&cli.DurationFlag{Name: "max-lifetime", Usage: "replace a session after this long so that peers authenticate again", DefaultText: "0: only before the peer certificate expires", EnvVars: env("MAX_LIFETIME")},
		&cli.IntFlag{Name: "gomaxprocs", Usage: "OS threads running Go code at once; 0: adaptive, 1 while the agent needs less than about a core (lower latency per message) and one per CPU above that", DefaultText: "0", EnvVars: env("GOMAXPROCS")},
		&cli.StringFlag{Name: "busy-rate", Usage: "traffic (bytes a second, both ways) above which a session counts as busy: the client puts new connections on a quiet session or dials a spare, and both agents lower a busy session's priority (--bulk-nice); off: never busy", DefaultText: "10MiB", EnvVars: env("BUSY_RATE")},
		&cli.IntFlag{Name: "bulk-nice", Value: 10, Usage: "while a busy session (over --busy-rate) and a quiet one with streams share the agent, run the busy one's loops on threads of this nice value (1-19), and while any stream talks, the copiers of bulk streams, so that small messages are not stuck behind bulk data; 0: off. Needs --gomaxprocs 0 and, to give threads their priority back, root or CAP_SYS_NICE", EnvVars: env("BULK_NICE")},
	)
}

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run the server agent: accept mTLS sessions and forward routes to targets",
		Flags: slices.Concat(tlsFlags(), verifyFlags(), adminFlags(), []cli.Flag{
			&cli.StringFlag{Name: "listen", Usage: "mTLS listen `ADDR` (host:port)", EnvVars: env("LISTEN")},
			&cli.StringFlag{Name: "target", Usage: "target `HOST:PORT` of the route \"default\", or a unix socket, unix:/var/run/postgresql/.s.PGSQL.5432", EnvVars: env("TARGET")},
			&cli.StringSliceFlag{Name: "allow-cn", Usage: "allow client certificates with this common name on \"default\"", EnvVars: env("ALLOW_CN")},
			&cli.StringSliceFlag{Name: "allow-ou", Usage: "allow client certificates with this organizational unit", EnvVars: env("ALLOW_OU")},
			&cli.StringSliceFlag{Name: "allow-dns", Usage: "allow client certificates with this DNS SAN", EnvVars: env("ALLOW_DNS")},
			&cli.StringSliceFlag{Name: "allow-uri", Usage: "allow client certificates with this URI SAN (e.g. a SPIFFE ID)", EnvVars: env("ALLOW_URI")},
			&cli.BoolFlag{Name: "allow-all", Usage: "allow every client certificate signed by --ca on \"default\"", EnvVars: env("ALLOW_ALL")},
			&cli.StringFlag{Name: "proxy-protocol", Usage: "send the target of \"default\" a PROXY protocol header with the app's address and the client identity: v2 or none", DefaultText: "none", EnvVars: env("PROXY_PROTOCOL")},
			&cli.DurationFlag{Name: "header-timeout", Usage: "bound on reading a stream header", DefaultText: "10s", EnvVars: env("HEADER_TIMEOUT")},
			&cli.DurationFlag{Name: "idle-timeout", Usage: "reset a stream in which no byte moved either way for this long", DefaultText: "0: never", EnvVars: env("IDLE_TIMEOUT")},
			&cli.IntFlag{Name: "max-handshakes", Usage: "TLS handshakes in progress at once; more wait, within --handshake-timeout", DefaultText: "256", EnvVars: env("MAX_HANDSHAKES")},
			&cli.IntFlag{Name: "max-sessions-per-client", Usage: "sessions one client identity may hold at once", DefaultText: "64", EnvVars: env("MAX_SESSIONS_PER_CLIENT")},
			&cli.DurationFlag{Name: "dial-timeout", Usage: "bound on connecting to a target", DefaultText: "10s", EnvVars: env("DIAL_TIMEOUT")},
		}),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg, tl, adm, err := serverSetup(c)
			if err != nil {
				return err
			}
			cfg.Logger = log
			tl.setLogger(log)
			cfg.TLS.Logger = log
			cfg.Metrics = adm.agentMetrics()
			srv, err := server.New(cfg)
			if err != nil {
				return configErr(err)
			}
			addr, err := srv.Listen()
			if err != nil {
				return configErrorf("%w (the address comes from --listen, MTUNNEL_LISTEN or the config file's listen)", err)
			}
			_, stopAdmin, err := adm.start(log, agentView{ready: serverReadiness(srv), sessions: srv.Sessions})
			if err != nil {
				return err
			}
			defer stopAdmin()
			defer startTrimmer(c.Context, 2*time.Second)()
			if c.Int("gomaxprocs") == 0 {
				busy, _ := busyRateFlag(c.String("busy-rate")) // checked in setup
				defer startProcsTuner(c.Context, log, 250*time.Millisecond, c.Int("bulk-nice"), busy)()
			}
			wait := tl.start(c.Context, c, srv.Recheck)
			defer wait()
			defer notifyLifecycle(c.Context, log, "listening on "+addr.String())()
			return srv.Serve(c.Context)
		},
	}
}

// serverConfig merges the config file (if any) with flags and environment.
func serverConfig(c *cli.Context) (server.Config, error) {
	cfg, _, _, err := serverSetup(c)
	return cfg, err
}

// serverSetup is serverConfig plus the TLS jobs the agent must run and its
// admin endpoint (nil when off).
func serverSetup(c *cli.Context) (server.Config, *agentTLS, *adminEndpoint, error) {
	fail := func(err error) (server.Config, *agentTLS, *adminEndpoint, error) {
		return server.Config{}, nil, nil, err
	}
	if err := noArgs(c); err != nil {
		return fail(err)
	}
	var f serverFile
	file := c.String("config")
	if file != "" {
		if err := loadYAML(file, &f); err != nil {
			return fail(err)
		}
	}
	tl, err := buildTLS(c, f.TLS, file, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return fail(err)
	}
	routes, err := serverRoutes(c, f, file)
	if err != nil {
		return fail(err)
	}
	sess, err := sessionFlags(c)
	if err != nil {
		return fail(err)
	}
	if _, err := busyRateFlag(c.String("busy-rate")); err != nil { // read again by the procs tuner
		return fail(err)
	}
	listen := pick(c, "listen", f.Listen, file, "listen")
	if listen.value == "" {
		return fail(configErrorf("%s is required", listen.source))
	}
	if len(routes) == 0 {
		return fail(configErrorf("no route: give --target (and --allow-* or --allow-all), or routes in --config"))
	}
	cfg := server.Config{
		Listen:           listen.value,
		TLS:              tl.policy,
		Routes:           routes,
		HandshakeTimeout: durationFlag(c, "handshake-timeout"),
		HeaderTimeout:    durationFlag(c, "header-timeout"),
		DialTimeout:      durationFlag(c, "dial-timeout"),
		HalfCloseTimeout: durationFlag(c, "half-close-timeout"),
		DrainTimeout:     durationFlag(c, "drain-timeout"),
		IdleTimeout:      durationFlag(c, "idle-timeout"),
		RecheckInterval:  c.Duration("recheck-interval"),

		MaxHandshakes:      c.Int("max-handshakes"),
		MaxSessionsPerPeer: c.Int("max-sessions-per-client"),
		Session:            sess,
	}
	if err := cfg.Validate(); err != nil {
		return fail(configErr(fmt.Errorf("%w%s", err, fileHint(file))))
	}
	adm, err := pickAdmin(c, f.Admin, file)
	if err != nil {
		return fail(err)
	}
	return cfg, tl, newAdminEndpoint(adm, "server", tl), nil
}

// serverReadiness is /readyz of a server agent: listening, not draining,
// with a certificate valid now.
func serverReadiness(srv *server.Server) func() readiness {
	return func() readiness {
		ok, why := srv.Ready()
		return readiness{Ready: ok, Reason: why}
	}
}

// serverRoutes resolves the routes: the file's, and the route "default"
// that --target, --allow-* and --proxy-protocol describe.
func serverRoutes(c *cli.Context, f serverFile, file string) (map[string]server.Route, error) {
	routes := map[string]server.Route{}
	for name, r := range f.Routes {
		pp, err := parseProxyProtocol(r.ProxyProtocol, fmt.Sprintf("%s: routes.%s.proxy_protocol", file, name))
		if err != nil {
			return nil, err
		}
		routes[name] = server.Route{Target: r.Target, ACL: tunnel.ACL{AllowAll: r.AllowAll, Rules: r.Allow}, ProxyProtocol: pp}
	}
	if !c.IsSet("target") {
		if acl := flagACL(c); acl.AllowAll || len(acl.Rules) > 0 || c.IsSet("proxy-protocol") {
			return nil, configErrorf("--allow-* and --proxy-protocol apply to the route set by --target; give --target too")
		}
		return routes, nil
	}
	pp, err := parseProxyProtocol(c.String("proxy-protocol"), "--proxy-protocol")
	if err != nil {
		return nil, err
	}
	routes["default"] = server.Route{Target: c.String("target"), ACL: flagACL(c), ProxyProtocol: pp}
	return routes, nil
}

// parseProxyProtocol reads a route's proxy_protocol: "v2", or "none" or
// nothing for none ("").
func parseProxyProtocol(s, source string) (string, error) {
	switch s {
	case "", server.ProxyNone:
		return "", nil
	case server.ProxyV2:
		return server.ProxyV2, nil
	}
	return "", configErrorf("%s %q: want %s or %s", source, s, server.ProxyV2, server.ProxyNone)
}

func fileHint(file string) string {
	if file == "" {
		return ""
	}
	return " (config " + file + ")"
}

// flagACL builds the identity rules of the command-line route.
func flagACL(c *cli.Context) tunnel.ACL {
	acl := tunnel.ACL{AllowAll: c.Bool("allow-all")}
	for _, v := range c.StringSlice("allow-cn") {
		acl.Rules = append(acl.Rules, tunnel.Rule{CN: v})
	}
	for _, v := range c.StringSlice("allow-ou") {
		acl.Rules = append(acl.Rules, tunnel.Rule{OU: v})
	}
	for _, v := range c.StringSlice("allow-dns") {
		acl.Rules = append(acl.Rules, tunnel.Rule{DNS: v})
	}
	for _, v := range c.StringSlice("allow-uri") {
		acl.Rules = append(acl.Rules, tunnel.Rule{URI: v})
	}
	return acl
}
