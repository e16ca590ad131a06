package integration

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickstartBinary is the README's worked example with the built
// binary, on one machine: make a CA and two certificates, run a server
// agent in front of a backend and a client agent in front of the app, and
// push data through. Ports are 127.0.0.1:0, read back from the logs.
func TestQuickstartBinary(t *testing.T) {
	start := time.Now()
	dir := filepath.Join(t.TempDir(), "pki") // certs init creates it
	k := newBinPKI(t, dir)
	for _, want := range []string{"ca.crt", "ca.key", "names clients may dial: db.example.com, localhost, 127.0.0.1",
		"db.example.com.key", "app.crt", "app.key"} {
		if !strings.Contains(k.out, want) {
			t.Errorf("certs output does not mention %q:\n%s", want, k.out)
		}
	}
	checkFileMode(t, dir, fs.ModeDir|0o700)
	for _, f := range []string{k.ca, k.serverCert, k.appCert} {
		checkFileMode(t, f, 0o644)
	}
	for _, f := range []string{filepath.Join(dir, "ca.key"), k.serverKey, k.appKey} {
		checkFileMode(t, f, 0o600)
	}

	// The backend echoes and reports the digest of what reached it.
	upstream := make(chan [32]byte, 1)
	echoAddr := backend(t, func(c *net.TCPConn) {
		h := sha256.New()
		io.Copy(c, io.TeeReader(c, h))
		c.CloseWrite()
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		select {
		case upstream <- sum:
		default: // only the first connection is checked
		}
	})

	server := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", echoAddr)...)
	serverAddr := server.listening(t)
	client := startAgent(t, "client", nil, k.clientArgs(serverAddr)...)
	local := client.listening(t, "route", "default", "servers", serverAddr)

	const size = 4 << 20
	payload := random(t, size)
	want := sha256.Sum256(payload)
	back, n, err := transferSum(local, payload)
	if err != nil {
		t.Fatalf("transfer through the tunnel: %v", err)
	}
	if n != size || back != want {
		t.Fatalf("came back: %d bytes, SHA-256 equal %v; want %d bytes, equal", n, back == want, size)
	}
	select {
	case got := <-upstream:
		if got != want {
			t.Fatal("the backend received different bytes than the app sent")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("backend never finished the connection")
	}

	server.waitLog(t, "session established", "peer", "CN=app")
	client.waitLog(t, "session established", "peer", "CN="+readmeServerName, "server", serverAddr)
	sz := fmt.Sprint(size)
	server.waitLog(t, "stream ended", "route", "default", "peer", "CN=app", "result", "ok", "sent", sz, "received", sz)
	client.waitLog(t, "stream ended", "route", "default", "result", "ok", "sent", sz, "received", sz)
	for _, p := range []*childProc{server, client} {
		if strings.Contains(p.out.dump(), "PRIVATE KEY") {
			t.Errorf("%s logged key material", p.name)
		}
	}
	t.Logf("quickstart: %d MiB each way in %v (including certs and start-up)", size>>20, time.Since(start).Round(time.Millisecond))
}

func checkFileMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode() & (fs.ModeType | fs.ModePerm); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}
