package integration

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// TestMaxStreamsPerSession: a stream beyond the per-session cap is refused
// (the app gets a reset) while the streams within it keep working.
func TestMaxStreamsPerSession(t *testing.T) {
	checkLeaks(t)
	// All streams on one session (echoWorld's client keeps one).
	w, local := echoWorld(t, func(c *server.Config) { c.Session = tunnel.SessionConfig{MaxStreams: 2} }, nil)
	open := []net.Conn{connectedApp(t, local), connectedApp(t, local)}
	expectReset(t, local)
	w.logs.waitFor(t, "unavailable", msgAttr("stream rejected", "agent", "server", "result", "unavailable"))
	for _, c := range open {
		c.Write([]byte("still"))
		if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
			t.Fatalf("a stream within the cap broke: %v", err)
		}
	}
}

// TestPoolGrowsPastFullSessions: with a cap of 2 streams per session (the
// memory budget), the client opens a new session for the third and fifth
// connection instead of having them refused, and all five work.
func TestPoolGrowsPastFullSessions(t *testing.T) {
	checkLeaks(t)
	capped := tunnel.SessionConfig{MaxStreams: 2}
	w, local := echoWorld(t, func(c *server.Config) {
		c.Session = capped
	}, func(w *world, c *client.Config) {
		c.Session = capped
	})
	for range 5 {
		connectedApp(t, local) // held open until the test ends
	}
	if n := w.logs.count(msgAttr("session established", "agent", "client")); n != 3 {
		t.Errorf("client established %d sessions for 5 streams at 2 per session, want 3", n)
	}
	if n := w.logs.count(msgAttr("session established", "agent", "client", "beyond_floor", "every session full")); n != 2 {
		t.Errorf("%d session lines say they were dialled because every session was full, want 2", n)
	}
	if n := w.logs.count(msgAttr("stream rejected", "agent", "server")); n != 0 {
		t.Errorf("server refused %d streams; the pool should have opened sessions instead", n)
	}
}

// TestSessionBudgetValidation: a stream cap that does not fit the memory
// budget is a configuration error that says so.
func TestSessionBudgetValidation(t *testing.T) {
	for _, tc := range []struct {
		sc   tunnel.SessionConfig
		want string
	}{
		{tunnel.SessionConfig{}, ""},
		{tunnel.SessionConfig{MaxStreams: 256}, ""},
		{tunnel.SessionConfig{MaxStreams: 257}, "257 streams x 4MiB window = 1028MiB per session, over the session memory budget of 1GiB"},
		{tunnel.SessionConfig{StreamWindow: 256 << 10, MaxStreams: 4096}, ""},
		{tunnel.SessionConfig{StreamWindow: 8 << 20, MemoryBudget: 4 << 20}, "larger than the session memory budget"},
		{tunnel.SessionConfig{StreamWindow: 1000}, "at least 256 KiB"},
	} {
		err := tc.sc.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.sc, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error containing %q", tc.sc, err, tc.want)
		}
	}
	if got := (tunnel.SessionConfig{}).StreamCap(); got != 256 {
		t.Errorf("default stream cap %d, want 1GiB / 4MiB = 256", got)
	}
}

// TestSessionsPerClientIdentity: one identity cannot hold more sessions
// than the server allows; the session beyond the limit is refused with a
// log line, and another identity is not affected.
func TestSessionsPerClientIdentity(t *testing.T) {
	checkLeaks(t)
	w, greedy := echoWorld(t, func(c *server.Config) { c.MaxSessionsPerPeer = 2 }, func(w *world, c *client.Config) {
		c.TLS.Credentials = creds(w.ca.Client(t, "greedy"), w.ca.Pool())
		c.Session = tunnel.SessionConfig{MaxStreams: 1} // a session per connection
		c.ConnectWait = 2 * time.Second                 // the refused session is not retried for long
	})
	for range 2 {
		connectedApp(t, greedy)
	}
	expectReset(t, greedy)
	w.logs.waitFor(t, "third session refused", func(r record) bool {
		return r.msg == "session refused" && r.attrs["peer"] == "CN=greedy" &&
			strings.Contains(r.attrs["err"], "already has 2 sessions (limit 2)")
	})
	w.goodClient = w.client(t, w.ca.Client(t, "app"), "default")[0]
	w.checkGood(t)
}

// TestSessionLifetime: a session past its lifetime takes no new streams
// (new connections go to a fresh session, authenticated again), a stream
// open across the deadline finishes within the grace period untouched,
// and one that outlasts the grace is reset.
func TestSessionLifetime(t *testing.T) {
	checkLeaks(t)
	w, local := echoWorld(t, func(c *server.Config) {
		c.Session = tunnel.SessionConfig{MaxLifetime: 500 * time.Millisecond, LifetimeGrace: 2 * time.Second}
	}, nil)
	short := connectedApp(t, local) // finishes within the grace
	long := connectedApp(t, local)  // outlasts it
	// The server's GoAway has reached the client when a new connection
	// gets a second session; try one every 50 ms until then (nothing
	// observable marks the moment in between).
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for w.logs.count(msgAttr("session established", "agent", "client")) < 2 {
		<-tick.C
		connectedApp(t, local)
	}
	short.Write([]byte("after the lifetime"))
	if _, err := io.ReadFull(short, make([]byte, 18)); err != nil {
		t.Fatalf("a stream inside the grace period broke: %v", err)
	}
	short.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadAll(short); err != nil {
		t.Fatalf("a stream inside the grace period did not end cleanly: %v", err)
	}
	expectResetOn(t, long)
	w.logs.waitFor(t, "retired session closed", func(r record) bool {
		return r.msg == "session ended" && r.attrs["agent"] == "server" && strings.Contains(r.attrs["reason"], "session lifetime exceeded")
	})
}

