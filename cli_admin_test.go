package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/urfave/cli/v2"
)

// resolveAdmin resolves the admin endpoint settings of "mtunnel AGENT
// args..." (nothing listens).
func resolveAdmin(t *testing.T, agent string, args []string) (adminSettings, error) {
	t.Helper()
	var s adminSettings
	err := runAction(t, agent, func(c *cli.Context) error {
		var adm *adminEndpoint
		var err error
		if agent == "server" {
			_, _, adm, err = serverSetup(c)
		} else {
			_, _, adm, err = clientSetup(c)
		}
		if adm != nil {
			s = adm.settings
		}
		return err
	}, args)
	return s, err
}

// The admin endpoint listens on loopback only, unless remote access is
// allowed; the refusal says why and how, and is a configuration error.
func TestAdminAddressRule(t *testing.T) {
	p := newPKI(t)
	srv := append([]string{"--listen", "127.0.0.1:1", "--target", "db:1", "--allow-all"}, p.flags("server-flag")...)
	cl := append([]string{"--listen", "127.0.0.1:1", "--server", "db:1"}, p.flags("client-flag")...)
	remoteFile := writeFile(t, p.dir, "remote.yaml", serverYAML+"admin:\n  listen: 0.0.0.0:9190\n")
	allowedFile := writeFile(t, p.dir, "allowed.yaml", serverYAML+"admin:\n  listen: 0.0.0.0:9190\n  allow_remote: true\n  pprof: true\n")
	tests := []struct {
		name      string
		agent     string
		env       map[string]string
		args      []string
		wantAddr  string // "" with wantErr
		wantPProf bool
		wantErr   string
	}{
		{"off by default", "server", nil, srv, "", false, ""},
		{"ipv4 loopback", "server", nil, append(srv, "--admin", "127.0.0.1:9190"), "127.0.0.1:9190", false, ""},
		{"ipv6 loopback", "server", nil, append(srv, "--admin", "[::1]:9190"), "[::1]:9190", false, ""},
		{"localhost", "client", nil, append(cl, "--admin", "localhost:9190", "--admin-pprof"), "localhost:9190", true, ""},
		{"another 127/8 address", "client", nil, append(cl, "--admin", "127.0.0.2:9190"), "127.0.0.2:9190", false, ""},
		{"every interface", "server", nil, append(srv, "--admin", ":9190"), "", false, `--admin ":9190" is not a loopback address`},
		{"wildcard", "client", nil, append(cl, "--admin", "0.0.0.0:9190"), "", false, "--admin-allow-remote"},
		{"private address", "server", nil, append(srv, "--admin", "10.1.2.3:9190"), "", false, "not a loopback address"},
		{"a host name", "server", nil, append(srv, "--admin", "db.example.com:9190"), "", false, "not a loopback address"},
		{"from the environment", "server", map[string]string{"MTUNNEL_ADMIN": "0.0.0.0:9190"}, srv, "", false, "not a loopback address"},
		{"remote allowed", "server", nil, append(srv, "--admin", "0.0.0.0:9190", "--admin-allow-remote"), "0.0.0.0:9190", false, ""},
		{"remote allowed by env", "client", map[string]string{"MTUNNEL_ADMIN": "0.0.0.0:9190", "MTUNNEL_ADMIN_ALLOW_REMOTE": "true"}, cl, "0.0.0.0:9190", false, ""},
		{"no port", "server", nil, append(srv, "--admin", "127.0.0.1"), "", false, "want host:port"},
		{"file", "server", nil, []string{"--config", remoteFile}, "", false, remoteFile + ": admin.listen"},
		{"file allows remote", "server", nil, []string{"--config", allowedFile}, "0.0.0.0:9190", true, ""},
		{"flag overrides file", "server", nil, []string{"--config", allowedFile, "--admin", "127.0.0.1:1", "--admin-pprof=false"}, "127.0.0.1:1", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			s, err := resolveAdmin(t, tt.agent, tt.args)
			if tt.wantErr != "" {
				var ce *configError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &ce) {
					t.Fatalf("err = %v, want a configuration error mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.listen.value != tt.wantAddr || s.pprof != tt.wantPProf {
				t.Errorf("admin %q pprof %v, want %q %v", s.listen.value, s.pprof, tt.wantAddr, tt.wantPProf)
			}
		})
	}
	// The whole command: exit status 2, and the reason on stderr.
	code, _, stderr := runCLI(t, append([]string{"server", "--admin", "0.0.0.0:0"}, srv...)...)
	if code != 2 || !strings.Contains(stderr, "no authentication") {
		t.Errorf("server --admin 0.0.0.0:0: exit %d, stderr %q; want 2 and why", code, stderr)
	}
}

