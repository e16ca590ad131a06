package integration

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

var (
	clientAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	serverAuth = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
)

// leaf is a template for a leaf valid from an hour ago for a day.
func leaf(cn string, eku []x509.ExtKeyUsage, mods ...func(*x509.Certificate)) *x509.Certificate {
	now := time.Now()
	c := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           eku,
		BasicConstraintsValid: true,
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func dnsNames(names ...string) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.DNSNames = names }
}

// intermediate issues a sub-CA of parent, optionally name-constrained,
// and returns it as a CA plus its certificate for chains.
func intermediate(t *testing.T, parent *certstest.CA, cn string, mods ...func(*x509.Certificate)) *certstest.CA {
	t.Helper()
	tmpl := leaf(cn, nil, func(c *x509.Certificate) {
		c.IsCA = true
		c.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	})
	for _, m := range mods {
		m(tmpl)
	}
	ic := parent.IssueTemplate(t, tmpl)
	return &certstest.CA{CA: &certs.CA{Cert: ic.Leaf, Key: ic.PrivateKey.(crypto.Signer)}}
}

// chained returns c with its issuer appended, as a peer sends it.
func chained(c tls.Certificate, issuers ...*certstest.CA) tls.Certificate {
	for _, ca := range issuers {
		c.Certificate = append(c.Certificate, ca.Cert.Raw)
	}
	return c
}

// selfSigned is a leaf that signs itself: never acceptable unless it is a
// configured root.
func selfSigned(t *testing.T, cn string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := leaf(cn, clientAuth)
	tmpl.SerialNumber = big.NewInt(7)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: c}
}

// verifyWorld is a server that allows everyone its CA vouches for, so
// that every refusal comes from certificate verification, plus a good
// client on it.
type verifyWorld struct {
	*world
}

func newVerifyWorld(t *testing.T, policy func(*tunnel.TLSPolicy)) *verifyWorld {
	t.Helper()
	w := &world{ca: certstest.New(t), logs: newLogSink(t)}
	w.echoAddr = backend(t, echo)
	p := tunnel.TLSPolicy{Credentials: creds(w.ca.Server(t, "localhost"), w.ca.Pool())}
	if policy != nil {
		policy(&p)
	}
	w.serverAddr = startServer(t, server.Config{
		TLS: p,
		Routes: map[string]server.Route{
			"default": {Target: w.echoAddr, ACL: tunnel.ACL{AllowAll: true}},
			"spiffe":  {Target: w.echoAddr, ACL: tunnel.ACL{Rules: []tunnel.Rule{{URI: "spiffe://test.example/ns/*/sa/api"}}}},
			"dns":     {Target: w.echoAddr, ACL: tunnel.ACL{Rules: []tunnel.Rule{{DNS: "*.good.example"}}}},
		},
		Logger:          w.logs.logger("server"),
		RecheckInterval: time.Hour, // rechecks are forced by the tests
	})
	w.goodClient = w.client(t, w.ca.Client(t, "app"), "default")[0]
	return &verifyWorld{w}
}

