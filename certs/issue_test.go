package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

func TestNewCA(t *testing.T) {
	before := time.Now()
	ca, err := certs.NewCA("test root", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if !c.BasicConstraintsValid || !c.IsCA {
		t.Error("CA certificate lacks BasicConstraints CA:true")
	}
	if c.MaxPathLen > 0 || c.MaxPathLenZero {
		t.Errorf("path length limited: MaxPathLen=%d MaxPathLenZero=%v", c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, want)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Error("SubjectKeyId not set")
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %x is not a positive 128-bit number", c.SerialNumber)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key %T is not ECDSA P-256", c.PublicKey)
	}
	if !c.NotBefore.Before(before) || c.NotAfter.Before(before.Add(24*time.Hour-time.Second)) {
		t.Errorf("validity %v..%v does not cover now..now+24h", c.NotBefore, c.NotAfter)
	}
}

func TestNewCAInvalid(t *testing.T) {
	for _, tt := range []struct {
		name     string
		cn       string
		validFor time.Duration
	}{
		{"empty name", "", time.Hour},
		{"zero validity", "x", 0},
		{"negative validity", "x", -time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := certs.NewCA(tt.cn, tt.validFor); err == nil {
				t.Error("NewCA succeeded, want error")
			}
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestIssueProfiles(t *testing.T) {
	ca := certstest.New(t)
	spiffe := mustURL(t, "spiffe://td/api")
	for _, tt := range []struct {
		name     string
		req      certs.Request
		eku      []x509.ExtKeyUsage
		dns      []string
		ips      []string
		uris     []string
		validFor time.Duration
	}{
		{
			name:     "server defaults name to DNS SAN",
			req:      certs.Request{Name: "api.internal", Server: true},
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			dns:      []string{"api.internal"},
			validFor: certs.DefaultLeafValidity,
		},
		{
			name:     "server named by IP gets IP SAN",
			req:      certs.Request{Name: "10.1.2.3", Server: true},
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			ips:      []string{"10.1.2.3"},
			validFor: certs.DefaultLeafValidity,
		},
		{
			name:     "server with explicit SANs keeps only them",
			req:      certs.Request{Name: "api", Server: true, DNS: []string{"a.example", "*.b.example"}, IPs: []net.IP{net.ParseIP("::1")}},
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			dns:      []string{"a.example", "*.b.example"},
			ips:      []string{"::1"},
			validFor: certs.DefaultLeafValidity,
		},
		{
			name:     "server with only IP SAN gets no DNS SAN",
			req:      certs.Request{Name: "api", Server: true, IPs: []net.IP{net.ParseIP("127.0.0.1")}},
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			ips:      []string{"127.0.0.1"},
			validFor: certs.DefaultLeafValidity,
		},
		{
			name:     "client has no default SAN",
			req:      certs.Request{Name: "laptop", Client: true, ValidFor: time.Hour},
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			validFor: time.Hour,
		},
		{
			name:     "client with URI",
			req:      certs.Request{Name: "api", Client: true, URIs: []*url.URL{spiffe}},
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			uris:     []string{"spiffe://td/api"},
			validFor: certs.DefaultLeafValidity,
		},
		{
			name:     "both roles",
			req:      certs.Request{Name: "node1", Server: true, Client: true, ValidFor: 48 * time.Hour},
			eku:      []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			dns:      []string{"node1"},
			validFor: 48 * time.Hour,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			leaf, err := ca.CA.Issue(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			c := leaf.Cert
			if c.Subject.CommonName != tt.req.Name {
				t.Errorf("CN = %q, want %q", c.Subject.CommonName, tt.req.Name)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.eku) {
				t.Errorf("ExtKeyUsage = %v, want %v", c.ExtKeyUsage, tt.eku)
			}
			if c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("KeyUsage = %v, want DigitalSignature", c.KeyUsage)
			}
			if c.IsCA {
				t.Error("leaf is a CA")
			}
			if !slices.Equal(c.DNSNames, tt.dns) {
				t.Errorf("DNSNames = %q, want %q", c.DNSNames, tt.dns)
			}
			var ips, uris []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			for _, u := range c.URIs {
				uris = append(uris, u.String())
			}
			if !slices.Equal(ips, tt.ips) {
				t.Errorf("IPAddresses = %q, want %q", ips, tt.ips)
			}
			if !slices.Equal(uris, tt.uris) {
				t.Errorf("URIs = %q, want %q", uris, tt.uris)
			}
			// NotBefore is backdated a minute for clock skew; times in
			// certificates have second precision.
			if skew := before.Sub(c.NotBefore); skew < 59*time.Second || skew > 62*time.Second {
				t.Errorf("NotBefore is %v before issuance, want about 1m", skew)
			}
			if got := c.NotAfter.Sub(before); got < tt.validFor-time.Second || got > tt.validFor+2*time.Second {
				t.Errorf("NotAfter is %v after issuance, want %v", got, tt.validFor)
			}
			if !slices.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) {
				t.Error("AuthorityKeyId does not match the CA's SubjectKeyId")
			}
			if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() || !pub.Equal(leaf.Key.Public()) {
				t.Error("public key is not the leaf's P-256 key")
			}
			usage := tt.eku[0]
			if err := certs.VerifyChain(c, nil, ca.Pool(), usage); err != nil {
				t.Errorf("VerifyChain: %v", err)
			}
			if tc := leaf.TLSCertificate(); tc.Leaf != c || len(tc.Certificate) != 1 || tc.PrivateKey != leaf.Key {
				t.Error("TLSCertificate does not carry the leaf and its key")
			}
		})
	}
}

func TestIssueInvalid(t *testing.T) {
	ca := certstest.New(t)
	for _, tt := range []struct {
		name string
		req  certs.Request
	}{
		{"no role", certs.Request{Name: "x"}},
		{"empty name", certs.Request{Server: true, DNS: []string{"x"}}},
		{"name too long", certs.Request{Name: string(make([]byte, 65)), Client: true}},
		{"negative validity", certs.Request{Name: "x", Client: true, ValidFor: -time.Hour}},
		{"server name not a host name", certs.Request{Name: "my api", Server: true}},
		{"IP as DNS", certs.Request{Name: "x", Server: true, DNS: []string{"10.0.0.1"}}},
		{"DNS with space", certs.Request{Name: "x", Server: true, DNS: []string{"a b"}}},
		{"DNS empty label", certs.Request{Name: "x", Server: true, DNS: []string{"a..b"}}},
		{"DNS trailing dot", certs.Request{Name: "x", Server: true, DNS: []string{"a.b."}}},
		{"DNS hyphen", certs.Request{Name: "x", Server: true, DNS: []string{"-a.b"}}},
		{"DNS inner wildcard", certs.Request{Name: "x", Server: true, DNS: []string{"a.*.b"}}},
		{"DNS bare wildcard", certs.Request{Name: "x", Server: true, DNS: []string{"*"}}},
		{"DNS non-ASCII", certs.Request{Name: "x", Server: true, DNS: []string{"bücher.example"}}},
		{"bad IP", certs.Request{Name: "x", Server: true, IPs: []net.IP{{1, 2, 3}}}},
		{"nil URI", certs.Request{Name: "x", Client: true, URIs: []*url.URL{nil}}},
		{"relative URI", certs.Request{Name: "x", Client: true, URIs: []*url.URL{mustURL(t, "td/api")}}},
		{"URI bad host", certs.Request{Name: "x", Client: true, URIs: []*url.URL{mustURL(t, "spiffe://a..b/x")}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := ca.CA.Issue(tt.req)
			if !errors.Is(err, certs.ErrInvalidRequest) {
				t.Fatalf("Issue = %v, %v; want ErrInvalidRequest", leaf, err)
			}
		})
	}
}

func TestIssueCapsValidityAtCA(t *testing.T) {
	ca, err := certs.NewCA("short", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The same validity as the CA, a moment later, and far beyond it.
	for _, validFor := range []time.Duration{time.Hour, 0, 20 * 365 * 24 * time.Hour} {
		leaf, err := ca.Issue(certs.Request{Name: "x", Client: true, ValidFor: validFor})
		if err != nil {
			t.Fatalf("ValidFor %v: %v", validFor, err)
		}
		if !leaf.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
			t.Errorf("ValidFor %v: NotAfter %v, want the CA's %v", validFor, leaf.Cert.NotAfter, ca.Cert.NotAfter)
		}
	}
}

func TestIssueExpiredCA(t *testing.T) {
	ca := certstest.New(t)
	expired := ca.IssueTemplate(t, &x509.Certificate{
		NotBefore:             time.Now().Add(-2 * time.Hour),
		NotAfter:              time.Now().Add(-time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
	})
	sub := &certs.CA{Cert: expired.Leaf, Key: expired.PrivateKey.(*ecdsa.PrivateKey)}
	if _, err := sub.Issue(certs.Request{Name: "x", Client: true}); !errors.Is(err, certs.ErrExpired) {
		t.Errorf("Issue from expired CA = %v, want ErrExpired", err)
	}
}