// newTestAdmin is an admin endpoint on 127.0.0.1:0 for an agent that
// presents creds; serveAdmin starts it.
func newTestAdmin(agent string, creds *tunnel.Credentials, pprof bool) *adminEndpoint {
	return newAdminEndpoint(adminSettings{listen: setting{"127.0.0.1:0", "--admin"}, pprof: pprof}, agent,
		&agentTLS{store: tunnel.NewCredentialStore(creds)})
}

// serveAdmin serves a until the test ends and returns its base URL.
func serveAdmin(t *testing.T, a *adminEndpoint, view agentView) string {
	t.Helper()
	addr, stop, err := a.start(slog.New(slog.DiscardHandler), view)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return "http://" + addr.String()
}

// get fetches url and returns the status code and body.
func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // leave no idle connection for goleak
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// getJSON fetches url, requires the status code want and decodes the body.
func getJSON(t *testing.T, url string, want int, v any) {
	t.Helper()
	code, body := get(t, url)
	if code != want {
		t.Fatalf("GET %s: %d, want %d\n%s", url, code, want, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

// /debug/pprof/ is there only with --admin-pprof; /healthz and /metrics
// always are.
func TestAdminPProfAndHealth(t *testing.T) {
	ca := certstest.New(t)
	creds := &tunnel.Credentials{Certificate: ca.Server(t, "db"), Roots: ca.Pool()}
	view := agentView{ready: func() readiness { return readiness{Ready: true} }, sessions: func() []tunnel.SessionInfo { return nil }}
	for _, pprof := range []bool{false, true} {
		base := serveAdmin(t, newTestAdmin("server", creds, pprof), view)
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=1"} {
			want := http.StatusNotFound
			if pprof {
				want = http.StatusOK
			}
			if code, _ := get(t, base+path); code != want {
				t.Errorf("pprof %v: GET %s = %d, want %d", pprof, path, code, want)
			}
		}
		var health map[string]string
		getJSON(t, base+"/healthz", http.StatusOK, &health)
		if health["status"] != "ok" {
			t.Errorf("/healthz = %v", health)
		}
		code, body := get(t, base+"/metrics")
		for _, series := range []string{"mtunnel_sessions_open 0", "go_goroutines", `mtunnel_certificate_expiry_timestamp_seconds{role="own"`} {
			if code != http.StatusOK || !strings.Contains(string(body), series) {
				t.Errorf("/metrics (%d) lacks %s", code, series)
			}
		}
	}
}

// logWatch is a slog handler that lets a test wait for a message.
type logWatch struct {
	mu      sync.Mutex
	msgs    []string
	changed chan struct{}
}

func newLogWatch() *logWatch { return &logWatch{changed: make(chan struct{})} }

func (w *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *logWatch) WithAttrs([]slog.Attr) slog.Handler       { return w }
func (w *logWatch) WithGroup(string) slog.Handler            { return w }

func (w *logWatch) Handle(_ context.Context, r slog.Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, r.Message)
	close(w.changed)
	w.changed = make(chan struct{})
	return nil
}

// wait blocks until msg has been logged.
func (w *logWatch) wait(t *testing.T, msg string) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		found, changed := slices.Contains(w.msgs, msg), w.changed
		w.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log line %q; got %q", msg, w.msgs)
		}
	}
}

// runAgent runs serve until the test ends or stop is called; stop returns
// once serve has.
func runAgent(t *testing.T, serve func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serve(ctx); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// echoOnce sends a line through addr and waits for it to come back.
func echoOnce(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	msg := []byte("ready?\n")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatalf("echo through the tunnel: %v", err)
	}
}

// echoBackend echoes every connection on 127.0.0.1:0 until the test ends.
func echoBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// readyz fetches /readyz, requiring the status code want.
func readyz(t *testing.T, base string, want int) readiness {
	t.Helper()
	var r readiness
	getJSON(t, base+"/readyz", want, &r)
	return r
}

