package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// ocspPKI is a CA on disk with a real "openssl ocsp" responder answering
// for it from its index.txt. The certificates it issues name the responder.
type ocspPKI struct {
	ca   *certstest.CA
	dir  string // ca.crt, ca.key, index.txt
	resp *certstest.OpenSSLResponder
}

func newOCSPPKI(t *testing.T) *ocspPKI {
	t.Helper()
	p := &ocspPKI{ca: certstest.New(t), dir: t.TempDir()}
	if err := certs.WriteCA(p.dir, p.ca.CA, false); err != nil {
		t.Fatal(err)
	}
	// The responder comes first: the certificates name its URL.
	p.resp = certstest.StartOpenSSLResponder(t, p.dir)
	return p
}

// issue issues a certificate that names the responder and records it in
// the index as valid. The responder knows it after publish.
func (p *ocspPKI) issue(t *testing.T, r certs.Request) tls.Certificate {
	t.Helper()
	r.OCSPServer = []string{p.resp.URL()}
	c := p.ca.Issue(t, r)
	if err := certs.RecordIssued(filepath.Join(p.dir, "index.txt"), c.Leaf); err != nil {
		t.Fatal(err)
	}
	return c
}

func (p *ocspPKI) client(t *testing.T, name string) tls.Certificate {
	t.Helper()
	return p.issue(t, certs.Request{Name: name, Client: true})
}