// TestClientCertificateMatrix: each client certificate is refused by the
// server with its own reason, while the good client keeps working.
func TestClientCertificateMatrix(t *testing.T) {
	w := newVerifyWorld(t, nil)
	ca := w.ca
	constrained := intermediate(t, ca, "constrained intermediate", func(c *x509.Certificate) {
		c.PermittedDNSDomains = []string{"good.example"}
		c.PermittedDNSDomainsCritical = true
	})
	noCertSign := intermediate(t, ca, "intermediate without keyCertSign", func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign
	})
	now := time.Now()
	tests := []struct {
		name   string
		cert   tls.Certificate
		reason tunnel.Reason
	}{
		{"wrong CA", certstest.New(t).Client(t, "app"), tunnel.ReasonUnknownAuthority},
		{"self-signed", selfSigned(t, "app"), tunnel.ReasonUnknownAuthority},
		{"expired", ca.IssueTemplate(t, leaf("app", clientAuth, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
		})), tunnel.ReasonExpired},
		{"not yet valid", ca.IssueTemplate(t, leaf("app", clientAuth, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(24*time.Hour), now.Add(48*time.Hour)
		})), tunnel.ReasonNotYetValid},
		{"serverAuth only", ca.IssueTemplate(t, leaf("app", serverAuth)), tunnel.ReasonWrongUsage},
		{"no extended key usage", ca.IssueTemplate(t, leaf("app", nil)), tunnel.ReasonWrongUsage},
		{"key usage without digitalSignature", ca.IssueTemplate(t, leaf("app", clientAuth, func(c *x509.Certificate) {
			c.KeyUsage = x509.KeyUsageKeyEncipherment
		})), tunnel.ReasonWrongUsage},
		{"outside name constraints", chained(constrained.IssueTemplate(t, leaf("api", clientAuth, dnsNames("api.evil.example"))), constrained), tunnel.ReasonNameConstraints},
		// x509 refuses the signature of a CA without keyCertSign, so the
		// chain has no authority.
		{"CA without keyCertSign", chained(noCertSign.IssueTemplate(t, leaf("api", clientAuth)), noCertSign), tunnel.ReasonUnknownAuthority},
		{"intermediate not sent", constrained.IssueTemplate(t, leaf("api", clientAuth, dnsNames("api.good.example"))), tunnel.ReasonUnknownAuthority},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := startClient(t, client.Config{
				Servers: []string{w.serverAddr},
				TLS:     tunnel.TLSPolicy{Credentials: creds(tt.cert, ca.Pool()), ServerName: "localhost"},
				Routes:  []client.Route{{}},
			})[0]
			expectReset(t, local)
			w.logs.waitFor(t, string(tt.reason), handshakeFailed(tt.reason))
			w.checkGood(t)
		})
	}
}

// TestClientCertificateAccepted: chains and identities that must pass.
func TestClientCertificateAccepted(t *testing.T) {
	w := newVerifyWorld(t, nil)
	ca := w.ca
	inter := intermediate(t, ca, "intermediate", func(c *x509.Certificate) {
		c.PermittedDNSDomains = []string{"good.example"}
	})
	spiffe, _ := url.Parse("spiffe://test.example/ns/prod/sa/api")
	tests := []struct {
		name  string
		cert  tls.Certificate
		route string
	}{
		{"chain through an intermediate", chained(inter.IssueTemplate(t, leaf("api", clientAuth, dnsNames("api.good.example"))), inter), "default"},
		{"SPIFFE URI identity", ca.IssueTemplate(t, leaf("", clientAuth, func(c *x509.Certificate) { c.URIs = []*url.URL{spiffe} })), "spiffe"},
		{"DNS wildcard rule", ca.IssueTemplate(t, leaf("api", clientAuth, dnsNames("api.good.example"))), "dns"},
		{"expired 30s ago, within clock skew", ca.IssueTemplate(t, leaf("app", clientAuth, func(c *x509.Certificate) {
			c.NotAfter = time.Now().Add(-30 * time.Second)
		})), "default"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := w.client(t, tt.cert, tt.route)[0]
			if err := echoCheck(t, local, 64<<10); err != nil {
				t.Fatalf("refused: %v\n%s", err, w.logs.dump())
			}
		})
	}
}

