package integration

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestServerDrainBinary stops the server agent with SIGTERM while two app
// connections are open: one that finishes its transfer after the signal,
// within --drain-timeout, must end cleanly with every byte intact; one
// that stays open past the deadline is reset then, not before; and the
// agent exits 0.
func TestServerDrainBinary(t *testing.T) {
	const drainTimeout = 2 * time.Second
	k := newBinPKI(t, t.TempDir())
	target := backend(t, streamOrEcho)
	server := startAgent(t, "server", nil, append(k.serverArgs("127.0.0.1:0", target), "--drain-timeout", drainTimeout.String())...)
	serverAddr := server.listening(t)
	client := startAgent(t, "client", nil, k.clientArgs(serverAddr)...)
	local := client.listening(t)

	// finishes: an echo whose second half is sent after SIGTERM.
	payload := append([]byte{'E'}, random(t, 2<<20)...)
	half := len(payload) / 2
	finishes, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer finishes.Close()
	finishes.SetDeadline(time.Now().Add(30 * time.Second))
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(finishes)
		got <- b
	}()
	if _, err := finishes.Write(payload[:half]); err != nil {
		t.Fatal(err)
	}
	// lingers: an idle echo connection, proven open end to end.
	lingers, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer lingers.Close()
	lingers.SetDeadline(time.Now().Add(30 * time.Second))
	lingers.Write([]byte("Eping"))
	if _, err := io.ReadFull(lingers, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}

	sigterm := time.Now()
	server.handled = true
	if err := server.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	server.waitLog(t, "draining", "streams", "2")
	if _, err := finishes.Write(payload[half:]); err != nil {
		t.Fatalf("write after SIGTERM: %v", err)
	}
	finishes.(*net.TCPConn).CloseWrite()
	if b := <-got; !bytes.Equal(b, payload[1:]) {
		t.Fatalf("the stream that finished during the drain got %d of %d bytes back (or other bytes)", len(b), len(payload)-1)
	}

	_, err = io.Copy(io.Discard, lingers)
	reset := time.Since(sigterm)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the stream still open at the drain deadline ended with %v, want a reset", err)
	}
	if reset < drainTimeout*3/4 {
		t.Errorf("reset %v after SIGTERM, before the %v drain timeout", reset, drainTimeout)
	}
	<-server.done
	if server.err != nil {
		t.Fatalf("server exit after SIGTERM: %v\n%s", server.err, server.out.dump())
	}
	server.waitLog(t, "drain timeout: closing sessions with open streams", "streams", "1")
	client.waitLog(t, "stream ended", "result", "reset")
	t.Logf("lingering stream reset %v after SIGTERM (drain timeout %v)", reset.Round(time.Millisecond), drainTimeout)
}

// TestClientDrainBinary stops the client agent with SIGTERM during a
// transfer: it stops listening at once (a new connection is refused), the
// transfer completes intact, and the agent exits 0 without waiting for its
// drain timeout.
func TestClientDrainBinary(t *testing.T) {
	k := newBinPKI(t, t.TempDir())
	target := backend(t, streamOrEcho)
	server := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", target)...)
	client := startAgent(t, "client", nil, k.clientArgs(server.listening(t))...)
	local := client.listening(t)

	payload := append([]byte{'E'}, random(t, 2<<20)...)
	half := len(payload) / 2
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	done := make(chan error, 1)
	echoed := make(chan struct{}) // the first byte came back
	go func() {
		_, err := io.Copy(h, &firstRead{r: c, seen: echoed})
		done <- err
	}()
	c.Write(payload[:half])
	// A connect returns once the kernel has it; the agent may not have
	// accepted it yet, and a SIGTERM then would find no connection to
	// drain. An echoed byte proves the stream is up.
	select {
	case <-echoed:
	case <-done:
		t.Fatal("the connection ended before the echo came back")
	}

	client.handled = true
	if err := client.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	client.waitLog(t, "draining", "connections", "1")
	if nc, err := net.Dial("tcp", local); err == nil {
		nc.Close()
		t.Errorf("the draining client agent still accepts connections on %s", local)
	}
	c.Write(payload[half:])
	c.(*net.TCPConn).CloseWrite()
	if err := <-done; err != nil {
		t.Fatalf("transfer during the client's drain: %v", err)
	}
	if want := sha256.Sum256(payload[1:]); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("transfer during the client's drain came back different")
	}
	<-client.done
	if client.err != nil {
		t.Fatalf("client exit after SIGTERM: %v\n%s", client.err, client.out.dump())
	}
	client.waitLog(t, "drained")
	if n := client.count("drain timeout: resetting open connections"); n != 0 {
		t.Error("the client waited for its drain timeout although its only connection had ended")
	}
}

// firstRead is a reader that closes seen after its first read that
// brought data.
type firstRead struct {
	r    io.Reader
	seen chan struct{}
	once sync.Once
}

func (f *firstRead) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 {
		f.once.Do(func() { close(f.seen) })
	}
	return n, err
}