func (p *ocspPKI) server(t *testing.T) tls.Certificate {
	t.Helper()
	return p.issue(t, certs.Request{Name: "localhost", Server: true, DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
}

// revoke marks c revoked for keyCompromise in the index.
func (p *ocspPKI) revoke(t *testing.T, c tls.Certificate) {
	t.Helper()
	if err := certs.RecordRevoked(filepath.Join(p.dir, "index.txt"), c.Leaf, 1, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// publish makes the responder answer from the index as it is now.
func (p *ocspPKI) publish(t *testing.T) { p.resp.Restart(t) }

// revocation is an OCSP checker with a cache of its own, so that every
// answer it uses was obtained in the test that uses it. The timeout is
// short because some tests stop the responder.
func (p *ocspPKI) revocation(mode tunnel.OCSPMode, log *slog.Logger) *tunnel.Revocation {
	return &tunnel.Revocation{OCSP: mode, OCSPClient: &certs.OCSPClient{Timeout: 2 * time.Second}, Logger: log}
}

// serve runs a server agent with policy and one route, "default", open to
// every verified client, to a new echo backend.
func (p *ocspPKI) serve(t *testing.T, logs *logSink, agent string, policy tunnel.TLSPolicy) *world {
	t.Helper()
	w := &world{ca: p.ca, logs: logs, echoAddr: backend(t, echo)}
	w.serverAddr = startServer(t, server.Config{
		TLS:    policy,
		Routes: map[string]server.Route{"default": {Target: w.echoAddr, ACL: tunnel.ACL{AllowAll: true}}},
		Logger: logs.logger(agent),
	})
	return w
}

// hardClient starts a client agent with cert that requires a good OCSP
// answer for the server's certificate (OCSPHard), and returns its local
// address.
func (p *ocspPKI) hardClient(t *testing.T, logs *logSink, agent, serverAddr string, cert tls.Certificate) string {
	t.Helper()
	return startClient(t, client.Config{
		Servers: []string{serverAddr},
		TLS: tunnel.TLSPolicy{Credentials: creds(cert, p.ca.Pool()), ServerName: "localhost",
			Revocation: p.revocation(tunnel.OCSPHard, logs.logger(agent))},
		Routes: []client.Route{{}},
		Logger: logs.logger(agent),
	})[0]
}

// runStapler runs s until the test ends.
func runStapler(t *testing.T, s *tunnel.Stapler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

var ocspModes = []struct {
	name string
	mode tunnel.OCSPMode
}{{"soft", tunnel.OCSPSoft}, {"hard", tunnel.OCSPHard}}

// TestOCSPRevokedClientRefused: a client certificate that the responder
// says is revoked is refused in either mode; "soft" only forgives an
// answer that cannot be had.
func TestOCSPRevokedClientRefused(t *testing.T) {
	checkLeaks(t)
	for _, m := range ocspModes {
		t.Run(m.name, func(t *testing.T) {
			p := newOCSPPKI(t)
			logs := newLogSink(t)
			serverCert, app, revoked := p.server(t), p.client(t, "app"), p.client(t, "revoked")
			p.revoke(t, revoked)
			p.publish(t)
			w := p.serve(t, logs, "server", tunnel.TLSPolicy{
				Credentials: creds(serverCert, p.ca.Pool()),
				Revocation:  p.revocation(m.mode, logs.logger("server")),
			})
			w.goodClient = w.client(t, app, "default")[0]
			w.checkGood(t)

			expectReset(t, w.client(t, revoked, "default")[0])
			w.logs.waitFor(t, "revoked", handshakeFailed(tunnel.ReasonRevoked))
			w.checkGood(t)
		})
	}
}

// TestOCSPResponderDown: with the responder gone, "soft" lets a client in
// with a warning and "hard" refuses it; a client verified before goes on.
func TestOCSPResponderDown(t *testing.T) {
	checkLeaks(t)
	for _, m := range ocspModes {
		t.Run(m.name, func(t *testing.T) {
			p := newOCSPPKI(t)
			logs := newLogSink(t)
			serverCert, app, late := p.server(t), p.client(t, "app"), p.client(t, "late")
			p.publish(t)
			w := p.serve(t, logs, "server", tunnel.TLSPolicy{
				Credentials: creds(serverCert, p.ca.Pool()),
				Revocation:  p.revocation(m.mode, logs.logger("server")),
			})
			w.goodClient = w.client(t, app, "default")[0]
			w.checkGood(t)

			p.resp.Stop()
			local := w.client(t, late, "default")[0]
			if m.mode == tunnel.OCSPHard {
				expectReset(t, local)
				w.logs.waitFor(t, "ocsp_unavailable", handshakeFailed(tunnel.ReasonOCSPUnavailable))
			} else {
				if err := echoCheck(t, local, 64<<10); err != nil {
					t.Fatalf("soft mode refused a client while the responder is down: %v\n%s", err, logs.dump())
				}
				w.logs.waitFor(t, "soft-fail warning", msgAttr("OCSP status unknown; allowing (--ocsp soft)",
					"agent", "server", "cert", "certificate CN=late", "reason", string(tunnel.ReasonOCSPUnavailable)))
			}
			w.checkGood(t)
		})
	}
}

// TestOCSPStaple: a server that staples a good response is accepted by a
// hard client that cannot reach the responder; without the staple the
// same client refuses the same certificate.
func TestOCSPStaple(t *testing.T) {
	checkLeaks(t)
	p := newOCSPPKI(t)
	logs := newLogSink(t)
	serverCert, app := p.server(t), p.client(t, "app")
	p.publish(t)
	store := tunnel.NewCredentialStore(&tunnel.Credentials{Certificate: serverCert, Roots: p.ca.Pool(), Issuer: p.ca.Cert})
	runStapler(t, &tunnel.Stapler{Store: store, Client: &certs.OCSPClient{Timeout: 2 * time.Second}, Logger: logs.logger("stapler")})
	logs.waitFor(t, "staple installed", msgAttr("OCSP staple refreshed", "agent", "stapler", "status", "good"))
	stapled := p.serve(t, logs, "server", tunnel.TLSPolicy{Credentials: store.Load})
	bare := p.serve(t, logs, "server-without-staple", tunnel.TLSPolicy{Credentials: creds(serverCert, p.ca.Pool())})

	// From here on only the staple can tell the server's status.
	p.resp.Stop()

	local := p.hardClient(t, logs, "client", stapled.serverAddr, app)
	if err := echoCheck(t, local, 256<<10); err != nil {
		t.Fatalf("hard client refused a server with a good staple: %v\n%s", err, logs.dump())
	}
	local = p.hardClient(t, logs, "client-of-bare", bare.serverAddr, app)
	expectReset(t, local)
	logs.waitFor(t, "ocsp_unavailable without a staple", msgAttr("session dial failed",
		"agent", "client-of-bare", "reason", string(tunnel.ReasonOCSPUnavailable)))

	// The recheck of an open session uses the staple it was accepted on,
	// so the session is not cut just because the responder is down.
	policy := tunnel.TLSPolicy{Credentials: creds(app, p.ca.Pool()), ServerName: "localhost",
		Revocation: p.revocation(tunnel.OCSPHard, logs.logger("recheck"))}
	sess := &tunnel.Session{PeerChain: []*x509.Certificate{serverCert.Leaf}, Staple: store.Load().Certificate.OCSPStaple}
	if err := policy.VerifyServer(sess); err != nil {
		t.Fatalf("recheck of a stapled session: %v", err)
	}
	sess.Staple = nil
	if err := policy.VerifyServer(sess); tunnel.Classify(err) != tunnel.ReasonOCSPUnavailable {
		t.Fatalf("recheck without a staple: %v, want ocsp_unavailable", err)
	}
}

// TestOCSPStapleAfterReload: credentials stored by a reload come without a
// staple; Stapler.Refresh staples them at once rather than at the next
// scheduled refresh (halfway to NextUpdate, or an hour).
func TestOCSPStapleAfterReload(t *testing.T) {
	checkLeaks(t)
	p := newOCSPPKI(t)
	logs := newLogSink(t)
	first, second := p.server(t), p.server(t)
	p.publish(t)
	store := tunnel.NewCredentialStore(&tunnel.Credentials{Certificate: first, Roots: p.ca.Pool(), Issuer: p.ca.Cert})
	s := &tunnel.Stapler{Store: store, Client: &certs.OCSPClient{Timeout: 2 * time.Second}, Logger: logs.logger("stapler")}
	runStapler(t, s)
	refreshed := msgAttr("OCSP staple refreshed", "agent", "stapler", "status", "good")
	logs.waitFor(t, "first staple", refreshed)

	store.Store(&tunnel.Credentials{Certificate: second, Roots: p.ca.Pool(), Issuer: p.ca.Cert})
	s.Refresh()
	n := 0
	logs.waitFor(t, "a second staple", func(r record) bool {
		if refreshed(r) {
			n++
		}
		return n == 2
	})
	got := store.Load().Certificate
	if got.Leaf != second.Leaf || got.OCSPStaple == nil {
		t.Fatal("the reloaded certificate was not stapled")
	}
	res, err := ocsp.ParseResponseForCert(got.OCSPStaple, second.Leaf, p.ca.Cert)
	if err != nil || res.Status != ocsp.Good {
		t.Fatalf("staple of the reloaded certificate: %v, status %v", err, res)
	}
}

// TestOCSPRevokedServerRefused: a hard client refuses a server whose
// certificate is revoked, whether it asks the responder or the server
// staples the "revoked" answer itself.
func TestOCSPRevokedServerRefused(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct {
		name     string
		stapling bool
	}{{"asked of the responder", false}, {"stapled", true}} {
		t.Run(tt.name, func(t *testing.T) {
			p := newOCSPPKI(t)
			logs := newLogSink(t)
			serverCert, app := p.server(t), p.client(t, "app")
			p.revoke(t, serverCert)
			p.publish(t)
			store := tunnel.NewCredentialStore(&tunnel.Credentials{Certificate: serverCert, Roots: p.ca.Pool(), Issuer: p.ca.Cert})
			if tt.stapling {
				runStapler(t, &tunnel.Stapler{Store: store, Client: &certs.OCSPClient{Timeout: 2 * time.Second}, Logger: logs.logger("stapler")})
				logs.waitFor(t, "revoked staple", msgAttr("own certificate is REVOKED per OCSP: peers checking OCSP will refuse it", "agent", "stapler"))
				logs.waitFor(t, "staple installed", msgAttr("OCSP staple refreshed", "agent", "stapler", "status", "revoked"))
				p.resp.Stop() // the staple alone must condemn the server
			}
			w := p.serve(t, logs, "server", tunnel.TLSPolicy{Credentials: store.Load})
			expectReset(t, p.hardClient(t, logs, "client", w.serverAddr, app))
			logs.waitFor(t, "revoked", msgAttr("session dial failed", "agent", "client", "reason", string(tunnel.ReasonRevoked)))
		})
	}
}
