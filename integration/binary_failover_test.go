package integration

// Faults with the built binary: a server agent killed with SIGKILL during
// transfers, one of two servers killed, and a rolling restart (SIGTERM)
// of two servers under load.

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// killedApp is one app of TestServerKilledDuringTransfersBinary: it sends
// the first part of payload and reads its echo, reports on ready, waits
// for killed, then sends the rest, half-closes and reads to the end. It
// returns nil only for a complete, intact echo; otherwise the error the
// app saw, or errTruncated for a clean end of incomplete data, the one
// outcome that must never happen.
func killedApp(local string, payload []byte, first int, ready chan<- error, killed <-chan struct{}) error {
	c, err := net.Dial("tcp", local)
	if err != nil {
		ready <- err
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	got := make([]byte, first)
	_, err = c.Write(payload[:first])
	if err == nil {
		_, err = io.ReadFull(c, got)
	}
	if err == nil && !bytes.Equal(got, payload[:first]) {
		err = errors.New("echo of the first part differs")
	}
	ready <- err
	if err != nil {
		return err
	}
	<-killed
	h := sha256.New()
	h.Write(got)
	// One call after another: a concurrent write could take the socket's
	// one report of the reset and leave the read a plain EOF.
	_, werr := c.Write(payload[first:])
	if werr == nil {
		werr = c.(*net.TCPConn).CloseWrite()
	}
	n, rerr := io.Copy(h, c)
	switch {
	case werr != nil:
		return werr
	case rerr != nil:
		return rerr
	case int(n)+first == len(payload) && bytes.Equal(h.Sum(nil), sha256Sum(payload)):
		return nil
	}
	return fmt.Errorf("%w: %d of %d bytes", errTruncated, int(n)+first, len(payload))
}

var errTruncated = errors.New("clean end of truncated data")

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestServerKilledDuringTransfersBinary: the server agent is killed with
// SIGKILL while 50 apps are in the middle of transfers: every app sees a
// reset or an error, never a clean end of truncated data (checked by
// length and SHA-256). The client's backoff then grows; when the server is
// restarted, a new connection works within 2 s, although the next redial
// the backoff had planned was further away than that.
func TestServerKilledDuringTransfersBinary(t *testing.T) {
	k := newBinPKI(t, t.TempDir())
	target := backend(t, echo)
	server := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", target)...)
	serverAddr := server.listening(t)
	client := startAgent(t, "client", nil, append(k.clientArgs(serverAddr), "--sessions", "2", "--log-level", "debug")...)
	local := client.listening(t)
	client.waitLogN(t, 2, "session established", "server", serverAddr)

	const apps, first, size = 50, 64 << 10, 1 << 20
	ready := make(chan error, apps)
	results := make(chan error, apps)
	killed := make(chan struct{})
	defer func() {
		select {
		case <-killed:
		default:
			close(killed) // on a failure before the kill: let the apps end
		}
	}()
	for range apps {
		payload := random(t, size)
		go func() { results <- killedApp(local, payload, first, ready, killed) }()
	}
	for range apps {
		if err := <-ready; err != nil {
			t.Fatalf("transfer before the kill: %v", err)
		}
	}
	server.kill(t)
	close(killed)
	resets := 0
	for range apps {
		err := <-results
		switch {
		case err == nil:
			t.Error("an app completed its transfer through a server that was killed before the echo")
		case errors.Is(err, errTruncated):
			t.Errorf("an app saw %v", err)
		case errors.Is(err, syscall.ECONNRESET):
			resets++
		default:
			t.Logf("an app saw %v", err)
		}
	}
	t.Logf("%d of %d apps saw a reset, the rest another error", resets, apps)
	for n := range 2 {
		client.waitLogN(t, n+1, "session ended", "server", serverAddr)
	}

	// Wait until the backoff has planned a redial at least 3 s away.
	const far = 3 * time.Second
	rec, err := client.awaitWithin(60*time.Second, 1, func(r record) bool {
		ns, err := strconv.ParseInt(r.attrs["retry_in"], 10, 64)
		return r.msg == "session dial failed" && err == nil && time.Duration(ns) >= far
	})
	if err != nil {
		// The client's goroutines go with the failure: SIGQUIT makes Go
		// print them. (That is how the lost wake-up fixed in lostLocked
		// was found.)
		client.cmd.Process.Signal(syscall.SIGQUIT)
		<-client.done
		client.handled = true
		t.Fatalf("the backoff never planned a redial %v away: %v\n%s", far, err, client.out.dump())
	}
	logged := time.Now()
	retryIn, _ := strconv.ParseInt(rec.attrs["retry_in"], 10, 64)
	established := client.count("session established", "server", serverAddr)
	restartServer(t, k.serverArgs(serverAddr, target))
	up := time.Now()
	payload := random(t, 256<<10)
	sum, got, err := transferSum(local, payload)
	took := time.Since(up)
	if err != nil || got != int64(len(payload)) || sum != sha256.Sum256(payload) {
		t.Fatalf("new connection after the restart: %d bytes, %v\n%s", got, err, client.out.dump())
	}
	planned := logged.Add(time.Duration(retryIn)).Sub(up)
	t.Logf("new connection worked %v after the restart; the backoff's next redial was %v away", took.Round(time.Millisecond), planned.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("new connection took %v after the restart, want within 2s", took)
	}
	client.waitLogN(t, established+1, "session established", "server", serverAddr)
}

// twoServers starts two server agents for target and a client agent for
// both with two sessions each, and waits for the sessions.
func twoServers(t *testing.T, k binPKI, target string) (servers []*childProc, addrs []string, client *childProc, local string) {
	t.Helper()
	for _, name := range []string{"server-a", "server-b"} {
		p := startAgent(t, name, nil, k.serverArgs("127.0.0.1:0", target)...)
		servers = append(servers, p)
		addrs = append(addrs, p.listening(t))
	}
	args := slices.Concat(k.clientArgs(addrs[0]), []string{"--server", addrs[1], "--sessions", "2"})
	client = startAgent(t, "client", nil, args...)
	local = client.listening(t, "servers", addrs[0]+","+addrs[1])
	for _, addr := range addrs {
		client.waitLogN(t, 2, "session established", "server", addr)
	}
	return servers, addrs, client, local
}

// TestOneOfTwoServersKilledBinary: with two servers, one is killed with
// SIGKILL; once the client has seen its sessions end, every new connection
// works through the other.
func TestOneOfTwoServersKilledBinary(t *testing.T) {
	k := newBinPKI(t, t.TempDir())
	servers, addrs, client, local := twoServers(t, k, backend(t, echo))
	if err := echoCheck(t, local, 64<<10); err != nil {
		t.Fatal(err)
	}
	servers[0].kill(t)
	for n := range 2 {
		client.waitLogN(t, n+1, "session ended", "server", addrs[0])
	}
	before := servers[1].count("stream ended", "result", "ok")
	l := startLoad(t, 8, echoLoad(t, local))
	l.waitOK(t, 100)
	ok, fails := l.finish()
	for _, err := range fails {
		t.Error(err)
	}
	servers[1].waitLogN(t, before+ok, "stream ended", "result", "ok")
	t.Logf("%d new connections after the kill, %d failed", ok, len(fails))
}

// TestRollingRestartBinary: under continuous load (8 workers, random
// payloads, SHA-256 checked), server a is stopped with SIGTERM (it drains),
// restarted on its address, then server b likewise: no transfer fails.
func TestRollingRestartBinary(t *testing.T) {
	k := newBinPKI(t, t.TempDir())
	target := backend(t, echo)
	servers, addrs, client, local := twoServers(t, k, target)
	l := startLoad(t, 8, echoLoad(t, local))
	l.waitOK(t, 50)
	for i, addr := range addrs {
		n := client.count("session established", "server", addr)
		start := time.Now()
		servers[i].stop(t)
		drained := time.Since(start)
		t.Logf("%s drained and exited in %v", addr, drained.Round(time.Millisecond))
		if drained > 10*time.Second { // --drain-timeout is 30 s
			t.Errorf("%s waited %v to drain: the client did not answer its GoAway when its streams ended", addr, drained)
		}
		l.waitOK(t, 50) // all through the other server
		restartServer(t, k.serverArgs(addr, target))
		client.waitLogN(t, n+2, "session established", "server", addr)
		l.waitOK(t, 50)
	}
	ok, fails := l.finish()
	for _, err := range fails {
		t.Error(err)
	}
	t.Logf("%d transfers, %d failed", ok, len(fails))
	if len(fails) > 0 {
		t.Logf("client output:\n%s", client.out.dump())
	}
}
