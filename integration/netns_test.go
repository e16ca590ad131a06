package integration

// The agents on two hosts (issue 5, "Multi-host"): the built binary in two
// network namespaces joined by a veth pair (netns_helpers_test.go), so the
// tunnel crosses real, non-loopback addresses and a link that can be cut.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// netnsServerName is the server certificate of the netns tests: issued
// for the db host's address alone (an IP SAN).
const netnsServerName = "db-host"

// netnsPKI is the README's PKI with the server certificate replaced by one
// for the db host's address. The client is started without --server-name,
// so it checks that address, as it would dial a server by IP in production.
func netnsPKI(t *testing.T, p netnsPair) binPKI {
	t.Helper()
	k := newBinPKI(t, t.TempDir())
	mustRunBinary(t, "certs", "issue", "--dir", k.dir, "--name", netnsServerName, "--server", "--ip", p.db.ip)
	k.serverCert = filepath.Join(k.dir, netnsServerName+".crt")
	k.serverKey = filepath.Join(k.dir, netnsServerName+".key")
	return k
}

// startNetnsAgents runs the server agent on the db host's address with
// target, and a client agent on the app host for it, with extra flags for
// both and for the client. It returns them with the server's address and
// the client's local address (127.0.0.1 on the app host).
func startNetnsAgents(t *testing.T, p netnsPair, target string, both, clientExtra []string) (server, client *childProc, serverAddr, local string) {
	t.Helper()
	k := netnsPKI(t, p)
	server = p.db.agent(t, "server", slices.Concat(k.serverArgs(net.JoinHostPort(p.db.ip, "0"), target), both)...)
	serverAddr = server.listening(t)
	args := slices.Concat(withoutFlag(k.clientArgs(serverAddr), "--server-name"), both, clientExtra)
	client = p.app.agent(t, "client", args...)
	local = client.listening(t)
	return server, client, serverAddr, local
}

// echoDigest echoes what it reads and, after the app's half-close, sends
// the SHA-256 of all it read: the app checks its upload by that digest,
// made on the db host, and its download by the echoed bytes.
func echoDigest(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	if _, err := io.Copy(c, io.TeeReader(c, h)); err != nil {
		return
	}
	c.Write(h.Sum(nil))
	c.CloseWrite()
}

// digestTransfer sends payload from the app host through addr to
// echoDigest and checks both directions by length and SHA-256.
func digestTransfer(h netnsHost, addr string, payload []byte) error {
	c, err := h.dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err2 := <-werr; err == nil {
		err = err2
	}
	want := sha256.Sum256(payload)
	switch {
	case err != nil:
		return err
	case len(got) != len(payload)+sha256.Size:
		return fmt.Errorf("%d bytes came back, want %d echoed and a SHA-256", len(got), len(payload))
	case !bytes.Equal(got[len(payload):], want[:]):
		return errors.New("upload corrupted: the db host's SHA-256 of what it received differs")
	case sha256.Sum256(got[:len(payload)]) != want:
		return errors.New("download corrupted: the SHA-256 of the echo differs")
	}
	return nil
}

// remoteHost is the host part of a log line's "remote" attribute.
func remoteHost(t *testing.T, r record) string {
	t.Helper()
	host, _, err := net.SplitHostPort(r.attrs["remote"])
	if err != nil {
		t.Fatalf("log line without a remote address: %v", r)
	}
	return host
}

// TestNetnsTransfersBinary runs the agents on two hosts, as in production:
// the server agent and its backend on the db host, the client agent and
// its apps on the app host. Eight concurrent transfers cross the link
// intact both ways, and the server sees the client come from the app
// host's address, not from loopback.
func TestNetnsTransfersBinary(t *testing.T) {
	p := newNetnsPair(t)
	target := serveBackend(t, p.db.listen(t), echoDigest)
	server, client, serverAddr, local := startNetnsAgents(t, p, target, nil, nil)

	const apps = 8
	errs := make(chan error, apps)
	for i := range apps {
		payload := random(t, 1<<20+i*77777)
		go func() { errs <- digestTransfer(p.app, local, payload) }()
	}
	for range apps {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.Fatalf("client output:\n%s\nserver output:\n%s", client.out.dump(), server.out.dump())
	}
	server.waitLogN(t, apps, "stream ended", "route", "default", "peer", "CN=app", "result", "ok")
	client.waitLog(t, "session established", "server", serverAddr, "peer", "CN="+netnsServerName)
	sessions := server.count("session established", "peer", "CN=app")
	for n := range sessions {
		r := server.waitLogN(t, n+1, "session established", "peer", "CN=app")
		if host := remoteHost(t, r); host != p.app.ip {
			t.Errorf("server saw a session from %s, want the app host's %s", r.attrs["remote"], p.app.ip)
		}
	}
	t.Logf("%d transfers intact; the server saw %d sessions, all from %s", apps, sessions, p.app.ip)
}

