package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBulkNiceBinary: while bulk streams and a talking quiet stream share
// the agents, both agents run the bulk sessions' loops on threads with
// --bulk-nice's nice value (tunnel/priority.go), and every thread has its
// priority back once the bulk has ended. Every byte echoes intact
// throughout. (What it buys, the head-of-line round trip, is measured in
// make bench, not here.)
func TestBulkNiceBinary(t *testing.T) { testBulkNice(t, nil) }

// TestBusyRateOffBinary: with --busy-rate off the server agent counts no
// session as busy and so lowers none, while the client, at the default
// rate, lowers its bulk session as in TestBulkNiceBinary. The server
// must stay unlowered for 2 s (eight of its judgements) once the client
// has lowered; both judge the same traffic, so a server that ignored the
// flag would lower within a judgement or two of the client.
func TestBusyRateOffBinary(t *testing.T) { testBulkNice(t, []string{"--busy-rate", "off"}) }

func testBulkNice(t *testing.T, serverExtra []string) {
	client, server, local, admins := startEchoAgents(t, echo, 2, []string{"--bulk-nice", "7", "--keepalive", "1s"}, serverExtra)
	agents := []*childProc{client, server}
	lowers := map[*childProc]bool{client: true, server: serverExtra == nil}
	if err := lowThreadsSupported(); err != nil {
		skipOrFailExternal(t, "%v", err) // CI runs as root: a skip there is a failure
	}

	tk := newTalk()
	// One bulk stream (the echo sends every byte back) takes one of the two
	// sessions; the ping, opened next, takes the other: the pool puts a
	// new stream on a quiet session first, then on the one with fewer
	// streams.
	b, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	tk.run(func(stop <-chan struct{}) error { return bulkEcho(b, stop) })
	if err := echoCheck(t, local, 64); err != nil { // the bulk stream is open by now
		t.Fatal(err)
	}
	p, err := net.Dial("tcp", local)
	if err != nil {
		tk.abort()
		t.Fatal(err)
	}
	tk.run(func(stop <-chan struct{}) error { return pingEcho(p, stop) })

	// Lowered: threads at nice 7, the metric, and GOMAXPROCS at one per
	// CPU plus three per lowered session at least. Back: no thread at nice
	// 7 and the metric at 0.
	lowered := func(busy bool) error {
		for _, a := range agents {
			want := busy && lowers[a]
			n, err := threadsWithNice(a.cmd.Process.Pid, 7)
			if err != nil {
				return err
			}
			if (n > 0) != want {
				return fmt.Errorf("%s agent: %d threads at nice 7", a.name, n)
			}
			m := scrape(t, admins[a])
			low, _ := m.value("mtunnel_sessions_lowered")
			procs, _ := m.value("go_sched_gomaxprocs_threads")
			switch {
			case want && (low < 1 || int(procs) < runtime.NumCPU()+3*int(low)):
				// More if copiers are lowered too (TestBulkCopierNiceBinary).
				return fmt.Errorf("%s agent: mtunnel_sessions_lowered %v, GOMAXPROCS %v; want >= 1 and at least %d CPUs + 3 each", a.name, low, procs, runtime.NumCPU())
			case !want && low != 0:
				return fmt.Errorf("%s agent: mtunnel_sessions_lowered %v", a.name, low)
			}
		}
		return nil
	}
	if err := waitFor(30*time.Second, func() error { return lowered(true) }); err != nil {
		tk.abort()
		t.Fatalf("bulk beside a talking quiet stream: %v", err)
	}
	if !lowers[server] { // an observation window: the server must not follow
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			n, err := threadsWithNice(server.cmd.Process.Pid, 7)
			low, _ := scrape(t, admins[server]).value("mtunnel_sessions_lowered")
			if err == nil && (n > 0 || low != 0) {
				err = fmt.Errorf("%d threads at nice 7, mtunnel_sessions_lowered %v", n, low)
			}
			if err != nil {
				tk.abort()
				t.Fatalf("with the server at --busy-rate off: %v", err)
			}
		}
	}
	// A lowered loop restores its thread at its next frame: the keepalive
	// (1 s here) brings one.
	tk.endThenRestored(t, lowered)
}