// TestAdminReadiness: /readyz of a client is 503 with the reason until
// it has a session to its server, 200 then, and 503 again once the server
// has gone; a server's is 200 while it listens with a valid certificate
// and 503 "not listening" after it stopped. /status of both reports the
// session, the route and the certificates.
func TestAdminReadiness(t *testing.T) {
	ca := certstest.New(t)
	policy := func(c tls.Certificate) tunnel.TLSPolicy {
		cr := &tunnel.Credentials{Certificate: c, Roots: ca.Pool(), CAs: []*x509.Certificate{ca.Cert}}
		return tunnel.TLSPolicy{Credentials: func() *tunnel.Credentials { return cr }, ServerName: "localhost"}
	}
	sPolicy, cPolicy := policy(ca.Server(t, "localhost")), policy(ca.Client(t, "app"))
	sAdmin, cAdmin := newTestAdmin("server", sPolicy.Credentials(), false), newTestAdmin("client", cPolicy.Credentials(), false)
	sLog, cLog := newLogWatch(), newLogWatch()

	srv, err := server.New(server.Config{
		Listen: "127.0.0.1:0", TLS: sPolicy, DrainTimeout: 5 * time.Second,
		Routes:  map[string]server.Route{"default": {Target: echoBackend(t), ACL: tunnel.ACL{AllowAll: true}}},
		Logger:  slog.New(sLog),
		Metrics: sAdmin.agentMetrics(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srvAddr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	sBase := serveAdmin(t, sAdmin, agentView{ready: serverReadiness(srv), sessions: srv.Sessions})
	cl, err := client.New(client.Config{
		Servers: []string{srvAddr.String()}, TLS: cPolicy, Sessions: 1,
		Routes:           []client.Route{{Listen: "127.0.0.1:0"}},
		HandshakeTimeout: time.Minute, // the handshake waits until the server serves
		Logger:           slog.New(cLog),
		Metrics:          cAdmin.agentMetrics(),
	})
	if err != nil {
		t.Fatal(err)
	}
	locals, err := cl.Listen()
	if err != nil {
		t.Fatal(err)
	}
	cBase := serveAdmin(t, cAdmin, agentView{ready: clientReadiness(cl), sessions: cl.Sessions})
	runAgent(t, cl.Serve)

	// The server is bound but does not serve yet: the client's handshake
	// waits, so it has no session.
	if r := readyz(t, cBase, http.StatusServiceUnavailable); r.Ready || r.Servers[srvAddr.String()] != "down: connecting" || !strings.Contains(r.Reason, srvAddr.String()) {
		t.Errorf("client /readyz before a session = %+v", r)
	}
	readyz(t, sBase, http.StatusOK)

	stopServer := runAgent(t, srv.Serve)
	echoOnce(t, locals[0].String()) // through a session: the client has one now
	// Each agent counts a stream before it logs its end.
	sLog.wait(t, "stream ended")
	cLog.wait(t, "stream ended")
	if r := readyz(t, cBase, http.StatusOK); !r.Ready || r.Servers[srvAddr.String()] != "up" || r.Reason != "" {
		t.Errorf("client /readyz with a session = %+v", r)
	}

	var st statusReport
	getJSON(t, sBase+"/status", http.StatusOK, &st)
	checkStatus(t, st, "server", "CN=app")
	getJSON(t, cBase+"/status", http.StatusOK, &st)
	checkStatus(t, st, "client", "CN=localhost")

	stopServer() // drains: GoAway, the client answers, the session ends
	cLog.wait(t, "session ended")
	if r := readyz(t, sBase, http.StatusServiceUnavailable); r.Ready || r.Reason != "stopped" {
		t.Errorf("server /readyz after it stopped = %+v", r)
	}
	if r := readyz(t, cBase, http.StatusServiceUnavailable); r.Ready || !strings.HasPrefix(r.Servers[srvAddr.String()], "down: ") || !strings.Contains(r.Reason, srvAddr.String()) {
		t.Errorf("client /readyz after the server stopped = %+v", r)
	}
}

// checkStatus checks a /status report after one stream on one session.
func checkStatus(t *testing.T, st statusReport, agent, peer string) {
	t.Helper()
	if st.Agent != agent || !st.Readiness.Ready || len(st.Sessions) != 1 {
		t.Fatalf("%s /status: %+v", agent, st)
	}
	if s := st.Sessions[0]; s.Peer != peer || s.StreamsTotal != 1 || s.BytesUp < 7 || s.BytesDown < 7 || len(s.ID) != 8 {
		t.Errorf("%s /status session %+v", agent, s)
	}
	if len(st.Routes) != 1 || st.Routes[0].Route != "default" || st.Routes[0].OK != 1 || st.Routes[0].Up != 7 || st.Routes[0].Down != 7 {
		t.Errorf("%s /status routes %+v", agent, st.Routes)
	}
	var roles []string
	for _, c := range st.Certificates {
		roles = append(roles, c.Role)
		if c.DaysLeft < 30 || c.NotAfter.IsZero() {
			t.Errorf("%s /status certificate %+v", agent, c)
		}
	}
	if !slices.Equal(roles, []string{"own", "ca"}) {
		t.Errorf("%s /status certificate roles %v, want own and ca", agent, roles)
	}
}