// TestPoolGrowsUnderBurst: 20 app connections arrive at once and are all
// held open while a session carries one stream at most; the pool must dial
// a session for each (it once went to sleep when a fresh session still had
// room at the moment it looked, leaving the other apps waiting).
func TestPoolGrowsUnderBurst(t *testing.T) {
	checkLeaks(t)
	one := tunnel.SessionConfig{MaxStreams: 1}
	w, local := echoWorld(t, func(c *server.Config) {
		c.Session = one
	}, func(w *world, c *client.Config) {
		c.Session = one
		c.ConnectWait = 5 * time.Second
	})
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			c, err := net.Dial("tcp", local)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			c.Write([]byte("hi"))
			_, err = io.ReadFull(c, make([]byte, 2))
			errs <- err
			if err == nil {
				io.Copy(io.Discard, c) // hold the stream until the test ends
			}
		}()
	}
	for i := range n {
		if err := <-errs; err != nil {
			t.Fatalf("connection %d of a burst of %d: %v\n%s", i+1, n, err, w.logs.dump())
		}
	}
	if got := w.logs.count(msgAttr("session established", "agent", "client")); got < n {
		t.Errorf("%d sessions for %d streams at one per session", got, n)
	}
}

// TestPoolLetsExtraSessionsGo: sessions dialled beyond the floor for a
// burst (one stream per session here) are drained once they have carried
// no stream for Reconnect.Linger, and the floor session stays and serves.
func TestPoolLetsExtraSessionsGo(t *testing.T) {
	checkLeaks(t)
	one := tunnel.SessionConfig{MaxStreams: 1}
	w, local := echoWorld(t, func(c *server.Config) { c.Session = one }, func(w *world, c *client.Config) {
		c.Session = one
		c.Reconnect.Linger = 300 * time.Millisecond
	})
	var held []net.Conn
	for range 3 {
		held = append(held, connectedApp(t, local))
	}
	if n := w.logs.count(msgAttr("session established", "agent", "client")); n < 3 {
		t.Fatalf("%d sessions for 3 streams at one per session", n)
	}
	for _, c := range held {
		c.Close()
	}
	extra := msgAttr("session draining", "agent", "client", "reason", "idle beyond the pool's floor of sessions")
	w.logs.waitForN(t, "two extra sessions let go", 2, extra)
	w.logs.waitForN(t, "and closed by the server", 2, func(r record) bool {
		return r.msg == "session ended" && r.attrs["agent"] == "client" && strings.HasPrefix(r.attrs["reason"], "drained")
	})
	if err := echoCheck(t, local, 64<<10); err != nil {
		t.Fatalf("the floor session after the others went: %v", err)
	}
	if n := w.logs.count(extra); n != 2 {
		t.Errorf("%d sessions let go, want 2 (the floor of 1 stays)", n)
	}
}

// TestPoolAvoidsBusySessions: a new connection does not join a session
// that carries bulk data. With one session kept (Size 1) and that one busy
// with a transfer, the pool dials a spare for the next connection, and a
// further one goes to the spare while it is quiet. (The choice itself, and
// the limit of Size spares, are unit-tested in tunnel.TestPickAvoidsBusy.)
func TestPoolAvoidsBusySessions(t *testing.T) {
	checkLeaks(t)
	w, local := echoWorld(t, nil, func(w *world, c *client.Config) {
		c.BusyRate = 256 << 10 // bytes a second: any steady transfer
	})
	established := msgAttr("session established", "agent", "client")
	a := connectedApp(t, local)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	a.SetDeadline(time.Time{})
	wg.Go(func() { // keep data flowing through a (the echo sends it back)
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-stop:
				a.Close()
				return
			default:
			}
			if _, err := a.Write(buf); err != nil {
				return
			}
		}
	})
	wg.Go(func() { io.Copy(io.Discard, a) })
	// The pool judges a session's traffic over at least 100 ms: until it
	// has, new connections join the one session. Open short ones until
	// one gets a spare.
	deadline := time.Now().Add(10 * time.Second)
	probes := 0
	for w.logs.count(established) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no spare session after %d connections beside a busy one\n%s", probes, w.logs.dump())
		}
		connectedApp(t, local).Close()
		probes++
	}
	for range 3 {
		connectedApp(t, local) // held: the spare is quiet, no third session
	}
	if n := w.logs.count(established); n != 2 {
		t.Fatalf("%d sessions after connections opened while the spare was quiet, want 2", n)
	}
	if n := w.logs.count(msgAttr("session established", "agent", "client", "beyond_floor", "every session busy")); n != 1 {
		t.Errorf("%d session lines say the spare was dialled because every session was busy, want 1", n)
	}
}
