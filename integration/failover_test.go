package integration

// Reconnect with backoff, connect-wait and several servers, with both
// agents in this process (so the client's pool runs under -race).

import (
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// fleet is a CA, an echo backend and a log sink shared by several server
// agents and a client agent.
type fleet struct {
	ca   *certstest.CA
	logs *logSink
	echo string
}

func newFleet(t *testing.T) *fleet {
	return &fleet{ca: certstest.New(t), logs: newLogSink(t), echo: backend(t, echo)}
}

// server starts a server agent that logs as name, on listen (or
// 127.0.0.1:0), and returns its address and its graceful stop.
func (f *fleet) server(t *testing.T, name, listen string) (string, func()) {
	t.Helper()
	return startServerCtl(t, server.Config{
		Listen: listen,
		TLS:    tunnel.TLSPolicy{Credentials: creds(f.ca.Server(t, "localhost"), f.ca.Pool())},
		Routes: map[string]server.Route{"default": {Target: f.echo, ACL: tunnel.ACL{AllowAll: true}}},
		Logger: f.logs.logger(name),
	})
}

// restart starts a server agent on the address of one just stopped.
// Go listens with SO_REUSEADDR, so the old sessions' TIME_WAIT does not
// block the port.
func (f *fleet) restart(t *testing.T, name, addr string) func() {
	t.Helper()
	got, stop := f.server(t, name, addr)
	if got != addr {
		t.Fatalf("restarted server on %s, want %s", got, addr)
	}
	return stop
}

func (f *fleet) clientConfig(t *testing.T, servers ...string) client.Config {
	return client.Config{
		Servers: servers,
		TLS:     tunnel.TLSPolicy{Credentials: creds(f.ca.Client(t, "app"), f.ca.Pool())},
		Routes:  []client.Route{{}},
		Logger:  f.logs.logger("client"),
	}
}

// established matches the client's "session established" for server.
func established(server string) func(record) bool {
	return msgAttr("session established", "agent", "client", "server", server)
}

func sessionEnded(server string) func(record) bool {
	return msgAttr("session ended", "agent", "client", "server", server)
}

// TestReconnectBackoff: a server that is down is redialled with growing,
// jittered delays: each redial comes no sooner than the delay drawn for it,
// the bound doubles from Base to Max, and each failure is logged with that
// delay. A session that stayed up for Healthy starts the backoff again
// from Base; one that dies young does not.
func TestReconnectBackoff(t *testing.T) {
	checkLeaks(t)
	f := newFleet(t)
	down := startDownServer(t)
	addr := down.addr()
	rnd := newDraws(42)
	cfg := f.clientConfig(t, addr)
	cfg.Sessions = 1
	const healthy = time.Second
	cfg.Reconnect = tunnel.Reconnect{Base: 20 * time.Millisecond, Max: 320 * time.Millisecond, Healthy: healthy, Rand: rnd.Int64N}
	startClient(t, cfg)

	const attempts = 10
	var at []time.Time
	for range attempts {
		at = append(at, down.next(t))
	}
	bounds, delays := rnd.snapshot()
	ms := time.Millisecond
	wantBounds := []time.Duration{20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 320 * ms, 320 * ms, 320 * ms, 320 * ms}
	for i, want := range wantBounds {
		if bounds[i] != want {
			t.Fatalf("delay %d drawn below %v, want below %v (all: %v)", i+1, bounds[i], want, bounds)
		}
		if gap := at[i+1].Sub(at[i]); gap < delays[i] {
			t.Errorf("dial %d came %v after dial %d, sooner than its delay %v", i+2, gap, i+1, delays[i])
		}
	}
	var early, late time.Duration
	for i := range 4 {
		early += delays[i]
		late += delays[len(wantBounds)-1-i]
	}
	if late <= early {
		t.Errorf("delays did not grow: the first four add up to %v, the last four to %v", early, late)
	}
	t.Logf("%d dials in %v; delays %v", attempts, at[attempts-1].Sub(at[0]).Round(ms), delays[:attempts-1])
	for i := range attempts - 1 {
		n := i + 1
		r := f.logs.waitForN(t, "dial failure", n, msgAttr("session dial failed", "agent", "client", "server", addr))
		if r.attrs["failures"] != strconv.Itoa(n) || r.attrs["retry_in"] != delays[i].Round(ms).String() || r.attrs["reason"] != string(tunnel.ReasonPeerClosed) {
			t.Errorf("failure %d logged as %v, want failures=%d retry_in=%v reason=peer_closed", n, r, n, delays[i].Round(ms))
		}
		// An error for the first, a warning for the 2nd, 4th, 8th..., the
		// rest at debug: a server down for long does not flood the log.
		want := slog.LevelDebug
		switch {
		case n == 1:
			want = slog.LevelError
		case n&(n-1) == 0:
			want = slog.LevelWarn
		}
		if r.level != want {
			t.Errorf("failure %d logged at %s, want %s", n, r.level, want)
		}
	}

	// The server comes up; its session lives past Healthy, then the server
	// stops: the next delays start from Base again.
	down.close()
	stop := f.restart(t, "server", addr)
	f.logs.waitFor(t, "session to the real server", established(addr))
	bounds, _ = rnd.snapshot()
	mark := len(bounds)
	time.Sleep(healthy + 100*time.Millisecond) // the session must live this long: a wait on the clock, not on an event
	stop()
	f.logs.waitFor(t, "session ended after the stop", sessionEnded(addr))
	failures := f.logs.count(msgAttr("session dial failed", "agent", "client"))
	f.logs.waitForN(t, "a dial failure after the stop", failures+1, msgAttr("session dial failed", "agent", "client"))
	bounds, _ = rnd.snapshot()
	if got := bounds[mark:]; len(got) < 2 || got[0] != 20*ms || got[1] != 40*ms {
		t.Fatalf("after a healthy session, delays drawn below %v, want 20ms, 40ms, ...", got)
	}

	// A session that dies young does not reset the backoff.
	stop = f.restart(t, "server", addr)
	f.logs.waitForN(t, "second session", 2, established(addr))
	bounds, _ = rnd.snapshot()
	mark = len(bounds)
	stop()
	f.logs.waitForN(t, "second session ended", 2, sessionEnded(addr))
	bounds, _ = rnd.snapshot()
	if got := bounds[mark:]; len(got) < 1 || got[0] <= 40*ms {
		t.Fatalf("after a session that lived less than %v, delay drawn below %v, want the backoff to go on growing", healthy, got)
	}
}

// TestConnectWaitReset: with no server reachable, an app connection waits
// ConnectWait and is then reset (never closed cleanly), with a log line
// naming the server and the last dial error.
func TestConnectWaitReset(t *testing.T) {
	checkLeaks(t)
	f := newFleet(t)
	addr := freeAddr(t)
	cfg := f.clientConfig(t, addr)
	const wait = 500 * time.Millisecond
	cfg.ConnectWait = wait
	local := startClient(t, cfg)[0]
	f.logs.waitFor(t, "a refused dial", msgAttr("session dial failed", "agent", "client", "reason", string(tunnel.ReasonUnreachable)))

	start := time.Now()
	expectReset(t, local)
	waited := time.Since(start)
	if waited < wait || waited > wait+5*time.Second {
		t.Errorf("app reset after %v, want about %v", waited, wait)
	}
	r := f.logs.waitFor(t, "no session", msgAttr("no session: resetting app connection", "agent", "client", "servers", addr))
	if !strings.Contains(r.attrs["last_dial_error"], "connection refused") || r.attrs["refused"] != "false" {
		t.Errorf("log line %v does not give the last dial error", r)
	}
}

// TestConnectWaitServerComesUp: an app connection that arrives while the
// server is down waits, and is carried as soon as the server comes up,
// even though the backoff had grown past the rest of the wait.
func TestConnectWaitServerComesUp(t *testing.T) {
	checkLeaks(t)
	f := newFleet(t)
	down := startDownServer(t)
	addr := down.addr()
	cfg := f.clientConfig(t, addr)
	cfg.ConnectWait = 20 * time.Second
	cfg.Reconnect = tunnel.Reconnect{Base: time.Second, Max: time.Minute, Waiting: 500 * time.Millisecond, Rand: func(n int64) int64 { return n - 1 }}
	local := startClient(t, cfg)[0]
	for range 2 { // the second delay is just under 2 s
		down.next(t)
	}
	f.logs.waitForN(t, "second dial failure", 2, msgAttr("session dial failed", "agent", "client"))

	result := make(chan error, 1)
	go func() { result <- echoCheck(t, local, 64<<10) }()
	// Waiting apps cut the delay to Waiting: the next dial comes soon.
	down.next(t)
	down.close()
	f.restart(t, "server", addr)
	up := time.Now()
	if err := <-result; err != nil {
		t.Fatalf("the waiting app connection failed: %v\n%s", err, f.logs.dump())
	}
	// Without the cut to Waiting the next dial would be about 4 s after
	// the third failure.
	if d := time.Since(up); d > 2*time.Second {
		t.Errorf("the waiting app was carried %v after the server came up, want within about Waiting (500ms)", d)
	}
	if n := f.logs.count(msgAttr("no session: resetting app connection")); n != 0 {
		t.Errorf("%d app connections reset", n)
	}
}

// TestTwoServersSpreadAndFailover: the client keeps sessions to both
// servers and spreads streams over them; each server's certificate is
// checked against its own host. When one server stops, every new
// connection goes to the other, and Ready says which is down.
func TestTwoServersSpreadAndFailover(t *testing.T) {
	checkLeaks(t)
	f := newFleet(t)
	// Server a is dialled as localhost and its certificate names only
	// that; server b is dialled as 127.0.0.1 and names only that IP.
	addrA, stopA := startServerCtl(t, server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(f.ca.Server(t, "a", "localhost"), f.ca.Pool())},
		Routes: map[string]server.Route{"default": {Target: f.echo, ACL: tunnel.ACL{AllowAll: true}}},
		Logger: f.logs.logger("server-a"),
	})
	_, port, _ := net.SplitHostPort(addrA)
	a := net.JoinHostPort("localhost", port)
	b, _ := startServerCtl(t, server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(f.ca.Server(t, "b", "127.0.0.1"), f.ca.Pool())},
		Routes: map[string]server.Route{"default": {Target: f.echo, ACL: tunnel.ACL{AllowAll: true}}},
		Logger: f.logs.logger("server-b"),
	})
	cfg := f.clientConfig(t, a, b)
	cfg.Sessions = 2
	cl, locals := startClientAgent(t, cfg)
	local := locals[0]
	for _, srv := range []string{a, b} {
		f.logs.waitForN(t, "two sessions to "+srv, 2, established(srv))
	}
	if ready, servers := cl.Ready(); !ready || servers[a] != "up" || servers[b] != "up" {
		t.Errorf("Ready = %v %v, want both up", ready, servers)
	}
	for range 20 {
		if err := echoCheck(t, local, 16<<10); err != nil {
			t.Fatal(err)
		}
	}
	for _, agent := range []string{"server-a", "server-b"} {
		if n := f.logs.count(msgAttr("stream ended", "agent", agent, "result", "ok")); n < 5 {
			t.Errorf("%s carried %d of 20 streams, want them spread", agent, n)
		}
	}

	stopA()
	f.logs.waitForN(t, "both sessions to a ended", 2, sessionEnded(a))
	before := f.logs.count(msgAttr("stream ended", "agent", "server-b", "result", "ok"))
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoCheck(t, local, 32<<10); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a new connection failed after server a stopped: %v", err)
	}
	f.logs.waitForN(t, "40 more streams on b", before+40, msgAttr("stream ended", "agent", "server-b", "result", "ok"))
	ready, servers := cl.Ready()
	if !ready || servers[b] != "up" || !strings.HasPrefix(servers[a], "down: ") {
		t.Errorf("Ready = %v %v, want a down and b up", ready, servers)
	}
	t.Logf("Ready after a stopped: %v", servers)
}

