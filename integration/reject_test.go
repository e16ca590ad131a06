package integration

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// expectReset connects to a client agent's local address, says something,
// and requires the connection to end in a reset.
func expectReset(t *testing.T, local string) {
	t.Helper()
	// The kernel reports a reset once, to whichever call meets it first:
	// the connect itself (when the agent resets faster than connect
	// returns), the write, or the read.
	c, err := net.Dial("tcp", local)
	if errors.Is(err, syscall.ECONNRESET) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte("hello?")); errors.Is(err, syscall.ECONNRESET) {
		return
	}
	_, err = io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app connection ended with %v, want a reset", err)
	}
}

func handshakeFailed(reason tunnel.Reason) func(record) bool {
	return msgAttr("handshake failed", "agent", "server", "reason", string(reason))
}

// handshakeFailures weighs the server's records for waitForSum: one for
// each failed handshake with reason logged on its own line, and the count
// of a line for those a flood left unlogged.
func handshakeFailures(reason tunnel.Reason) func(record) int {
	line := handshakeFailed(reason)
	summary := msgAttr("handshake failures not logged", "agent", "server", "reason", string(reason))
	return func(r record) int {
		switch {
		case line(r):
			return 1
		case summary(r):
			n, _ := strconv.Atoi(r.attrs["count"])
			return n
		}
		return 0
	}
}

// Each case is refused with its own reason in the server's (or client's)
// log while the good client on the same server keeps working.
func TestRejections(t *testing.T) {
	checkLeaks(t)
	w := newWorld(t)
	w.checkGood(t)

	t.Run("plaintext", func(t *testing.T) {
		c, err := net.Dial("tcp", w.serverAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if n, _ := io.Copy(io.Discard, c); n > 0 {
			t.Errorf("server answered plaintext with %d bytes", n)
		}
		w.logs.waitFor(t, "not_tls", handshakeFailed(tunnel.ReasonNotTLS))
		w.checkGood(t)
	})

	t.Run("no client certificate", func(t *testing.T) {
		c, err := tls.Dial("tcp", w.serverAddr, &tls.Config{
			RootCAs: w.ca.Pool(), ServerName: "localhost", NextProtos: []string{tunnel.ALPN},
		})
		if err == nil { // TLS 1.3: the client finishes before the server decides
			c.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil {
			t.Fatal("server accepted a client without a certificate")
		}
		w.logs.waitFor(t, "no_certificate", handshakeFailed(tunnel.ReasonNoCertificate))
		w.checkGood(t)
	})

	t.Run("wrong ALPN", func(t *testing.T) {
		c, err := tls.Dial("tcp", w.serverAddr, &tls.Config{
			RootCAs: w.ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"},
			Certificates: []tls.Certificate{w.ca.Client(t, "app")},
		})
		if err == nil {
			c.Close()
			t.Fatal("server accepted ALPN h2")
		}
		w.logs.waitFor(t, "alpn_mismatch", handshakeFailed(tunnel.ReasonALPN))
		w.checkGood(t)
	})

	t.Run("client certificate from another CA", func(t *testing.T) {
		other := certstest.New(t)
		local := startClient(t, client.Config{
			Servers: []string{w.serverAddr},
			TLS:     tunnel.TLSPolicy{Credentials: creds(other.Client(t, "app"), w.ca.Pool()), ServerName: "localhost"},
			Routes:  []client.Route{{}},
			Logger:  w.logs.logger("other-ca-client"),
		})[0]
		expectReset(t, local)
		w.logs.waitFor(t, "unknown_authority", handshakeFailed(tunnel.ReasonUnknownAuthority))
		w.logs.waitFor(t, "client told why", msgAttr("session dial failed", "agent", "other-ca-client", "reason", string(tunnel.ReasonPeerRejected)))
		// A refusal is not waited out (ConnectWait): the app is reset at once.
		w.logs.waitFor(t, "app reset without waiting", msgAttr("no session: resetting app connection",
			"agent", "other-ca-client", "refused", "true", "reason", string(tunnel.ReasonPeerRejected)))
		w.checkGood(t)
	})

	t.Run("identity not allowed on route", func(t *testing.T) {
		local := w.client(t, w.ca.Client(t, "app"), "admin")[0]
		expectReset(t, local)
		w.logs.waitFor(t, "server: forbidden", msgAttr("stream rejected", "agent", "server", "route", "admin", "result", "forbidden", "peer", "CN=app"))
		w.logs.waitFor(t, "client: forbidden", msgAttr("stream refused by server", "agent", "client", "route", "admin", "result", "forbidden"))
		w.checkGood(t)
	})

	t.Run("unknown route", func(t *testing.T) {
		local := w.client(t, w.ca.Client(t, "app"), "nope")[0]
		expectReset(t, local)
		w.logs.waitFor(t, "unknown_route", msgAttr("stream rejected", "agent", "server", "route", "nope", "result", "unknown_route"))
		w.checkGood(t)
	})

	t.Run("server name mismatch", func(t *testing.T) {
		local := startClient(t, client.Config{
			Servers: []string{w.serverAddr},
			TLS:     tunnel.TLSPolicy{Credentials: creds(w.ca.Client(t, "app"), w.ca.Pool()), ServerName: "db.example.com"},
			Routes:  []client.Route{{}},
			Logger:  w.logs.logger("mismatch-client"),
		})[0]
		expectReset(t, local)
		w.logs.waitFor(t, "name_mismatch", msgAttr("session dial failed", "agent", "mismatch-client", "reason", string(tunnel.ReasonNameMismatch)))
		w.logs.waitFor(t, "server sees the client's refusal", handshakeFailed(tunnel.ReasonPeerRejected))
		w.checkGood(t)
	})
}

// TestSilentConnectionTimesOut: a TCP connection that never starts TLS is
// closed after the handshake timeout.
func TestSilentConnectionTimesOut(t *testing.T) {
	checkLeaks(t)
	ca := certstest.New(t)
	logs := newLogSink(t)
	addr := startServer(t, server.Config{
		TLS:              tunnel.TLSPolicy{Credentials: creds(ca.Server(t, "localhost"), ca.Pool())},
		Routes:           map[string]server.Route{"default": {Target: "127.0.0.1:1", ACL: tunnel.ACL{AllowAll: true}}},
		HandshakeTimeout: 300 * time.Millisecond,
		Logger:           logs.logger("server"),
	})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, syscall.ETIMEDOUT) {
		t.Fatalf("silent connection: read = %v, want the server to close it", err)
	}
	logs.waitFor(t, "handshake_timeout", handshakeFailed(tunnel.ReasonTimeout))
}

// TestTargetUnreachable: a route whose target refuses connections answers
// target_unreachable; the app gets a reset.
func TestTargetUnreachable(t *testing.T) {
	checkLeaks(t)
	w := newWorld(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	w.serverAddr = startServer(t, server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(w.ca.Server(t, "localhost"), w.ca.Pool())},
		Routes: map[string]server.Route{"default": {Target: dead, ACL: tunnel.ACL{AllowAll: true}}},
		Logger: w.logs.logger("server2"),
	})
	local := w.client(t, w.ca.Client(t, "app"), "default")[0]
	expectReset(t, local)
	w.logs.waitFor(t, "target_unreachable", msgAttr("stream refused by server", "agent", "client", "result", "target_unreachable"))
}
