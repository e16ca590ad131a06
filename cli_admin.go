package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
)

// The admin endpoint (issue 6): off unless --admin is given, on loopback
// unless --admin-allow-remote says otherwise, since it has no
// authentication. It serves /metrics, /healthz, /readyz, /status (read by
// `mtunnel status`) and, with --admin-pprof, /debug/pprof/.

func adminFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "admin", Usage: "serve /metrics, /healthz, /readyz and /status on `ADDR` (host:port; loopback only unless --admin-allow-remote)", DefaultText: "off", EnvVars: env("ADMIN")},
		&cli.BoolFlag{Name: "admin-allow-remote", Usage: "let --admin listen on an address other hosts can reach (the endpoint has no authentication)", EnvVars: env("ADMIN_ALLOW_REMOTE")},
		&cli.BoolFlag{Name: "admin-pprof", Usage: "also serve Go's profiler at /debug/pprof/ on the admin endpoint", EnvVars: env("ADMIN_PPROF")},
	}
}

// fileAdmin is the admin section of both config files.
type fileAdmin struct {
	Listen      string `yaml:"listen"`
	AllowRemote bool   `yaml:"allow_remote"`
	PProf       bool   `yaml:"pprof"`
}

// adminSettings is the admin endpoint as flags, environment and file set it.
type adminSettings struct {
	listen      setting // value "" when off
	allowRemote bool
	pprof       bool
}

// pickAdmin resolves the admin settings and refuses an address beyond
// loopback unless remote access was allowed.
func pickAdmin(c *cli.Context, f fileAdmin, file string) (adminSettings, error) {
	s := adminSettings{
		listen:      pick(c, "admin", f.Listen, file, "admin.listen"),
		allowRemote: c.Bool("admin-allow-remote") || (!c.IsSet("admin-allow-remote") && f.AllowRemote),
		pprof:       c.Bool("admin-pprof") || (!c.IsSet("admin-pprof") && f.PProf),
	}
	if s.listen.value == "" {
		return s, nil
	}
	host, _, err := net.SplitHostPort(s.listen.value)
	if err != nil {
		return s, configErrorf("%s %q: want host:port, e.g. 127.0.0.1:9190: %w", s.listen.source, s.listen.value, err)
	}
	if !s.allowRemote && !loopbackHost(host) {
		return s, configErrorf("%s %q is not a loopback address: the admin endpoint has no authentication, so it listens where other hosts can reach it only with --admin-allow-remote (or admin.allow_remote: true)",
			s.listen.source, s.listen.value)
	}
	return s, nil
}

// loopbackHost reports whether host names only this machine: "localhost"
// or a loopback IP. An empty host (":9190") means every interface.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// adminEndpoint serves one agent's admin endpoint. A nil *adminEndpoint is
// an endpoint that is off: no registry, no metrics, nothing served.
type adminEndpoint struct {
	settings adminSettings
	agent    string // "server" or "client"
	reg      *prometheus.Registry
	metrics  *tunnel.Metrics
	tls      *tunnel.TLSState
	started  time.Time
	view     agentView
}

// agentView is what the admin endpoint reads from its agent.
type agentView struct {
	ready    func() readiness
	sessions func() []tunnel.SessionInfo
}

// readiness is the body of /readyz and part of /status.
type readiness struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"` // why not, when not
	// Servers is each server's state on a client: "up", or "down: " and
	// why (client.Client.Ready).
	Servers map[string]string `json:"servers,omitempty"`
}

// newAdminEndpoint makes the agent's metrics registry, with the agent's
// metrics, its TLS material at scrape time, and the Go runtime and process
// collectors. It returns nil when the endpoint is off.
func newAdminEndpoint(s adminSettings, agent string, tl *agentTLS) *adminEndpoint {
	if s.listen.value == "" {
		return nil
	}
	a := &adminEndpoint{settings: s, agent: agent, reg: prometheus.NewRegistry(), tls: tl.state(), started: time.Now()}
	a.metrics = tunnel.NewMetrics(a.reg)
	a.reg.MustRegister(a.tls, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return a
}

// agentMetrics is what the agent should count into: nil when off.
func (a *adminEndpoint) agentMetrics() *tunnel.Metrics {
	if a == nil {
		return nil
	}
	return a.metrics
}

// start listens and serves until stop is called, and returns the address
// it listens on; stop shuts the server down and returns once it has ended.
// Starting an endpoint that is off does nothing. A listen failure is a
// configuration error.
func (a *adminEndpoint) start(log *slog.Logger, view agentView) (addr net.Addr, stop func(), err error) {
	if a == nil {
		return nil, func() {}, nil
	}
	a.view = view
	ln, err := net.Listen("tcp", a.settings.listen.value)
	if err != nil {
		return nil, nil, configErrorf("admin endpoint: %w (the address comes from %s)", err, a.settings.listen.source)
	}
	srv := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// Above the 30 s CPU profile that /debug/pprof/profile takes by
		// default: net/http/pprof refuses one longer than WriteTimeout.
		WriteTimeout: 60 * time.Second,
		IdleTimeout:  60 * time.Second,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin endpoint stopped", "err", err)
		}
	}()
	// Tests and scripts read the address here when they asked for port 0.
	log.Info("admin listening", "addr", ln.Addr().String(), "pprof", a.settings.pprof)
	return ln.Addr(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close() // a scrape or profile still running
		}
		<-done
	}, nil
}

func (a *adminEndpoint) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		r := a.view.ready()
		code := http.StatusOK
		if !r.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, r)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.status(time.Now()))
	})
	if a.settings.pprof {
		// Registered on this mux only: importing net/http/pprof also adds
		// them to http.DefaultServeMux, which nothing here serves.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) // the client went away if this fails; nothing to do
}
