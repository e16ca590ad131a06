package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/tunnel"
)

// maxLeg bounds the random payload of one direction of a checked transfer.
const maxLeg = 64 << 10

// duplexDigest is a backend that checks each direction on its own: it
// sends a random payload (8-byte length, the bytes, their SHA-256) while it
// reads the app's upload, then the SHA-256 and length of what it read.
func duplexDigest(c *net.TCPConn) {
	c.SetDeadline(time.Now().Add(60 * time.Second)) // a bound, should the tunnel never end it
	down := make([]byte, mrand.IntN(maxLeg))
	rand.Read(down)
	wrote := make(chan error, 1)
	go func() {
		sum := sha256.Sum256(down)
		msg := binary.BigEndian.AppendUint64(nil, uint64(len(down)))
		msg = append(append(msg, down...), sum[:]...)
		_, err := c.Write(msg)
		wrote <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if werr := <-wrote; err != nil || werr != nil {
		return // the app sees a broken connection, not a digest
	}
	c.Write(binary.BigEndian.AppendUint64(h.Sum(nil), uint64(n)))
	c.CloseWrite()
}

// checkedTransfer uploads a random payload through local while it reads
// duplexDigest's answer, and checks both directions by length and SHA-256.
// If hold is set, it is called once the backend's first bytes have arrived
// (the stream is open end to end) and the upload waits for it to return.
func checkedTransfer(local string, hold func()) error {
	c, err := net.Dial("tcp", local)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	var hdr [8]byte
	if hold != nil {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return fmt.Errorf("read the download's length: %w", err)
		}
		hold()
	}
	up := make([]byte, mrand.IntN(maxLeg))
	rand.Read(up)
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(up)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		wrote <- err
	}()
	err = readDigested(c, hdr[:], hold == nil, up)
	if werr := <-wrote; err == nil && werr != nil {
		err = fmt.Errorf("upload: %w", werr)
	}
	return err
}

// readDigested reads and checks duplexDigest's answer to up; hdr holds its
// length prefix unless readHdr.
func readDigested(c net.Conn, hdr []byte, readHdr bool, up []byte) error {
	if readHdr {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return fmt.Errorf("read the download's length: %w", err)
		}
	}
	n := binary.BigEndian.Uint64(hdr)
	if n >= maxLeg {
		return fmt.Errorf("download length %d is corrupt", n)
	}
	h := sha256.New()
	if _, err := io.CopyN(h, c, int64(n)); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	var tail [32 + 32 + 8]byte
	if _, err := io.ReadFull(c, tail[:]); err != nil {
		return fmt.Errorf("read the digests: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), tail[:32]) {
		return errors.New("download corrupted: SHA-256 differs")
	}
	upSum := sha256.Sum256(up)
	if !bytes.Equal(upSum[:], tail[32:64]) || binary.BigEndian.Uint64(tail[64:]) != uint64(len(up)) {
		return fmt.Errorf("upload corrupted: the backend read %d bytes with another SHA-256 (sent %d)", binary.BigEndian.Uint64(tail[64:]), len(up))
	}
	if extra, err := io.Copy(io.Discard, c); err != nil || extra != 0 {
		return fmt.Errorf("after the answer: %d more bytes, %v", extra, err)
	}
	return nil
}

// burst holds n checked transfers open at once, each proven open end to
// end, then lets them finish. With --max-streams 1 on the client each needs
// a session of its own, so a burst larger than the sessions the client
// has ever had makes it dial a new one.
func burst(t *testing.T, l *load, local string, n int) {
	t.Helper()
	ready, release := make(chan struct{}, n), make(chan struct{})
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- checkedTransfer(local, func() {
				ready <- struct{}{}
				<-release
			})
		}()
	}
	for range n {
		select {
		case <-ready:
		case err := <-errs:
			close(release)
			t.Fatalf("burst transfer failed before all were open: %v", err)
		}
	}
	close(release)
	for range n {
		err := <-errs
		l.record(err)
	}
}

// agentFiles is an agent's certificate, key and CA bundle in a folder of
// its own, where the test rotates them the ways operators and tools do.
type agentFiles struct{ cert, key, ca string }

