package certstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
)

// caValidity outlives the default leaf validity (certs.DefaultLeafValidity),
// so leaves get the validity they ask for rather than one capped at the CA's.
const caValidity = 10 * 365 * 24 * time.Hour

// CA is an in-memory certificate authority for tests.
type CA struct{ *certs.CA }

// New returns a fresh CA with common name "mtunnel test CA".
func New(t testing.TB) *CA {
	t.Helper()
	ca, err := certs.NewCA("mtunnel test CA", caValidity)
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return &CA{ca}
}

// Pool returns a pool holding only c's certificate.
func (c *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(c.Cert)
	return pool
}

// Server issues a server certificate with common name name. Its SANs are
// dns, with entries that parse as IP addresses given as IP SANs; without dns
// they are name, "localhost", 127.0.0.1 and ::1, which suit a listener on
// the loopback interface.
func (c *CA) Server(t testing.TB, name string, dns ...string) tls.Certificate {
	t.Helper()
	if len(dns) == 0 {
		dns = []string{name, "localhost", "127.0.0.1", "::1"}
	}
	r := certs.Request{Name: name, Server: true}
	for _, d := range dns {
		if ip := net.ParseIP(d); ip != nil {
			r.IPs = append(r.IPs, ip)
		} else {
			r.DNS = append(r.DNS, d)
		}
	}
	return c.Issue(t, r)
}

// Client issues a client certificate with common name name and the given
// URI SANs (e.g. "spiffe://test/client").
func (c *CA) Client(t testing.TB, name string, uris ...string) tls.Certificate {
	t.Helper()
	r := certs.Request{Name: name, Client: true}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("certstest: client %q: %v", name, err)
		}
		r.URIs = append(r.URIs, u)
	}
	return c.Issue(t, r)
}

// Issue issues a certificate for r.
func (c *CA) Issue(t testing.TB, r certs.Request) tls.Certificate {
	t.Helper()
	leaf, err := c.CA.Issue(r)
	if err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return leaf.TLSCertificate()
}

// IssueTemplate signs an arbitrary template with c, for a fresh P-256 key,
// so that tests can build certificates Issue refuses to make: expired, a CA,
// without extended key usages, and so on. A nil SerialNumber gets a random
// one; tmpl itself is not modified.
func (c *CA) IssueTemplate(t testing.TB, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("certstest: generate key: %v", err)
	}
	tc := *tmpl
	if tc.SerialNumber == nil {
		if tc.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
			t.Fatalf("certstest: serial number: %v", err)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, &tc, c.Cert, &key.PublicKey, c.Key)
	if err != nil {
		t.Fatalf("certstest: sign template: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("certstest: parse signed template: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}
}

// WriteFiles writes c's certificate (not its key) to dir/ca.crt and returns
// the path, for code under test that takes a trust bundle file.
func (c *CA) WriteFiles(t testing.TB, dir string) (caFile string) {
	t.Helper()
	caFile, _ = certs.CAFiles(dir)
	if err := os.WriteFile(caFile, certs.EncodeCertPEM(c.Cert), 0o644); err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return caFile
}

// WriteKeyPair writes cert's chain to dir/NAME.crt and its key to
// dir/NAME.key (mode 0600) and returns the paths.
func WriteKeyPair(t testing.TB, dir, name string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		t.Fatalf("certstest: write %q: private key %T is not a crypto.Signer", name, cert.PrivateKey)
	}
	keyPEM, err := certs.EncodeKeyPEM(signer)
	if err != nil {
		t.Fatalf("certstest: write %q: %v", name, err)
	}
	var chain []*x509.Certificate
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("certstest: write %q: %v", name, err)
		}
		chain = append(chain, c)
	}
	certFile, keyFile = certs.LeafFiles(dir, name)
	if err := os.WriteFile(certFile, certs.EncodeCertPEM(chain...), 0o644); err != nil {
		t.Fatalf("certstest: %v", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatalf("certstest: %v", err)
	}
	return certFile, keyFile
}
