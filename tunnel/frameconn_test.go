package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// TestGoAwaySeenAndStreamsKept: the server's GoAway reaches the client's
// RemoteGoAway at once; the client then opens no stream, a stream opened
// before keeps working both ways, and the server still accepts a stream
// whose SYN arrives after its GoAway (one that crossed it on the wire),
// where yamux's own GoAway would reset it.
func TestGoAwaySeenAndStreamsKept(t *testing.T) {
	client, server := yamuxPair(t)
	cs, ss := streamPair(t, client, server)
	if err := server.GoAway(); err != nil {
		t.Fatal(err)
	}
	<-client.RemoteGoAway()
	select {
	case <-server.RemoteGoAway():
		t.Fatal("the server took its own GoAway for the peer's")
	default:
	}
	// yamux records the GoAway right after our reader saw it.
	for {
		_, err := client.OpenStream()
		if errors.Is(err, yamux.ErrRemoteGoAway) {
			break
		}
		if err != nil {
			t.Fatalf("open after GoAway: %v, want ErrRemoteGoAway", err)
		}
	}
	// A SYN that crossed the GoAway: written below yamux, which would no
	// longer send one.
	const crossing = 1001 // odd: a client's stream ID
	var syn [yamuxHeaderSize]byte
	syn[1] = yamuxTypeWindowUpdate
	binary.BigEndian.PutUint16(syn[2:4], 0x1) // SYN
	binary.BigEndian.PutUint32(syn[4:8], crossing)
	if err := client.conn.sendControl(syn); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Streams the loop above opened before yamux had recorded the GoAway
	// crossed it too and come first; all are accepted.
	for {
		accepted, err := server.AcceptStreamWithContext(ctx)
		if err != nil {
			t.Fatalf("the stream that crossed the GoAway was not accepted: %v", err)
		}
		if accepted.StreamID() == crossing {
			break
		}
	}
	for _, pair := range [][2]*Stream{{cs, ss}, {ss, cs}} {
		if _, err := pair[0].Write([]byte("after")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(pair[1], buf); err != nil || string(buf) != "after" {
			t.Fatalf("an open stream broke after GoAway: %q, %v", buf, err)
		}
	}
}

// TestScanFollowsFrames: the reader finds a GoAway only at a frame
// boundary, not inside a data frame's body that happens to hold the same
// bytes, however the bytes are split into reads.
func TestScanFollowsFrames(t *testing.T) {
	header := func(typ byte, id, length uint32) []byte {
		h := make([]byte, yamuxHeaderSize)
		h[1] = typ
		binary.BigEndian.PutUint32(h[4:8], id)
		binary.BigEndian.PutUint32(h[8:12], length)
		return h
	}
	goAway := header(yamuxTypeGoAway, 0, yamuxGoAwayNormal)
	body := bytes.Repeat(goAway, 3)
	fake := append(header(yamuxTypeData, 1, uint32(len(body))), body...)
	ping := header(2, 0, 7) // a ping's length is its opaque value: no body
	for _, tt := range []struct {
		name   string
		stream []byte
		want   bool
	}{
		{"data holding GoAway bytes", slices.Concat(fake, ping), false},
		{"then a real GoAway", slices.Concat(fake, ping, goAway), true},
		{"GoAway with an error code", header(yamuxTypeGoAway, 0, 1), false},
	} {
		for _, chunk := range []int{1, 5, 12, 13, 1000} {
			c := newFrameConn(nil)
			for b := tt.stream; len(b) > 0; {
				n := min(chunk, len(b))
				c.scan(b[:n])
				b = b[n:]
			}
			got := false
			select {
			case <-c.goAway:
				got = true
			default:
			}
			if got != tt.want {
				t.Errorf("%s, read %d bytes at a time: GoAway seen = %v, want %v", tt.name, chunk, got, tt.want)
			}
		}
	}
}

// TestReadYields: the receive loop's reads yield the processor once per
// readYield bytes, however the bytes are split into reads.
func TestReadYields(t *testing.T) {
	a, b := tcpPair(t)
	c := newFrameConn(b)
	yields := 0
	c.yield = func() { yields++ }
	const total = 10*readYield + 100
	go func() {
		a.Write(make([]byte, total)) // zeros: data frame headers of length 0
		a.Close()
	}()
	buf := make([]byte, 7000) // reads of odd sizes
	read := 0
	for {
		n, err := c.Read(buf)
		read += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if read != total || yields != total/readYield {
		t.Errorf("read %d bytes with %d yields, want %d and %d", read, yields, total, total/readYield)
	}
}

// TestResetDropsStreamLocally: a peer that never answers our reset (stock
// yamux) no longer leaves the stream, and what it buffered, in our yamux
// session until the session ends; data it sends afterwards is discarded.
func TestResetDropsStreamLocally(t *testing.T) {
	a, b := tcpPair(t)
	cfg := SessionConfig{}.yamux()
	peer, err := yamux.Client(a, cfg) // stock: answers no reset
	if err != nil {
		t.Fatal(err)
	}
	fb := newFrameConn(b)
	ys, err := yamux.Server(fb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close(); ys.Close() })
	server := &Session{Session: ys, conn: fb}
	ps, err := peer.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Write(make([]byte, 100<<10)); err != nil {
		t.Fatal(err)
	}
	st, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, make([]byte, 10)); err != nil { // the rest stays buffered
		t.Fatal(err)
	}
	st.Reset()
	// The drop reaches yamux with the next frames it reads: after two
	// round trips the first ping's answer has been read, then the drop.
	for range 2 {
		if _, err := peer.Ping(); err != nil {
			t.Fatal(err)
		}
	}
	if n := server.NumStreams(); n != 0 {
		t.Fatalf("%d streams in the server's session after it reset the only one; want it dropped", n)
	}
	// The peer's stream was reset by our RST; a new stream still works.
	ps2, err := peer.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps2.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	st2, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(st2, got); err != nil || string(got) != "again" {
		t.Fatalf("a new stream after the drop read %q, %v", got, err)
	}
}