// TestIdentityRulesMustNotMatch: verified certificates whose identity a
// route's wildcard rule must not match are refused per stream.
func TestIdentityRulesMustNotMatch(t *testing.T) {
	w := newVerifyWorld(t, nil)
	other, _ := url.Parse("spiffe://test.example/ns/prod/api")     // one segment short
	deep, _ := url.Parse("spiffe://test.example/ns/prod/x/sa/api") // * is one segment
	tests := []struct {
		name  string
		cert  tls.Certificate
		route string
	}{
		{"uri segment count", w.ca.IssueTemplate(t, leaf("x", clientAuth, func(c *x509.Certificate) { c.URIs = []*url.URL{other} })), "spiffe"},
		{"uri * spans two segments", w.ca.IssueTemplate(t, leaf("x", clientAuth, func(c *x509.Certificate) { c.URIs = []*url.URL{deep} })), "spiffe"},
		{"dns * spans two labels", w.ca.IssueTemplate(t, leaf("x", clientAuth, dnsNames("a.b.good.example"))), "dns"},
		{"dns other domain", w.ca.IssueTemplate(t, leaf("x", clientAuth, dnsNames("api.good.example.evil"))), "dns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := w.client(t, tt.cert, tt.route)[0]
			expectReset(t, local)
			w.logs.waitFor(t, "forbidden on "+tt.route, msgAttr("stream rejected", "agent", "server", "route", tt.route, "result", "forbidden", "peer", certs.Identity(tt.cert.Leaf)))
			w.checkGood(t)
		})
	}
}

// TestServerCertificateMatrix: the client agent refuses bad server
// certificates with their own reasons; legacy CN only when asked for.
func TestServerCertificateMatrix(t *testing.T) {
	ca := certstest.New(t)
	constrained := intermediate(t, ca, "constrained", func(c *x509.Certificate) {
		c.PermittedDNSDomains = []string{"localhost"}
	})
	tests := []struct {
		name     string
		cert     tls.Certificate
		legacyCN bool
		reason   tunnel.Reason // "" means accepted
	}{
		{"clientAuth only", ca.IssueTemplate(t, leaf("localhost", clientAuth, dnsNames("localhost"))), false, tunnel.ReasonWrongUsage},
		{"name mismatch", ca.Server(t, "db", "db.example.com"), false, tunnel.ReasonNameMismatch},
		{"CN only, no legacy", ca.IssueTemplate(t, leaf("localhost", serverAuth)), false, tunnel.ReasonNameMismatch},
		{"CN only, legacy", ca.IssueTemplate(t, leaf("localhost", serverAuth)), true, ""},
		{"CN other name, legacy", ca.IssueTemplate(t, leaf("db.example.com", serverAuth)), true, tunnel.ReasonNameMismatch},
		{"CN with a SAN, legacy", ca.IssueTemplate(t, leaf("localhost", serverAuth, dnsNames("db.example.com"))), true, tunnel.ReasonNameMismatch},
		{"CN under name constraints, legacy", chained(constrained.IssueTemplate(t, leaf("localhost", serverAuth)), constrained), true, tunnel.ReasonNameMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := newLogSink(t)
			addr := startServer(t, server.Config{
				TLS:    tunnel.TLSPolicy{Credentials: creds(tt.cert, ca.Pool())},
				Routes: map[string]server.Route{"default": {Target: backend(t, echo), ACL: tunnel.ACL{AllowAll: true}}},
				Logger: logs.logger("server"),
			})
			local := startClient(t, client.Config{
				Servers: []string{addr},
				TLS:     tunnel.TLSPolicy{Credentials: creds(ca.Client(t, "app"), ca.Pool()), ServerName: "localhost", LegacyCN: tt.legacyCN, Logger: logs.logger("client")},
				Routes:  []client.Route{{}},
				Logger:  logs.logger("client"),
			})[0]
			if tt.reason == "" {
				if err := echoCheck(t, local, 64<<10); err != nil {
					t.Fatalf("refused: %v\n%s", err, logs.dump())
				}
				logs.waitFor(t, "legacy CN logged", msgAttr("legacy common name match: server certificate has no SAN", "cn", "localhost"))
				return
			}
			expectReset(t, local)
			logs.waitFor(t, string(tt.reason), msgAttr("session dial failed", "agent", "client", "reason", string(tt.reason)))
		})
	}
}