// TestBulkCopierNiceBinary: a quiet stream that shares its session with a
// bulk stream (opened first, as a database pool's connection is, on a
// client with one session) is helped by lowering the bulk stream's
// copiers, not the session's loops: while both run, both agents have
// threads at --bulk-nice's value and mtunnel_copiers_lowered >= 1, no
// session is lowered, and GOMAXPROCS has a P more than the CPUs. After the
// bulk ends, no thread is low and the metric is 0. Every byte echoes
// intact throughout.
func TestBulkCopierNiceBinary(t *testing.T) {
	if err := lowThreadsSupported(); err != nil {
		skipOrFailExternal(t, "%v", err) // CI runs as root: a skip there is a failure
	}
	client, server, local, admins := startEchoAgents(t, echo, 1, []string{"--bulk-nice", "7", "--keepalive", "1s"}, nil)
	agents := []*childProc{client, server}

	tk := newTalk()
	p, err := net.Dial("tcp", local) // the pool's connection: first
	if err != nil {
		t.Fatal(err)
	}
	tk.run(func(stop <-chan struct{}) error { return pingEcho(p, stop) })
	b, err := net.Dial("tcp", local) // the same session: the client has one
	if err != nil {
		tk.abort()
		t.Fatal(err)
	}
	tk.run(func(stop <-chan struct{}) error { return bulkEcho(b, stop) })

	lowered := func(want bool) error {
		for _, a := range agents {
			n, err := threadsWithNice(a.cmd.Process.Pid, 7)
			if err != nil {
				return err
			}
			m := scrape(t, admins[a])
			copiers, _ := m.value("mtunnel_copiers_lowered")
			sessions, _ := m.value("mtunnel_sessions_lowered")
			procs, _ := m.value("go_sched_gomaxprocs_threads")
			switch {
			case sessions != 0:
				return fmt.Errorf("%s agent: mtunnel_sessions_lowered %v with one session", a.name, sessions)
			case want && (n == 0 || copiers < 1 || int(procs) <= runtime.NumCPU()):
				return fmt.Errorf("%s agent: %d threads at nice 7, mtunnel_copiers_lowered %v, GOMAXPROCS %v (%d CPUs)", a.name, n, copiers, procs, runtime.NumCPU())
			case !want && (n != 0 || copiers != 0):
				return fmt.Errorf("%s agent: %d threads at nice 7, mtunnel_copiers_lowered %v", a.name, n, copiers)
			}
		}
		return nil
	}
	if err := waitFor(30*time.Second, func() error { return lowered(true) }); err != nil {
		tk.abort()
		t.Fatalf("bulk and a talking stream on one session: %v", err)
	}
	tk.endThenRestored(t, lowered)
}

// startEchoAgents starts a server agent in front of an echo backend
// (handle) and a client agent with sessions sessions to it, both with args
// and an admin listener, and waits for the sessions. It returns the
// agents, the client's listening address and each agent's /metrics URL.
func startEchoAgents(t *testing.T, handle func(*net.TCPConn), sessions int, args, serverExtra []string) (client, server *childProc, local string, metrics map[*childProc]string) {
	t.Helper()
	k := newBinPKI(t, t.TempDir())
	target := backend(t, handle)
	args = append(slices.Clip(args), "--admin", "127.0.0.1:0")
	server = startAgent(t, "server", nil, slices.Concat(k.serverArgs("127.0.0.1:0", target), args, serverExtra)...)
	serverAddr := server.listening(t)
	client = startAgent(t, "client", nil, slices.Concat(k.clientArgs(serverAddr), args, []string{"--sessions", strconv.Itoa(sessions)})...)
	local = client.listening(t)
	client.waitLogN(t, sessions, "session established", "server", serverAddr)
	metrics = map[*childProc]string{}
	for _, a := range []*childProc{client, server} {
		metrics[a] = "http://" + a.waitLog(t, "admin listening").attrs["addr"] + "/metrics"
	}
	return client, server, local, metrics
}

