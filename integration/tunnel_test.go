package integration

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

func TestEcho(t *testing.T) {
	checkLeaks(t)
	w := newWorld(t)
	c, err := net.Dial("tcp", w.goodClient)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"hello", "through the tunnel", "x"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q: got %q, %v", msg, buf, err)
		}
	}
	c.Close()
	w.logs.waitFor(t, "server session established for CN=app", msgAttr("session established", "agent", "server", "peer", "CN=app"))
	w.logs.waitFor(t, "client session established with the server's identity", msgAttr("session established", "agent", "client", "peer", "CN=localhost"))
	w.logs.waitFor(t, "server stream ended ok", msgAttr("stream ended", "agent", "server", "route", "default", "result", "ok"))
}

// Test64MiBEachWay sends 64 MiB up while 64 MiB come back, and compares
// SHA-256 both ways.
func Test64MiBEachWay(t *testing.T) {
	w := newWorld(t)
	if err := echoCheck(t, w.goodClient, 64<<20); err != nil {
		t.Fatal(err)
	}
	r := w.logs.waitFor(t, "stream ended", msgAttr("stream ended", "agent", "client", "result", "ok"))
	want := fmt.Sprint(64 << 20)
	if r.attrs["sent"] != want || r.attrs["received"] != want {
		t.Fatalf("client logged sent=%s received=%s, want %s each", r.attrs["sent"], r.attrs["received"], want)
	}
}

// Test200ConcurrentStreams runs 200 streams at once, each with its own
// payload and checksum.
func Test200ConcurrentStreams(t *testing.T) {
	checkLeaks(t)
	w := newWorld(t)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoCheck(t, w.goodClient, 32<<10+i*97); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestServerFirstProtocol: the backend speaks first (like MySQL's greeting)
// and the app sends nothing until it has read it.
func TestServerFirstProtocol(t *testing.T) {
	checkLeaks(t)
	w := newWorld(t)
	greeter := backend(t, func(c *net.TCPConn) {
		c.Write([]byte("220 greeting from the backend\r\n"))
		echo(c)
	})
	srv := startServer(t, server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(w.ca.Server(t, "localhost"), w.ca.Pool())},
		Routes: map[string]server.Route{"default": {Target: greeter, ACL: tunnel.ACL{AllowAll: true}}},
	})
	w.serverAddr = srv
	local := w.client(t, w.ca.Client(t, "app"), "default")[0]
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len("220 greeting from the backend\r\n"))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("no greeting before the app spoke: %v", err)
	}
}

