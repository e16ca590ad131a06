package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func creds(cert tls.Certificate, roots *x509.CertPool) func() *tunnel.Credentials {
	c := &tunnel.Credentials{Certificate: cert, Roots: roots}
	return func() *tunnel.Credentials { return c }
}

// startServer runs a server agent on 127.0.0.1:0 until the test ends.
func startServer(t testing.TB, cfg server.Config) string {
	t.Helper()
	addr, _ := startServerCtl(t, cfg)
	return addr
}

// startServerCtl runs a server agent (on cfg.Listen, 127.0.0.1:0 if
// empty) and returns its address and a stop function: the graceful stop
// of SIGTERM (GoAway, drain, close), which returns once Serve has. The
// test's end stops it too, if it still runs.
func startServerCtl(t testing.TB, cfg server.Config) (string, func()) {
	t.Helper()
	_, addr, stop := startServerAgent(t, cfg)
	return addr, stop
}

// startServerAgent is startServerCtl that also returns the agent.
func startServerAgent(t testing.TB, cfg server.Config) (*server.Server, string, func()) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	return srv, addr.String(), runUntilCleanup(t, srv.Serve)
}

// startClient runs a client agent until the test ends and returns its
// listeners' addresses in route order.
func startClient(t testing.TB, cfg client.Config) []string {
	t.Helper()
	_, addrs := startClientAgent(t, cfg)
	return addrs
}

// startClientAgent is startClient that also returns the agent.
func startClientAgent(t testing.TB, cfg client.Config) (*client.Client, []string) {
	t.Helper()
	for i := range cfg.Routes {
		if cfg.Routes[i].Listen == "" {
			cfg.Routes[i].Listen = "127.0.0.1:0"
		}
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 2 * time.Second
	}
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := cl.Listen()
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, cl.Serve)
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return cl, out
}

// runUntilCleanup runs serve until the test ends, or until the returned
// stop function is called; stop returns once serve has.
func runUntilCleanup(t testing.TB, serve func(context.Context) error) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// backend runs handle for every connection on 127.0.0.1:0 until the test
// ends, and waits for the handlers.
func backend(t testing.TB, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveBackend(t, ln, handle)
}

// serveBackend is backend on a listener the test made, e.g. in another
// network namespace (netns_helpers_test.go); it returns ln's address.
func serveBackend(t testing.TB, ln net.Listener, handle func(*net.TCPConn)) string {
	serveConns(t, ln, func(c net.Conn) { handle(c.(*net.TCPConn)) })
	return ln.Addr().String()
}

// serveConns runs handle for every connection ln accepts until the test
// ends, and waits for the handlers.
func serveConns(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// dialAddr connects to host:port, or to a unix socket for unix:/path.
func dialAddr(addr string) (net.Conn, error) {
	network, address, err := tunnel.SplitNetwork(addr)
	if err != nil {
		return nil, err
	}
	return net.Dial(network, address)
}

// closeWrite half-closes a TCP or unix connection.
func closeWrite(c net.Conn) error {
	return c.(interface{ CloseWrite() error }).CloseWrite()
}

// echoCheck sends n random bytes through addr (host:port or unix:/path) to
// an echo backend, half-closes, and checks the SHA-256 of what comes back.
func echoCheck(t testing.TB, addr string, n int) error {
	c, err := dialAddr(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return echoOn(c, random(t, n))
}

// echoOn sends payload on c, which leads to an echo backend, half-closes,
// and checks the length and SHA-256 of what comes back.
func echoOn(c net.Conn, payload []byte) error {
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = closeWrite(c)
		}
		werr <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	if err := <-werr; err != nil {
		return err
	}
	if want := sha256.Sum256(payload); got != int64(len(payload)) || !bytes.Equal(h.Sum(nil), want[:]) {
		return errors.New("echo mismatch: checksum or length differs")
	}
	return nil
}

// world is a CA, a server agent with two routes to an echo backend, and a
// client agent for the identity "app" that may use route "default".
type world struct {
	ca         *certstest.CA
	logs       *logSink
	echoAddr   string
	serverAddr string
	goodClient string // local address of the "app" client's default route
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{ca: certstest.New(t), logs: newLogSink(t)}
	w.echoAddr = backend(t, echo)
	w.serverAddr = startServer(t, server.Config{
		TLS: tunnel.TLSPolicy{Credentials: creds(w.ca.Server(t, "localhost"), w.ca.Pool())},
		Routes: map[string]server.Route{
			"default": {Target: w.echoAddr, ACL: tunnel.ACL{Rules: []tunnel.Rule{{CN: "app"}, {URI: "spiffe://test.example/ns/*/sa/app"}}}},
			"admin":   {Target: w.echoAddr, ACL: tunnel.ACL{Rules: []tunnel.Rule{{CN: "admin"}}}},
		},
		Logger: w.logs.logger("server"),
	})
	w.goodClient = w.client(t, w.ca.Client(t, "app"), "default")[0]
	return w
}

// client starts a client agent with cert, one listener per route.
func (w *world) client(t *testing.T, cert tls.Certificate, routes ...string) []string {
	t.Helper()
	cfg := client.Config{
		Servers: []string{w.serverAddr},
		TLS:     tunnel.TLSPolicy{Credentials: creds(cert, w.ca.Pool()), ServerName: "localhost"},
		Logger:  w.logs.logger("client"),
	}
	for _, r := range routes {
		cfg.Routes = append(cfg.Routes, client.Route{Route: r})
	}
	return startClient(t, cfg)
}

// checkGood proves the good client still works, with a checksum.
func (w *world) checkGood(t *testing.T) {
	t.Helper()
	if err := echoCheck(t, w.goodClient, 256<<10); err != nil {
		t.Fatalf("good client broken: %v\nlogs:\n%s", err, w.logs.dump())
	}
}

// echoWorld is a server agent whose route "default" is open to every
// client of its CA and leads to an echo backend, and a client agent for
// CN=app with one session to it. srv and cli, when not nil, adjust the
// configurations before the agents start (cli sees the server's address in
// Servers, and may put a proxy in its place). It returns the world and the
// client's local address.
func echoWorld(t *testing.T, srv func(*server.Config), cli func(*world, *client.Config)) (*world, string) {
	t.Helper()
	w := &world{ca: certstest.New(t), logs: newLogSink(t)}
	w.echoAddr = backend(t, echo)
	sc := server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(w.ca.Server(t, "localhost"), w.ca.Pool())},
		Routes: map[string]server.Route{"default": {Target: w.echoAddr, ACL: tunnel.ACL{AllowAll: true}}},
		Logger: w.logs.logger("server"),
	}
	if srv != nil {
		srv(&sc)
	}
	w.serverAddr = startServer(t, sc)
	cc := client.Config{
		Servers:  []string{w.serverAddr},
		TLS:      tunnel.TLSPolicy{Credentials: creds(w.ca.Client(t, "app"), w.ca.Pool()), ServerName: "localhost"},
		Routes:   []client.Route{{}},
		Sessions: 1,
		Logger:   w.logs.logger("client"),
	}
	if cli != nil {
		cli(w, &cc)
	}
	return w, startClient(t, cc)[0]
}
