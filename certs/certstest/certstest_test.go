package certstest_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// handshake runs a mutual TLS handshake over loopback TCP (net.Pipe has no
// buffering, so an alert written by one side would block) and returns the
// client's and the server's errors.
func handshake(t *testing.T, serverName string, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer conn.Close()
		done <- tls.Server(conn, server).Handshake()
	}()
	client = client.Clone()
	client.ServerName = serverName
	conn, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err == nil {
		conn.Close()
	}
	return err, <-done
}

func TestMutualTLS(t *testing.T) {
	ca := certstest.New(t)
	server := &tls.Config{
		Certificates: []tls.Certificate{ca.Server(t, "api")},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
	client := &tls.Config{
		Certificates: []tls.Certificate{ca.Client(t, "laptop", "spiffe://test/laptop")},
		RootCAs:      ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	}
	// The default server SANs cover the names a loopback test dials.
	for _, name := range []string{"api", "localhost", "127.0.0.1", "::1"} {
		if cerr, serr := handshake(t, name, server, client); cerr != nil || serr != nil {
			t.Errorf("handshake as %q: client %v, server %v", name, cerr, serr)
		}
	}

	// A client of another CA is refused.
	stranger := client.Clone()
	stranger.Certificates = []tls.Certificate{certstest.New(t).Client(t, "stranger")}
	if _, serr := handshake(t, "localhost", server, stranger); serr == nil {
		t.Error("server accepted a client certificate from another CA")
	}
}

func TestServerExplicitNames(t *testing.T) {
	leaf := certstest.New(t).Server(t, "api", "api.example", "10.0.0.1").Leaf
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "api.example" {
		t.Errorf("DNSNames = %q, want [api.example]", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("IPAddresses = %v, want [10.0.0.1]", leaf.IPAddresses)
	}
}

func TestWriteFiles(t *testing.T) {
	ca := certstest.New(t)
	dir := t.TempDir()
	caFile := ca.WriteFiles(t, dir)
	if caFile != filepath.Join(dir, "ca.crt") {
		t.Errorf("WriteFiles = %q, want dir/ca.crt", caFile)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.key")); !os.IsNotExist(err) {
		t.Errorf("WriteFiles wrote the CA key (stat: %v)", err)
	}
	pool, _, err := certs.LoadPool(caFile)
	if err != nil {
		t.Fatal(err)
	}

	certFile, keyFile := certstest.WriteKeyPair(t, dir, "api", ca.Server(t, "api"))
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v, %v; want 0600", fi.Mode(), err)
	}
	pair, err := certs.LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Errorf("written pair does not verify against written CA: %v", err)
	}
}