// TestRollingRestartInProcess: under continuous load (8 workers, random
// payloads, SHA-256 checked), server a drains (GoAway), restarts, then
// server b does the same: no transfer fails. Streams that crossed a GoAway
// on the wire are still served, and sessions close only when both sides
// are done with them (see "Drain" in tunnel/doc.go).
func TestRollingRestartInProcess(t *testing.T) {
	checkLeaks(t)
	f := newFleet(t)
	a, stopA := f.server(t, "server-a", "")
	b, stopB := f.server(t, "server-b", "")
	cfg := f.clientConfig(t, a, b)
	cfg.Sessions = 2
	cfg.Reconnect = tunnel.Reconnect{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	local := startClient(t, cfg)[0]
	for _, srv := range []string{a, b} {
		f.logs.waitForN(t, "sessions to "+srv, 2, established(srv))
	}
	l := startLoad(t, 8, echoLoad(t, local))
	l.waitOK(t, 50)
	stops := map[string]func(){a: stopA, b: stopB}
	for _, srv := range []string{a, b} {
		n := f.logs.count(established(srv))
		stops[srv]()
		l.waitOK(t, 50) // all on the other server
		f.restart(t, "server", srv)
		f.logs.waitForN(t, "sessions to the restarted "+srv, n+2, established(srv))
		l.waitOK(t, 50)
	}
	ok, fails := l.finish()
	for _, err := range fails {
		t.Error(err)
	}
	t.Logf("%d transfers, %d failed", ok, len(fails))
	if len(fails) > 0 {
		t.Logf("logs:\n%s", f.logs.dump())
	}
}
