package tunnel

import (
	"net"
	"testing"

	"github.com/hashicorp/yamux"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns both ends of a real loopback TCP connection: half-close
// needs CloseWrite, which net.Pipe does not have.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		done <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// yamuxPair returns a client and a server session over loopback TCP (no
// TLS), tuned and framed as the agents' sessions are.
func yamuxPair(t testing.TB) (client, server *Session) {
	t.Helper()
	a, b := tcpPair(t)
	cfg := SessionConfig{}.yamux()
	ca, cb := newFrameConn(a), newFrameConn(b)
	yc, err := yamux.Client(ca, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ys, err := yamux.Server(cb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { yc.Close(); ys.Close() })
	return &Session{Session: yc, conn: ca}, &Session{Session: ys, conn: cb}
}

// streamPair opens a stream on client and accepts it on server.
func streamPair(t testing.TB, client, server *Session) (c, s *Stream) {
	t.Helper()
	c, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// The SYN only goes out with the first frame; a one-byte write opens it.
	if _, err := c.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	s, err = server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return c, s
}
