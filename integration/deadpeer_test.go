package integration

import (
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// deadPeerWorld is a server and a client agent joined through a fault
// proxy, with the keepalive bounds shortened to ka and kaTimeout.
func deadPeerWorld(t *testing.T, rate int, ka, kaTimeout time.Duration) (*world, *faultProxy, string) {
	t.Helper()
	sc := tunnel.SessionConfig{KeepAlive: ka, KeepAliveTimeout: kaTimeout}
	var proxy *faultProxy
	w, local := echoWorld(t, func(c *server.Config) { c.Session = sc }, func(_ *world, c *client.Config) {
		proxy = newFaultProxy(t, c.Servers[0], rate)
		c.Servers = []string{proxy.addr}
		c.Session = sc
	})
	return w, proxy, local
}

// TestBlackholedLinkDetected: a link that silently stops passing packets
// (no FIN, no RST) ends the session on both agents within the keepalive
// bound, and the app's connection is reset rather than left hanging.
func TestBlackholedLinkDetected(t *testing.T) {
	checkLeaks(t)
	const ka, kaTimeout = 300 * time.Millisecond, 500 * time.Millisecond
	w, proxy, local := deadPeerWorld(t, 0, ka, kaTimeout)
	c := connectedApp(t, local)
	proxy.blackhole()
	start := time.Now()
	_, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app read after the link died: err = %v, want ECONNRESET", err)
	}
	// The bound is ka+timeout plus a watchdog tick; allow generous slack
	// for a loaded machine, far below what no detection would take.
	if took > 3*(ka+kaTimeout) {
		t.Errorf("detected after %s, bound %s", took, ka+kaTimeout)
	}
	for _, agent := range []string{"client", "server"} {
		w.logs.waitFor(t, agent+" session ended as unresponsive", func(r record) bool {
			return r.msg == "session ended" && r.attrs["agent"] == agent && strings.Contains(r.attrs["reason"], "peer unresponsive")
		})
	}
	t.Logf("detected after %s (keepalive %s + timeout %s)", took, ka, kaTimeout)
}

// TestSaturatedSlowLinkIsNotDead: a bulk echo that saturates a 256 KiB/s
// link both ways for about 3 s, so that pings and their answers queue
// behind data, must not be taken for a dead peer with a keepalive bound
// (1 s) much shorter than the transfer; every byte comes back intact.
func TestSaturatedSlowLinkIsNotDead(t *testing.T) {
	checkLeaks(t)
	const ka, kaTimeout = 300 * time.Millisecond, 700 * time.Millisecond
	w, _, local := deadPeerWorld(t, 256<<10, ka, kaTimeout)
	payload := random(t, 768<<10) // about 3 s each way
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil || n != int64(len(payload)) || [32]byte(h.Sum(nil)) != sha256.Sum256(payload) {
		t.Fatalf("echo through the slow link: %d of %d bytes, err %v\n%s", n, len(payload), err, w.logs.dump())
	}
	if n := w.logs.count(msgAttr("session ended")); n != 0 {
		t.Fatalf("a saturated link was taken for a dead peer:\n%s", w.logs.dump())
	}
}
