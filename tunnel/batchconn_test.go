package tunnel

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// TestBatchConn: before enable, writes pass straight through (a handshake
// must never wait); after it, writes wait for Flush (or a full buffer, or
// frameDone), and Close flushes what is left.
func TestBatchConn(t *testing.T) {
	a, b := tcpPair(t)
	bc := newBatchConn(a)
	bc.Write([]byte("hs"))
	if got := readN(t, b, 2); got != "hs" {
		t.Fatalf("before enable: %q", got)
	}
	bc.enable()
	bc.Write([]byte("rec1"))
	bc.Write([]byte("rec2"))
	if err := bc.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, b, 8); got != "rec1rec2" {
		t.Fatalf("after flush: %q", got)
	}
	bc.Write([]byte("bye"))
	bc.Close()
	rest, err := io.ReadAll(b)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("close lost buffered bytes: %q, %v", rest, err)
	}
}

// TestBatchConnCoalesces: frames that become ready while a socket write is
// in flight go out together in the next write, and a lone frame is written
// without any further prompting.
func TestBatchConnCoalesces(t *testing.T) {
	a, b := tcpPair(t)
	gc := &gatedConn{Conn: a, started: make(chan struct{}, 8), release: make(chan struct{})}
	bc := newBatchConn(gc)
	bc.enable()
	defer bc.Close()
	bc.Write([]byte("f1"))
	bc.frameDone()
	<-gc.started // the flusher is writing f1 and waits for release
	for _, f := range []string{"f2", "f3", "f4"} {
		bc.Write([]byte(f))
		if err := bc.frameDone(); err != nil {
			t.Fatal(err)
		}
	}
	close(gc.release)
	if got := readN(t, b, 8); got != "f1f2f3f4" {
		t.Fatalf("read %q", got)
	}
	if n := gc.writes.Load(); n != 2 {
		t.Fatalf("%d socket writes for 4 frames, 3 of them ready together; want 2", n)
	}
	bc.Write([]byte("f5"))
	bc.frameDone()
	if got := readN(t, b, 2); got != "f5" {
		t.Fatalf("lone frame: read %q", got)
	}
}

// TestBatchConnFlushError: once a flush fails, the next write and the next
// frame say so, so yamux's send loop ends the session.
func TestBatchConnFlushError(t *testing.T) {
	bc, _ := enabledBatch(t)
	bc.Conn.Close()
	bc.Write([]byte("lost"))
	if err := bc.Flush(); err == nil {
		t.Fatal("flush to a closed socket succeeded")
	}
	if _, err := bc.Write([]byte("more")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after a failed flush: %v", err)
	}
	if err := bc.frameDone(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("frameDone after a failed flush: %v", err)
	}
}

// TestBatchConnPastDeadlineFlushes: tls.Conn.Close buffers close_notify
// and then sets a write deadline of now; what was buffered goes out first.
func TestBatchConnPastDeadlineFlushes(t *testing.T) {
	bc, b := enabledBatch(t)
	bc.Write([]byte("alert"))
	bc.SetWriteDeadline(time.Now())
	if got := readN(t, b, 5); got != "alert" {
		t.Fatalf("read %q", got)
	}
}

// enabledBatch returns an enabled batchConn on one end of a TCP pair, closed
// when the test ends, and the other end.
func enabledBatch(t *testing.T) (*batchConn, net.Conn) {
	a, b := tcpPair(t)
	bc := newBatchConn(a)
	bc.enable()
	t.Cleanup(func() { bc.Close() })
	return bc, b
}

// gatedConn counts writes; each waits for release after saying it started.
type gatedConn struct {
	net.Conn
	writes  atomic.Int32
	started chan struct{}
	release chan struct{}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.writes.Add(1)
	g.started <- struct{}{}
	<-g.release
	return g.Conn.Write(p)
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf)
}
