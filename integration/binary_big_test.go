package integration

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"net"
	"testing"
	"time"
)

// gibibyte is the size of each direction of TestGiBUpThenDownBinary.
const gibibyte = 1 << 30

// keystream is a fast reproducible byte source (AES-CTR over zeros) that
// hashes what it produces: random enough that no layer can compress it,
// cheap enough to make gigabytes in a test.
type keystream struct {
	ctr  cipher.Stream
	left int64
	sum  hash.Hash
}

func newKeystream(seed byte, n int64) *keystream {
	block, _ := aes.NewCipher(bytes.Repeat([]byte{seed}, 16))
	return &keystream{ctr: cipher.NewCTR(block, make([]byte, aes.BlockSize)), left: n, sum: sha256.New()}
}

func (k *keystream) Read(p []byte) (int, error) {
	if k.left == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), k.left)]
	clear(p)
	k.ctr.XORKeyStream(p, p)
	k.sum.Write(p)
	k.left -= int64(len(p))
	return len(p), nil
}

// upThenDown is a backend that reads the whole upload, hashing it, and
// after the app's half-close sends a gibibyte of its own.
func upThenDown(results chan<- [2][]byte) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(5 * time.Minute))
		up := sha256.New()
		if _, err := io.Copy(up, c); err != nil {
			return
		}
		down := newKeystream(2, gibibyte)
		if _, err := io.Copy(c, down); err != nil {
			return
		}
		c.CloseWrite()
		results <- [2][]byte{up.Sum(nil), down.sum.Sum(nil)}
	}
}

// TestGiBUpThenDownBinary sends 1 GiB through one stream of the built
// agents, half-closes, and receives 1 GiB back on the same stream: both
// directions arrive whole (SHA-256), the half-close holds for as long as
// that takes, and the connection then ends cleanly.
func TestGiBUpThenDownBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 2 GiB; skipped with -short")
	}
	results := make(chan [2][]byte, 1)
	k := newBinPKI(t, t.TempDir())
	target := backend(t, upThenDown(results))
	server := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", target)...)
	client := startAgent(t, "client", nil, k.clientArgs(server.listening(t))...)
	c, err := net.Dial("tcp", client.listening(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	start := time.Now()
	up := newKeystream(1, gibibyte)
	if _, err := io.Copy(c, struct{ io.Reader }{up}); err != nil {
		t.Fatalf("upload: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	mid := time.Now()
	down := sha256.New()
	n, err := io.Copy(down, c)
	if err != nil || n != gibibyte {
		t.Fatalf("download after the half-close: %d bytes, err %v", n, err)
	}
	got := <-results
	if !bytes.Equal(got[0], up.sum.Sum(nil)) {
		t.Error("the backend received a different upload (SHA-256)")
	}
	if !bytes.Equal(down.Sum(nil), got[1]) {
		t.Error("the app received a different download (SHA-256)")
	}
	rate := func(d time.Duration) string { return fmt.Sprintf("%.0f MB/s", gibibyte/d.Seconds()/1e6) }
	t.Logf("1 GiB up in %v (%s), 1 GiB down in %v (%s)", mid.Sub(start).Round(time.Millisecond), rate(mid.Sub(start)),
		time.Since(mid).Round(time.Millisecond), rate(time.Since(mid)))
}
