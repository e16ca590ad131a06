package tunnel

import (
	"io"
	"testing"
)

// TestBatchConn: before enable, writes pass straight through (a handshake
// must never wait); after it, writes wait for Flush (or a full buffer), and
// Close flushes what is left.
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

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf)
}
