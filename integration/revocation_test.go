package integration

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// writeCRL has ca sign a CRL revoking the given certificates, writes it as
// PEM to dir and loads it back as the agents do.
func writeCRL(t *testing.T, ca *certstest.CA, number int64, nextUpdate time.Time, revoked ...*x509.Certificate) *certs.CRL {
	t.Helper()
	thisUpdate := time.Now().Add(-time.Minute)
	if !thisUpdate.Before(nextUpdate) {
		thisUpdate = nextUpdate.Add(-24 * time.Hour)
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Second), ReasonCode: 1, // keyCompromise
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.crl")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	crl, err := certs.LoadCRL(file, []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// crlWorld is a verifyWorld whose server checks a CRL the test can swap.
type crlWorld struct {
	*verifyWorld
	crls atomic.Pointer[certs.CRLSet]
}

func newCRLWorld(t *testing.T, rev *tunnel.Revocation) *crlWorld {
	w := &crlWorld{}
	w.crls.Store(&certs.CRLSet{})
	rev.CRLs = w.crls.Load
	w.verifyWorld = newVerifyWorld(t, func(p *tunnel.TLSPolicy) { p.Revocation = rev })
	return w
}

func (w *crlWorld) install(t *testing.T, crl *certs.CRL) {
	t.Helper()
	set, err := w.crls.Load().Update(crl)
	if err != nil {
		t.Fatal(err)
	}
	w.crls.Store(set)
}

func TestCRLRevokedClientRefused(t *testing.T) {
	checkLeaks(t)
	w := newCRLWorld(t, &tunnel.Revocation{})
	revoked := w.ca.Client(t, "revoked")
	w.install(t, writeCRL(t, w.ca, 1, time.Now().Add(time.Hour), revoked.Leaf))
	expectReset(t, w.client(t, revoked, "default")[0])
	w.logs.waitFor(t, "revoked", handshakeFailed(tunnel.ReasonRevoked))
	w.checkGood(t)
}

func TestCRLStale(t *testing.T) {
	checkLeaks(t)
	tests := []struct {
		name       string
		warn       bool
		nextUpdate time.Duration // relative to now
		refused    bool
	}{
		{"fail policy, past grace", false, -2 * time.Hour, true},
		{"fail policy, within grace", false, -10 * time.Minute, false},
		{"warn policy, past grace", true, -2 * time.Hour, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newCRLWorld(t, &tunnel.Revocation{CRLStaleWarn: tt.warn, CRLGrace: time.Hour})
			crl := writeCRL(t, w.ca, 1, time.Now().Add(tt.nextUpdate))
			w.install(t, crl)
			local := w.client(t, w.ca.Client(t, "other"), "default")[0]
			if tt.refused {
				expectReset(t, local)
				w.logs.waitFor(t, "crl_stale", handshakeFailed(tunnel.ReasonCRLStale))
				return
			}
			if err := echoCheck(t, local, 64<<10); err != nil {
				t.Fatalf("refused under a usable stale CRL: %v\n%s", err, w.logs.dump())
			}
		})
	}
}

// TestRevocationEndsLiveSession: revoking a client whose session is open
// closes that session (its app gets a reset) at the next recheck, here
// shortened to 200 ms by configuration; the other clients go on.
func TestRevocationEndsLiveSession(t *testing.T) {
	checkLeaks(t)
	ca := certstest.New(t)
	logs := newLogSink(t)
	var crls atomic.Pointer[certs.CRLSet]
	crls.Store(&certs.CRLSet{})
	w := &world{ca: ca, logs: logs, echoAddr: backend(t, echo)}
	w.serverAddr = startServer(t, server.Config{
		TLS: tunnel.TLSPolicy{Credentials: creds(ca.Server(t, "localhost"), ca.Pool()),
			Revocation: &tunnel.Revocation{CRLs: crls.Load}},
		Routes:          map[string]server.Route{"default": {Target: w.echoAddr, ACL: tunnel.ACL{AllowAll: true}}},
		Logger:          logs.logger("server"),
		RecheckInterval: 200 * time.Millisecond,
	})
	w.goodClient = w.client(t, ca.Client(t, "app"), "default")[0]
	victimCert := ca.Client(t, "victim")
	victim := w.client(t, victimCert, "default")[0]

	c := connectedApp(t, victim)

	set, _ := crls.Load().Update(writeCRL(t, ca, 1, time.Now().Add(time.Hour), victimCert.Leaf))
	crls.Store(set)
	expectResetOn(t, c)
	logs.waitFor(t, "session closed for revocation", msgAttr("closing session: peer no longer passes verification",
		"peer", "CN=victim", "reason", string(tunnel.ReasonRevoked)))
	w.checkGood(t)
}

// TestSessionEndsWhenPeerCertificateExpires: a session does not outlive
// its client's certificate.
func TestSessionEndsWhenPeerCertificateExpires(t *testing.T) {
	checkLeaks(t)
	ca := certstest.New(t)
	logs := newLogSink(t)
	addr := startServer(t, server.Config{
		TLS:             tunnel.TLSPolicy{Credentials: creds(ca.Server(t, "localhost"), ca.Pool()), ClockSkew: -1},
		Routes:          map[string]server.Route{"default": {Target: backend(t, echo), ACL: tunnel.ACL{AllowAll: true}}},
		Logger:          logs.logger("server"),
		RecheckInterval: 100 * time.Millisecond,
	})
	short := ca.IssueTemplate(t, leaf("short-lived", clientAuth, func(c *x509.Certificate) {
		c.NotAfter = time.Now().Add(1500 * time.Millisecond)
	}))
	w := &world{ca: ca, logs: logs, serverAddr: addr}
	local := w.client(t, short, "default")[0]
	c := connectedApp(t, local)
	expectResetOn(t, c)
	logs.waitFor(t, "session closed at expiry", msgAttr("closing session: peer no longer passes verification",
		"peer", "CN=short-lived", "reason", string(tunnel.ReasonExpired)))
}

// connectedApp opens an app connection through local and proves it works
// end to end with one echo; it is closed when the test ends.
func connectedApp(t *testing.T, local string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte("ping"))
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatalf("app connection not working end to end: %v", err)
	}
	return c
}

// expectResetOn requires an open app connection to end in a reset.
func expectResetOn(t *testing.T, c net.Conn) {
	t.Helper()
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app connection ended with %v, want a reset", err)
	}
}