// talk runs echo loops (bulkEcho, pingEcho) through the agents until it
// is ended.
type talk struct {
	stop chan struct{}
	wg   sync.WaitGroup
	errs chan error
}

func newTalk() *talk { return &talk{stop: make(chan struct{}), errs: make(chan error, 8)} }

func (k *talk) run(loop func(stop <-chan struct{}) error) {
	k.wg.Go(func() { k.errs <- loop(k.stop) })
}

// abort stops the loops, whatever they report.
func (k *talk) abort() {
	close(k.stop)
	k.wg.Wait()
}

// endThenRestored stops the loops, fails t if one failed (a byte lost or
// changed), and then waits for lowered(false): every thread back.
func (k *talk) endThenRestored(t *testing.T, lowered func(bool) error) {
	t.Helper()
	k.abort()
	close(k.errs)
	for err := range k.errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := waitFor(30*time.Second, func() error { return lowered(false) }); err != nil {
		t.Fatalf("after the bulk ended: %v", err)
	}
}

// bulkEcho writes 32 KiB chunks until stop, reading the echo back beside
// it and checking every byte.
func bulkEcho(c net.Conn, stop <-chan struct{}) error {
	defer c.Close()
	defer drainBy(c, stop)()
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 2<<10)
	var sent int64
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, len(chunk))
		var got int64
		for {
			n, err := io.ReadFull(c, buf[:min(len(buf), len(chunk))])
			for i := range n {
				if buf[i] != chunk[(got+int64(i))%int64(len(chunk))] {
					done <- fmt.Errorf("bulk echo: byte %d differs", got+int64(i))
					return
				}
			}
			got += int64(n)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				done <- fmt.Errorf("bulk echo: stalled after %d bytes back", got)
				return
			}
			if err != nil {
				done <- nil // closed by the writer below
				return
			}
		}
	}()
	for {
		select {
		case <-stop:
			c.(*net.TCPConn).CloseWrite()
			return <-done
		case err := <-done:
			return fmt.Errorf("bulk echo ended early after %d bytes sent: %v", sent, err)
		default:
		}
		n, err := c.Write(chunk)
		sent += int64(n)
		if err != nil {
			return err
		}
	}
}

// pingEcho sends 64-byte messages one at a time until stop, checking each
// echo.
func pingEcho(c net.Conn, stop <-chan struct{}) error {
	defer c.Close()
	defer drainBy(c, stop)()
	msg, got := make([]byte, 64), make([]byte, 64)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		copy(msg, fmt.Sprintf("ping %d", i))
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("ping %d: %w", i, err)
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("ping %d came back as %q", i, got)
		}
	}
}

// drainBy gives c a minute from stop to finish, so that a flow that has
// stalled fails the test instead of hanging it. The returned func ends
// the watch.
func drainBy(c net.Conn, stop <-chan struct{}) func() {
	end := make(chan struct{})
	go func() {
		select {
		case <-stop:
			c.SetDeadline(time.Now().Add(time.Minute))
		case <-end:
		}
	}()
	return func() { close(end) }
}

// threadsWithNice counts pid's threads whose nice value is nice
// (/proc/PID/task/TID/stat, field 19).
func threadsWithNice(pid, nice int) (int, error) {
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(stats) == 0 {
		return 0, fmt.Errorf("threads of %d: %v", pid, err)
	}
	n := 0
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) > 16 {
			if v, _ := strconv.Atoi(fields[16]); v == nice {
				n++
			}
		}
	}
	return n, nil
}

// waitFor polls cond until it returns nil or limit passes.
func waitFor(limit time.Duration, cond func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // a polling interval
	}
}

// lowThreadsSupported tells whether this process (and so the agents it
// starts, as the same user) may lower a thread's priority and restore it,
// which --bulk-nice needs.
func lowThreadsSupported() error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends with the goroutine
		tid := unix.Gettid()
		if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 1); err != nil {
			errc <- err
			return
		}
		errc <- unix.Setpriority(unix.PRIO_PROCESS, tid, 0)
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("--bulk-nice needs root or CAP_SYS_NICE to restore thread priorities: %v", err)
	}
	return nil
}