// appEnd is how an app connection of TestNetnsLinkCutBinary ended.
type appEnd struct {
	mode  byte // streamOrEcho's: 'S' download, 'U' upload, 'E' idle after one echo
	moved int64
	err   error
	at    time.Time
}

// meter is the app's end of a transfer without end: as an io.Writer it
// takes a download, as an io.Reader it makes an upload (the bytes do not
// matter; the backend discards them). It reports once on running, when
// 256 KiB have moved or, with an error, when the transfer ended first.
type meter struct {
	n       int64
	running chan<- error
	told    bool
}

func (m *meter) add(k int) {
	if m.n += int64(k); m.n >= 256<<10 {
		m.tell(nil)
	}
}

func (m *meter) Write(b []byte) (int, error) { m.add(len(b)); return len(b), nil }
func (m *meter) Read(b []byte) (int, error)  { m.add(len(b)); return len(b), nil }

// tell reports on running, once.
func (m *meter) tell(err error) {
	if !m.told {
		m.told = true
		m.running <- err
	}
}

// cutApp runs one app of TestNetnsLinkCutBinary on c until the connection
// breaks, and reports how on done. After its first byte an app only reads
// or only writes: Linux reports a reset once, and a concurrent write could
// take it and leave a read with a clean EOF.
func cutApp(c *net.TCPConn, mode byte, running chan<- error, done chan<- appEnd) {
	m := &meter{running: running}
	end := appEnd{mode: mode}
	_, end.err = c.Write([]byte{mode})
	if end.err == nil {
		switch mode {
		case 'S':
			_, end.err = io.Copy(m, c)
		case 'U':
			_, end.err = io.Copy(c, m)
		case 'E':
			if end.err = pingPong(c); end.err == nil {
				m.tell(nil) // open and answering: all an idle app does
				_, end.err = io.Copy(m, c)
			}
		}
	}
	m.tell(fmt.Errorf("app %c ended before data flowed: %v", mode, end.err))
	end.moved, end.at = m.n, time.Now()
	done <- end
}

func pingPong(c *net.TCPConn) error {
	ping := []byte("ping")
	if _, err := c.Write(ping); err != nil {
		return err
	}
	got := make([]byte, len(ping))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, ping) {
		return fmt.Errorf("echo %q, want %q", got, ping)
	}
	return nil
}

