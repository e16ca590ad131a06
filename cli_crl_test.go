package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
)

func crlPEM(t testing.TB, ca *certstest.CA, number int64, revoked ...*x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour)}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestCRLWatcher: a good CRL loads; a changed file that is broken, signed by
// another key or older by CRL number is refused and the last good CRL stays;
// a newer one replaces it.
func TestCRLWatcher(t *testing.T) {
	ca := certstest.New(t)
	victim := ca.Client(t, "victim").Leaf
	other := ca.Client(t, "other").Leaf
	file := filepath.Join(t.TempDir(), "ca.crl")
	write := func(data []byte) {
		t.Helper()
		// Writes within one clock tick may leave the same mtime and size:
		// the watcher compares contents, so no reload below is forced.
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(crlPEM(t, ca, 5, victim))
	logs := newLogRecorder()
	w := &crlWatcher{files: []string{file}, cas: []*x509.Certificate{ca.Cert}, log: slog.New(logs)}
	if err := w.loadAll(); err != nil {
		t.Fatal(err)
	}
	revoked := func(c *x509.Certificate) bool {
		_, ok := w.current().For(ca.Cert).Revoked(c.SerialNumber)
		return ok
	}
	if !revoked(victim) || revoked(other) {
		t.Fatal("initial CRL not in force")
	}
	impostor := certstest.New(t) // same subject name, another key
	for _, bad := range []struct {
		name string
		data []byte
	}{
		{"garbage", []byte("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")},
		{"half written", crlPEM(t, ca, 6, other)[:100]},
		{"bad signature", crlPEM(t, impostor, 7, other)},
		{"rolled back", crlPEM(t, ca, 4, other)},
	} {
		write(bad.data)
		m := logs.mark()
		if w.reload(false) {
			t.Errorf("%s: reload reported a change", bad.name)
		}
		if logs.mark() != m+1 {
			t.Errorf("%s: not read and refused once; log:\n%s", bad.name, logs.dump())
		}
		if !revoked(victim) || revoked(other) {
			t.Errorf("%s: the last good CRL is no longer in force", bad.name)
		}
	}
	write(crlPEM(t, ca, 8, other))
	if !w.reload(false) || revoked(victim) || !revoked(other) {
		t.Fatal("a newer good CRL was not taken")
	}
	// Unchanged file, no force: nothing to do.
	if w.reload(false) {
		t.Fatal("reload without a change reported one")
	}
}

func TestCRLWatcherStartFailsOnBadCRL(t *testing.T) {
	ca := certstest.New(t)
	file := filepath.Join(t.TempDir(), "ca.crl")
	os.WriteFile(file, crlPEM(t, certstest.New(t), 1), 0o644)
	w := &crlWatcher{files: []string{file}, cas: []*x509.Certificate{ca.Cert}}
	if err := w.loadAll(); err == nil {
		t.Fatal("a CRL with a bad signature was accepted at start")
	}
}
