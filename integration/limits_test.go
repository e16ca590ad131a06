package integration

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// TestMaxStreamsPerSession: a stream beyond the per-session cap is refused
// (the app gets a reset) while the streams within it keep working.
func TestMaxStreamsPerSession(t *testing.T) {
	w := &world{logs: newLogSink(t)}
	w.ca = certstest.New(t)
	w.echoAddr = backend(t, echo)
	w.serverAddr = startServer(t, server.Config{
		TLS:        tunnel.TLSPolicy{Credentials: creds(w.ca.Server(t, "localhost"), w.ca.Pool())},
		Routes:     map[string]server.Route{"default": {Target: w.echoAddr, ACL: tunnel.ACL{AllowAll: true}}},
		MaxStreams: 2,
		Logger:     w.logs.logger("server"),
	})
	local := startClient(t, client.Config{
		Server:   w.serverAddr,
		TLS:      tunnel.TLSPolicy{Credentials: creds(w.ca.Client(t, "app"), w.ca.Pool()), ServerName: "localhost"},
		Routes:   []client.Route{{}},
		Sessions: 1, // all streams on one session
		Logger:   w.logs.logger("client"),
	})[0]
	var open []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		c.Write([]byte("hi"))
		if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	expectReset(t, local)
	w.logs.waitFor(t, "unavailable", msgAttr("stream rejected", "agent", "server", "result", "unavailable"))
	for _, c := range open {
		c.Write([]byte("still"))
		if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
			t.Fatalf("a stream within the cap broke: %v", err)
		}
	}
}