func newAgentFiles(t *testing.T, name, cert, key, ca string) agentFiles {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	f := agentFiles{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")}
	writeInPlace(t, f.cert, readFile(t, cert))
	writeInPlace(t, f.key, readFile(t, key))
	writeInPlace(t, f.ca, readFile(t, ca))
	return f
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// writeInPlace truncates name and writes data into it.
func writeInPlace(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// renameInto writes data to a new file next to name and renames it over
// name.
func renameInto(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp := name + ".new"
	writeInPlace(t, tmp, data)
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// issued is a certificate made by `mtunnel certs issue`: its files and
// serial.
type issued struct {
	cert, key, serial string
}

func issue(t *testing.T, dir, name string, args ...string) issued {
	t.Helper()
	mustRunBinary(t, append([]string{"certs", "issue", "--dir", dir, "--name", name}, args...)...)
	i := issued{cert: filepath.Join(dir, name+".crt"), key: filepath.Join(dir, name+".key")}
	chain, err := certs.ParseCertificatesPEM(readFile(t, i.cert))
	if err != nil {
		t.Fatal(err)
	}
	i.serial = certs.SerialString(chain[0].SerialNumber)
	return i
}

// serverSerial dials the server agent with crypto/tls alone (its own
// chain and name checks, against roots) and returns the serial of the
// certificate the server presents to a new handshake. It closes the
// session as a client should: close_notify, then read to the end.
func serverSerial(t *testing.T, addr string, client tls.Certificate, roots *x509.CertPool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{
		Certificates: []tls.Certificate{client},
		RootCAs:      roots,
		ServerName:   readmeServerName,
		NextProtos:   []string{tunnel.ALPN},
		MinVersion:   tls.VersionTLS13,
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS dial of the server agent: %v", err)
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	serial := certs.SerialString(tc.ConnectionState().PeerCertificates[0].SerialNumber)
	tc.SetDeadline(time.Now().Add(20 * time.Second))
	tc.CloseWrite()
	if _, err := io.Copy(io.Discard, tc); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the server agent kept the probe's session open after close_notify")
	}
	return serial
}

// poolOf reads PEM CA files into a pool.
func poolOf(t *testing.T, files ...string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range files {
		if !pool.AppendCertsFromPEM(readFile(t, f)) {
			t.Fatalf("no certificate in %s", f)
		}
	}
	return pool
}

// countLog counts p's log lines that match.
func countLog(p *childProc, match func(record) bool) int {
	p.out.mu.Lock()
	defer p.out.mu.Unlock()
	n := 0
	for _, r := range p.out.lines {
		if match(r) {
			n++
		}
	}
	return n
}

// Reload log lines (cli_reload.go).
const (
	logReloaded = "certificates reloaded"
	logRefused  = "certificate reload refused; keeping the current certificates"
	logMismatch = "certificate and key do not match (yet); keeping the current certificates until both are written"
)

// TestRotationUnderLoadBinary rotates, with the built binary and under
// continuous load (8 workers, each transfer checked by SHA-256 in both
// directions), the server's certificate and key, the client's, and then
// the CA: both bundles to old + new CA, then leaves of the new CA. Broken
// files are written mid-rotation: a half-written certificate, a
// certificate whose key comes later, a half-written CA bundle. Every
// transfer must succeed, each broken file must be refused in the log, and
// new sessions must present the new certificates while old ones carry on.
func TestRotationUnderLoadBinary(t *testing.T) {
	pki1 := filepath.Join(t.TempDir(), "pki1")
	k := newBinPKI(t, pki1)
	const appURI = "spiffe://mtunnel.test/app"
	srvFiles := newAgentFiles(t, "server", k.serverCert, k.serverKey, k.ca)
	cliFiles := newAgentFiles(t, "client", k.appCert, k.appKey, k.ca)
	target := backend(t, duplexDigest)

	// --max-streams 1 on the client makes a session per stream, and bursts
	// grow with the sessions seen: lift the per-identity session limit.
	serverArgs := append(k.serverArgs("127.0.0.1:0", target), "--allow-uri", appURI, "--max-sessions-per-client", "10000")
	serverArgs = withFlag(withFlag(withFlag(serverArgs, "--cert", srvFiles.cert), "--key", srvFiles.key), "--ca", srvFiles.ca)
	server := startAgent(t, "server", nil, serverArgs...)
	server.waitLog(t, "watching certificate and CRL files for changes")
	serverAddr := server.listening(t)
	clientArgs := append(k.clientArgs(serverAddr), "--sessions", "1", "--max-streams", "1")
	clientArgs = withFlag(withFlag(withFlag(clientArgs, "--cert", cliFiles.cert), "--key", cliFiles.key), "--ca", cliFiles.ca)
	client := startAgent(t, "client", nil, clientArgs...)
	client.waitLog(t, "watching certificate and CRL files for changes")
	local := client.listening(t)
	t.Cleanup(func() {
		if t.Failed() {
			client.cmd.Process.Signal(syscall.SIGQUIT)
			<-client.done
			t.Logf("server output:\n%s\nclient output:\n%s", server.out.dump(), client.out.dump())
		}
	})

	probe, err := tls.LoadX509KeyPair(k.appCert, k.appKey) // of the old CA, trusted throughout
	if err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, 8, func(int, *mrand.Rand) error { return checkedTransfer(local, nil) })
	l.waitOK(t, 20)
	reloads := map[string]int{} // by agent and serial
	reloaded := func(p *childProc, want issued) {
		t.Helper()
		reloads[p.name+want.serial]++
		p.waitLogN(t, reloads[p.name+want.serial], logReloaded, "serial", want.serial)
	}
	// newSession makes the client dial a session after a reload and waits
	// for the server (by the client's certificate) and the client (by the
	// server's) to log it with the peer identities given.
	newSession := func(clientPeer, serverPeer string) {
		t.Helper()
		burst(t, l, local, countLog(client, msgAttr("session established"))+1)
		client.waitLog(t, "session established", "peer", clientPeer)
		server.waitLog(t, "session established", "peer", serverPeer)
	}

	// (a) The server's pair, by rename, after a half-written certificate
	// and with the key written late.
	srv2 := issue(t, pki1, "db-2", "--server", "--dns", readmeServerName, "--dns", "localhost", "--ip", "127.0.0.1")
	certPEM := readFile(t, srv2.cert)
	writeInPlace(t, srvFiles.cert, certPEM[:len(certPEM)/2])
	server.waitLog(t, logRefused, "file", srvFiles.cert)
	l.waitOK(t, 5)
	renameInto(t, srvFiles.cert, certPEM)
	server.waitLog(t, logMismatch)
	renameInto(t, srvFiles.key, readFile(t, srv2.key))
	reloaded(server, srv2)
	if got := serverSerial(t, serverAddr, probe, poolOf(t, k.ca)); got != srv2.serial {
		t.Fatalf("after the reload the server presents serial %s, want %s", got, srv2.serial)
	}
	newSession("CN=db-2", "CN=app")
	l.waitOK(t, 20)

	// (b) The client's pair, key then certificate, in quick succession.
	app2 := issue(t, pki1, "app-2", "--client", "--uri", appURI)
	renameInto(t, cliFiles.key, readFile(t, app2.key))
	renameInto(t, cliFiles.cert, readFile(t, app2.cert))
	reloaded(client, app2)
	newSession("CN=db-2", "CN=app-2 URI="+appURI)
	l.waitOK(t, 20)

	// (c) A new CA: both bundles to old + new (the server's first written
	// half), then leaves of the new CA.
	pki2 := filepath.Join(t.TempDir(), "pki2")
	mustRunBinary(t, "certs", "init", "--dir", pki2, "--name", "mtunnel CA 2")
	bundle := append(readFile(t, k.ca), readFile(t, filepath.Join(pki2, "ca.crt"))...)
	writeInPlace(t, srvFiles.ca, bundle[:len(bundle)*3/4])
	server.waitLog(t, logRefused, "file", srvFiles.ca)
	l.waitOK(t, 5)
	writeInPlace(t, srvFiles.ca, bundle)
	reloaded(server, srv2)
	renameInto(t, cliFiles.ca, bundle)
	reloaded(client, app2)
	l.waitOK(t, 20)
	srv3 := issue(t, pki2, "db-3", "--server", "--dns", readmeServerName, "--dns", "localhost", "--ip", "127.0.0.1")
	renameInto(t, srvFiles.cert, readFile(t, srv3.cert))
	renameInto(t, srvFiles.key, readFile(t, srv3.key))
	reloaded(server, srv3)
	app3 := issue(t, pki2, "app-3", "--client", "--uri", appURI)
	renameInto(t, cliFiles.cert, readFile(t, app3.cert))
	renameInto(t, cliFiles.key, readFile(t, app3.key))
	reloaded(client, app3)
	if got := serverSerial(t, serverAddr, probe, poolOf(t, k.ca, filepath.Join(pki2, "ca.crt"))); got != srv3.serial {
		t.Fatalf("after the CA rotation the server presents serial %s, want %s", got, srv3.serial)
	}
	newSession("CN=db-3", "CN=app-3 URI="+appURI)
	l.waitOK(t, 20)

	// SIGHUP reloads what is there.
	if err := server.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloaded(server, srv3)
	l.waitOK(t, 20)
	// The sessions opened under the first certificates carried on.
	if n := countLog(client, msgAttr("session ended")); n > 0 {
		t.Errorf("the client saw %d sessions end during the rotations", n)
	}

	ok, failures := l.finish()
	if len(failures) > 0 {
		t.Errorf("%d of %d transfers failed under rotation:\n%s", len(failures), ok+len(failures), errors.Join(failures...))
	}
	// Nothing else went wrong: no warning or error but the expected
	// refusals of broken files (no failed handshake, no reset stream).
	expected := []string{logRefused, logMismatch}
	for _, p := range []*childProc{server, client} {
		n := countLog(p, func(r record) bool {
			if r.level >= slog.LevelWarn && !slices.Contains(expected, r.msg) {
				t.Errorf("%s logged: %v", p.name, r)
				return true
			}
			return false
		})
		if n > 0 {
			t.Logf("%s output:\n%s", p.name, p.out.dump())
		}
	}
	t.Logf("%d transfers checked; client sessions: %d", ok, countLog(client, msgAttr("session established")))
}