// TestHalfCloseBothWays: the app sends and shuts down writing, then gets a
// 1 MiB reply; and the reverse, where the backend finishes first.
func TestHalfCloseBothWays(t *testing.T) {
	checkLeaks(t)
	w := newWorld(t)
	reply := random(t, 1<<20)
	type seen struct {
		sum [32]byte
		err error
	}
	got := make(chan seen, 2)
	// Route "default": read the request to EOF, then answer 1 MiB.
	// Route "reverse": send 1 MiB and shut down first, then read to EOF.
	appFirst := backend(t, func(c *net.TCPConn) {
		req, err := io.ReadAll(c)
		got <- seen{sha256.Sum256(req), err}
		c.Write(reply)
		c.CloseWrite()
	})
	backendFirst := backend(t, func(c *net.TCPConn) {
		c.Write(reply)
		c.CloseWrite()
		req, err := io.ReadAll(c)
		got <- seen{sha256.Sum256(req), err}
	})
	w.serverAddr = startServer(t, server.Config{
		TLS: tunnel.TLSPolicy{Credentials: creds(w.ca.Server(t, "localhost"), w.ca.Pool())},
		Routes: map[string]server.Route{
			"default": {Target: appFirst, ACL: tunnel.ACL{AllowAll: true}},
			"reverse": {Target: backendFirst, ACL: tunnel.ACL{AllowAll: true}},
		},
	})
	locals := w.client(t, w.ca.Client(t, "app"), "default", "reverse")
	request := random(t, 200<<10)

	c, err := net.Dial("tcp", locals[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(request)
	c.(*net.TCPConn).CloseWrite()
	back, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(back, reply) {
		t.Fatalf("app-first: reply of %d bytes, %v; want %d bytes intact", len(back), err, len(reply))
	}
	if s := <-got; s.err != nil || s.sum != sha256.Sum256(request) {
		t.Fatalf("app-first: backend got a different request (%v)", s.err)
	}

	c2, err := net.Dial("tcp", locals[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	back, err = io.ReadAll(c2) // backend half-closed; our side stays open
	if err != nil || !bytes.Equal(back, reply) {
		t.Fatalf("backend-first: %d bytes, %v", len(back), err)
	}
	c2.Write(request)
	c2.(*net.TCPConn).CloseWrite()
	if s := <-got; s.err != nil || s.sum != sha256.Sum256(request) {
		t.Fatalf("backend-first: request sent after the backend's FIN was lost (%v)", s.err)
	}
}

// TestSessionLossResetsApp cuts the TCP connection between the agents in
// the middle of a transfer (a fault-injecting proxy closes both sides with
// RST): the app must see a connection reset, not a clean EOF.
func TestSessionLossResetsApp(t *testing.T) {
	checkLeaks(t)
	w := newWorld(t)
	proxy := newCutProxy(t, w.serverAddr)
	w.serverAddr = proxy.addr
	local := w.client(t, w.ca.Client(t, "app"), "default")[0]
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("before the cut")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len("before the cut"))); err != nil {
		t.Fatal(err)
	}
	proxy.cut()
	_, err = io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app read after the session died: err = %v, want ECONNRESET", err)
	}
	w.logs.waitFor(t, "client stream reset on session loss", func(r record) bool {
		return r.msg == "stream ended" && r.attrs["agent"] == "client" && r.attrs["result"] == "reset"
	})
}

// cutProxy forwards TCP to a target until cut, which resets every
// connection it carries: a network fault between the agents.
type cutProxy struct {
	addr  string
	mu    sync.Mutex
	conns []*net.TCPConn
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	p := &cutProxy{}
	p.addr = backend(t, func(c *net.TCPConn) {
		p.track(c)
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		p.track(up.(*net.TCPConn))
		done := make(chan struct{})
		go func() { io.Copy(up, c); close(done) }()
		io.Copy(c, up)
		<-done
	})
	// Runs before backend's cleanup, which waits for the handlers: a
	// connection still in a handshake must not keep it waiting.
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) track(c *net.TCPConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		tunnel.Reset(c)
	}
	p.conns = nil
}

// TestAppResetReachesBackend: an app that resets mid-upload must not look
// to the backend like an upload that ended cleanly (truncated data taken
// as complete): the backend's connection is reset too.
func TestAppResetReachesBackend(t *testing.T) {
	checkLeaks(t)
	w := newWorld(t)
	got := make(chan error, 1)
	started := make(chan struct{})
	sink := backend(t, func(c *net.TCPConn) {
		if _, err := io.ReadFull(c, make([]byte, 1024)); err != nil {
			got <- err
			return
		}
		close(started)
		_, err := io.Copy(io.Discard, c)
		got <- err
	})
	w.serverAddr = startServer(t, server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(w.ca.Server(t, "localhost"), w.ca.Pool())},
		Routes: map[string]server.Route{"default": {Target: sink, ACL: tunnel.ACL{AllowAll: true}}},
	})
	local := w.client(t, w.ca.Client(t, "app"), "default")[0]
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	go c.Write(random(t, 8<<20))
	select {
	case <-started: // the upload is under way end to end
	case <-time.After(20 * time.Second):
		t.Fatal("upload never reached the backend")
	}
	tunnel.Reset(c)
	select {
	case err := <-got:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("backend saw the upload end with %v, want a reset", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("backend never saw the end of the upload")
	}
}
