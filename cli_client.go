package main

import (
	"crypto/x509"
	"fmt"

	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/urfave/cli/v2"
)

func clientCommand() *cli.Command {
	return &cli.Command{
		Name:  "client",
		Usage: "run the client agent: listen locally and carry each connection to the server agent",
		Flags: append(tlsFlags(),
			&cli.StringFlag{Name: "listen", Usage: "local listen `ADDR`, e.g. 127.0.0.1:15432", EnvVars: env("LISTEN")},
			&cli.StringFlag{Name: "server", Usage: "server agent `HOST:PORT`", EnvVars: env("SERVER")},
			&cli.StringFlag{Name: "server-name", Usage: "name the server certificate must carry (default: host of --server)", EnvVars: env("SERVER_NAME")},
			&cli.StringFlag{Name: "route", Value: "default", Usage: "route `NAME` on the server for --listen", EnvVars: env("ROUTE")},
			&cli.IntFlag{Name: "sessions", Usage: "sessions kept open to the server (default 1)", EnvVars: env("SESSIONS")},
			&cli.DurationFlag{Name: "connect-wait", Usage: "how long a new connection waits for a session before a reset (default 10s)", EnvVars: env("CONNECT_WAIT")},
		),
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			cfg, err := clientConfig(c)
			if err != nil {
				return err
			}
			cfg.Logger = log
			cl, err := client.New(cfg)
			if err != nil {
				return configErr(err)
			}
			if _, err := cl.Listen(); err != nil {
				return configErr(err)
			}
			return cl.Serve(c.Context)
		},
	}
}

// clientConfig merges the config file (if any) with flags and environment.
func clientConfig(c *cli.Context) (client.Config, error) {
	if err := noArgs(c); err != nil {
		return client.Config{}, err
	}
	var f clientFile
	file := c.String("config")
	if file != "" {
		if err := loadYAML(file, &f); err != nil {
			return client.Config{}, err
		}
	}
	creds, minVersion, err := pickTLS(c, f.TLS, file).credentials(x509.ExtKeyUsageClientAuth)
	if err != nil {
		return client.Config{}, err
	}
	srv := pick(c, "server", f.Server, file, "server")
	if srv.value == "" {
		return client.Config{}, configErrorf("%s is required", srv.source)
	}
	var routes []client.Route
	for _, r := range f.Routes {
		routes = append(routes, client.Route{Listen: r.Listen, Route: r.Route})
	}
	if c.IsSet("listen") {
		routes = []client.Route{{Listen: c.String("listen"), Route: c.String("route")}}
	}
	if len(routes) == 0 {
		return client.Config{}, configErrorf("no route: give --listen (and --route), or routes in --config")
	}
	cfg := client.Config{
		Server: srv.value,
		TLS: tunnel.TLSPolicy{
			Credentials: static(creds),
			ServerName:  pick(c, "server-name", f.TLS.ServerName, file, "tls.server_name").value,
			MinVersion:  minVersion,
		},
		Routes:           routes,
		Sessions:         c.Int("sessions"),
		HandshakeTimeout: durationFlag(c, "handshake-timeout"),
		ConnectWait:      durationFlag(c, "connect-wait"),
		HalfCloseTimeout: durationFlag(c, "half-close-timeout"),
		DrainTimeout:     durationFlag(c, "drain-timeout"),
	}
	if err := cfg.Validate(); err != nil {
		return client.Config{}, configErr(fmt.Errorf("%w%s", err, fileHint(file)))
	}
	return cfg, nil
}