// TestNetnsLinkCutBinary cuts the link between the hosts (`ip link set
// down`: nothing passes, and no FIN or reset reaches either side) while
// three downloads and two uploads run and an idle app connection is open.
// With --keepalive 1s --keepalive-timeout 2s both agents end the session
// within that bound plus slack, and every app sees a reset or an error,
// never a clean end of a transfer cut short. With the link up again the
// client redials (--reconnect-max 1s) and a new connection works.
func TestNetnsLinkCutBinary(t *testing.T) {
	const ka, kaTimeout, bound = time.Second, 2 * time.Second, 10 * time.Second
	p := newNetnsPair(t)
	target := serveBackend(t, p.db.listen(t), streamOrEcho)
	live := []string{"--keepalive", ka.String(), "--keepalive-timeout", kaTimeout.String()}
	// One session, so that one "session ended" per agent is the whole
	// story; a short handshake timeout, so that a dial made while the link
	// is down gives up soon and the next one, with the link up, goes out.
	server, client, serverAddr, local := startNetnsAgents(t, p, target, live,
		[]string{"--sessions", "1", "--reconnect-max", "1s", "--handshake-timeout", "2s"})
	client.waitLog(t, "session established", "server", serverAddr)

	modes := []byte("SSSUUE")
	running := make(chan error, len(modes))
	done := make(chan appEnd, len(modes))
	for _, mode := range modes {
		c, err := p.app.dial(local)
		if err != nil {
			t.Fatal(err)
		}
		// Closed when the test returns, which ends the app should it still
		// run after a failure; the deadline bounds it in any case.
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go cutApp(c, mode, running, done)
	}
	for range modes {
		if err := <-running; err != nil {
			t.Fatalf("before the cut: %v\nclient output:\n%s", err, client.out.dump())
		}
	}

	agents := []struct {
		p      *childProc
		match  func(record) bool
		before int
	}{
		{p: client, match: msgAttr("session ended", "server", serverAddr)},
		{p: server, match: msgAttr("session ended", "peer", "CN=app")},
	}
	for i := range agents {
		agents[i].before = agents[i].p.out.count(agents[i].match)
	}
	cut := time.Now() // before the command: the times measured from it are upper bounds
	p.db.setLink(t, false)
	for _, agent := range agents {
		r, err := agent.p.awaitWithin(2*bound, agent.before+1, agent.match)
		if err != nil {
			t.Fatalf("after the cut: %v\noutput:\n%s", err, agent.p.out.dump())
		}
		took := logTime(t, r).Sub(cut)
		cause := linkCutCause(r.attrs["reason"])
		t.Logf("%s: session ended %v after the cut (keepalive %v + timeout %v), %s: %q",
			agent.p.name, took.Round(time.Millisecond), ka, kaTimeout, cause, r.attrs["reason"])
		if cause == "" {
			t.Errorf("%s: session ended for another reason than a dead link: %q", agent.p.name, r.attrs["reason"])
		}
		if took > bound {
			t.Errorf("%s: session ended %v after the cut, want within %v", agent.p.name, took, bound)
		}
	}
	for range modes {
		checkCutApp(t, <-done, cut, bound)
	}
	if t.Failed() {
		t.Fatalf("client output:\n%s\nserver output:\n%s", client.out.dump(), server.out.dump())
	}

	established := client.count("session established", "server", serverAddr)
	up := time.Now()
	p.db.setLink(t, true)
	if _, err := client.awaitWithin(15*time.Second, established+1, msgAttr("session established", "server", serverAddr)); err != nil {
		t.Fatalf("after the link came back: %v\nclient output:\n%s", err, client.out.dump())
	}
	redialed := time.Since(up)
	c, err := p.app.dial(local)
	if err != nil {
		t.Fatal(err)
	}
	payload := append([]byte{'E'}, random(t, 1<<20)...)
	sum, n, err := transferSumConn(c, payload)
	if err != nil || n != int64(len(payload)-1) || sum != sha256.Sum256(payload[1:]) {
		t.Fatalf("new connection after the link came back: %d of %d bytes, %v\nclient output:\n%s",
			n, len(payload)-1, err, client.out.dump())
	}
	t.Logf("link up again: new session after %v, a new connection worked after %v",
		redialed.Round(time.Millisecond), time.Since(up).Round(time.Millisecond))
	r := server.waitLogN(t, 2, "session established", "peer", "CN=app")
	if host := remoteHost(t, r); host != p.app.ip {
		t.Errorf("server saw the new session from %s, want the app host's %s", r.attrs["remote"], p.app.ip)
	}
}

// linkCutCause names what ended a session over a cut link, from the
// "session ended" reason (a log line of another process: only its text is
// there to match), or returns "" for any other end. The watchdog says
// "peer unresponsive". The kernel's TCP_USER_TIMEOUT, set to the same
// bound (tuneTunnelSocket), can be first on a side with data in flight: it
// reports ETIMEDOUT, or the last soft error when the route went with the
// link (EHOSTUNREACH, ENETUNREACH), or tunnel.ErrConnAborted when a write
// took that error. "peer closed the connection" would be a false reason.
func linkCutCause(reason string) string {
	switch {
	case strings.Contains(reason, tunnel.ErrPeerUnresponsive.Error()):
		return "watchdog"
	case strings.Contains(reason, syscall.ETIMEDOUT.Error()),
		strings.Contains(reason, syscall.EHOSTUNREACH.Error()),
		strings.Contains(reason, syscall.ENETUNREACH.Error()),
		strings.Contains(reason, tunnel.ErrConnAborted.Error()):
		return "kernel TCP_USER_TIMEOUT"
	}
	return ""
}

// checkCutApp requires that an app of TestNetnsLinkCutBinary ended within
// bound of the cut with a reset (readers) or a reset or broken pipe
// (uploads): a nil error is a clean EOF, which would pass a cut transfer
// off as complete, and a timeout means nobody told the app.
func checkCutApp(t *testing.T, e appEnd, cut time.Time, bound time.Duration) {
	t.Helper()
	took := e.at.Sub(cut)
	t.Logf("app %c: %d bytes, then after %v: %v", e.mode, e.moved, took.Round(time.Millisecond), e.err)
	switch {
	case e.err == nil:
		t.Errorf("app %c: clean end of data after %d bytes over a cut link", e.mode, e.moved)
	case errors.Is(e.err, syscall.ECONNRESET), e.mode == 'U' && errors.Is(e.err, syscall.EPIPE):
	default:
		t.Errorf("app %c: %v, want a connection reset", e.mode, e.err)
	}
	if took > bound {
		t.Errorf("app %c: ended %v after the cut, want within %v", e.mode, took, bound)
	}
}

// logTime is when the agent logged r.
func logTime(t *testing.T, r record) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, r.attrs["time"])
	if err != nil {
		t.Fatalf("log line without a time: %v", r)
	}
	return at
}
