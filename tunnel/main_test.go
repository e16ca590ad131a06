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

// yamuxPair returns a client and a server session over loopback TCP,
// tuned as the agents tune them.
func yamuxPair(t testing.TB) (client, server *yamux.Session) {
	t.Helper()
	a, b := tcpPair(t)
	cfg := SessionConfig{}.yamux()
	client, err := yamux.Client(newFrameConn(a), cfg)
	if err != nil {
		t.Fatal(err)
	}
	server, err = yamux.Server(newFrameConn(b), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// streamPair opens a stream on client and accepts it on server.
func streamPair(t testing.TB, client, server *yamux.Session) (c, s *yamux.Stream) {
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
