package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

// oidNameConstraints is id-ce-nameConstraints (RFC 5280 4.2.1.10).
var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

func TestIssueIntermediate(t *testing.T) {
	root := certstest.New(t)
	tests := []struct {
		name     string
		req      certs.IntermediateRequest
		wantZero bool // MaxPathLenZero: leaves only
	}{
		{"leaves only, constrained", certs.IntermediateRequest{Name: "corp", PermittedDNS: []string{"corp.example", ".svc.example"}}, true},
		{"one CA level below", certs.IntermediateRequest{Name: "mid", MaxPathLen: 1}, false},
		{"revocation URLs", certs.IntermediateRequest{Name: "urls",
			OCSPServer: []string{"http://ocsp.example/"}, CRLDistributionPoints: []string{"http://crl.example/root.crl"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			sub, err := root.IssueIntermediate(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			c := sub.Cert
			if !c.BasicConstraintsValid || !c.IsCA {
				t.Error("not a CA")
			}
			if c.MaxPathLen != tt.req.MaxPathLen || c.MaxPathLenZero != tt.wantZero {
				t.Errorf("MaxPathLen=%d MaxPathLenZero=%v, want %d %v", c.MaxPathLen, c.MaxPathLenZero, tt.req.MaxPathLen, tt.wantZero)
			}
			if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
				t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, want)
			}
			if c.Subject.CommonName != tt.req.Name {
				t.Errorf("CN = %q, want %q", c.Subject.CommonName, tt.req.Name)
			}
			if !slices.Equal(c.PermittedDNSDomains, tt.req.PermittedDNS) {
				t.Errorf("PermittedDNSDomains = %q, want %q", c.PermittedDNSDomains, tt.req.PermittedDNS)
			}
			if got, want := nameConstraintsCritical(c), len(tt.req.PermittedDNS) > 0; got != want {
				t.Errorf("critical name constraints extension: %v, want %v", got, want)
			}
			if !slices.Equal(c.OCSPServer, tt.req.OCSPServer) || !slices.Equal(c.CRLDistributionPoints, tt.req.CRLDistributionPoints) {
				t.Errorf("OCSP %q CRL %q, want %q %q", c.OCSPServer, c.CRLDistributionPoints, tt.req.OCSPServer, tt.req.CRLDistributionPoints)
			}
			if len(c.SubjectKeyId) == 0 || !slices.Equal(c.AuthorityKeyId, root.Cert.SubjectKeyId) {
				t.Errorf("SubjectKeyId %x, AuthorityKeyId %x (root's %x)", c.SubjectKeyId, c.AuthorityKeyId, root.Cert.SubjectKeyId)
			}
			if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key %T is not ECDSA P-256", c.PublicKey)
			}
			if err := c.CheckSignatureFrom(root.Cert); err != nil {
				t.Errorf("not signed by the root: %v", err)
			}
			wantAfter := before.Add(certs.DefaultIntermediateValidity)
			if c.NotAfter.Before(wantAfter.Add(-time.Second)) || c.NotAfter.After(wantAfter.Add(time.Minute)) {
				t.Errorf("NotAfter %v, want about %v", c.NotAfter, wantAfter)
			}
		})
	}
}

func nameConstraintsCritical(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidNameConstraints) {
			return e.Critical
		}
	}
	return false
}

// TestIntermediateLeaves checks that leaves from an intermediate verify
// against the root only with the intermediate supplied, and only for names
// its constraints permit.
func TestIntermediateLeaves(t *testing.T) {
	root := certstest.New(t)
	sub, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "corp", PermittedDNS: []string{"corp.example"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		dns          []string
		intermediate bool
		want         error               // nil, or a sentinel VerifyChain wraps
		wantReason   *x509.InvalidReason // for a CertificateInvalidError
	}{
		{"permitted subdomain", []string{"api.corp.example"}, true, nil, nil},
		{"permitted domain itself", []string{"corp.example"}, true, nil, nil},
		{"outside permitted DNS", []string{"api.evil.example"}, true, nil, ptr(x509.CANotAuthorizedForThisName)},
		{"suffix without a dot", []string{"evilcorp.example"}, true, nil, ptr(x509.CANotAuthorizedForThisName)},
		{"one name of two outside", []string{"a.corp.example", "b.example"}, true, nil, ptr(x509.CANotAuthorizedForThisName)},
		{"intermediate not supplied", []string{"api.corp.example"}, false, certs.ErrUntrusted, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := sub.Issue(certs.Request{Name: "api", Server: true, DNS: tt.dns})
			if err != nil {
				t.Fatal(err)
			}
			var chain []*x509.Certificate
			if tt.intermediate {
				chain = []*x509.Certificate{sub.Cert}
			}
			err = certs.VerifyChain(leaf.Cert, chain, root.Pool(), x509.ExtKeyUsageServerAuth)
			var invalid x509.CertificateInvalidError
			switch {
			case tt.want == nil && tt.wantReason == nil:
				if err != nil {
					t.Errorf("VerifyChain: %v", err)
				}
			case tt.want != nil:
				if !errors.Is(err, tt.want) {
					t.Errorf("VerifyChain error %v, want %v", err, tt.want)
				}
			case !errors.As(err, &invalid) || invalid.Reason != *tt.wantReason:
				t.Errorf("VerifyChain error %v, want x509 reason %d", err, *tt.wantReason)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestIntermediatePathLen checks that path lengths are requested as asked,
// refused when the parent cannot allow them, and enforced by x509.
func TestIntermediatePathLen(t *testing.T) {
	root := certstest.New(t)
	mid, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "mid", MaxPathLen: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mid.IssueIntermediate(certs.IntermediateRequest{Name: "too deep", MaxPathLen: 1}); !errors.Is(err, certs.ErrInvalidRequest) {
		t.Errorf("path length 1 under path length 1: error %v, want ErrInvalidRequest", err)
	}
	sub, err := mid.IssueIntermediate(certs.IntermediateRequest{Name: "sub"})
	if err != nil {
		t.Fatalf("path length 0 under path length 1: %v", err)
	}
	if _, err := sub.IssueIntermediate(certs.IntermediateRequest{Name: "below leaves-only"}); !errors.Is(err, certs.ErrInvalidRequest) {
		t.Errorf("CA under a path-length-0 CA: error %v, want ErrInvalidRequest", err)
	}
	leaf, err := sub.Issue(certs.Request{Name: "app", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.VerifyChain(leaf.Cert, []*x509.Certificate{sub.Cert, mid.Cert}, root.Pool(), x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("leaf two intermediates down: %v", err)
	}

	// A CA signed by sub anyway, bypassing IssueIntermediate: verifiers
	// must refuse the chain, which shows that path length 0 is encoded
	// (Go writes MaxPathLen 0 without MaxPathLenZero as "unlimited").
	rogueKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rogueDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: randomSerial(t), Subject: pkix.Name{CommonName: "rogue"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}, sub.Cert, &rogueKey.PublicKey, sub.Key)
	if err != nil {
		t.Fatal(err)
	}
	rogueCert, err := x509.ParseCertificate(rogueDER)
	if err != nil {
		t.Fatal(err)
	}
	rogue := &certs.CA{Cert: rogueCert, Key: rogueKey}
	rogueLeaf, err := rogue.Issue(certs.Request{Name: "app", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	err = certs.VerifyChain(rogueLeaf.Cert, []*x509.Certificate{rogueCert, sub.Cert, mid.Cert}, root.Pool(), x509.ExtKeyUsageClientAuth)
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.TooManyIntermediates {
		t.Errorf("leaf of a CA below a path-length-0 CA: error %v, want TooManyIntermediates", err)
	}
}

func randomSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func TestIssueIntermediateCapsValidity(t *testing.T) {
	root, err := certs.NewCA("short root", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "sub", ValidFor: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Cert.NotAfter.Equal(root.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want the root's %v", sub.Cert.NotAfter, root.Cert.NotAfter)
	}
}

func TestIssueIntermediateInvalid(t *testing.T) {
	root := certstest.New(t)
	long := string(make([]byte, 65))
	tests := []struct {
		name string
		req  certs.IntermediateRequest
	}{
		{"empty name", certs.IntermediateRequest{}},
		{"long name", certs.IntermediateRequest{Name: long}},
		{"negative validity", certs.IntermediateRequest{Name: "x", ValidFor: -time.Hour}},
		{"negative path length", certs.IntermediateRequest{Name: "x", MaxPathLen: -1}},
		{"wildcard constraint", certs.IntermediateRequest{Name: "x", PermittedDNS: []string{"*.corp.example"}}},
		{"IP as DNS constraint", certs.IntermediateRequest{Name: "x", PermittedDNS: []string{"10.0.0.1"}}},
		{"empty label in constraint", certs.IntermediateRequest{Name: "x", PermittedDNS: []string{"corp..example"}}},
		{"two leading dots", certs.IntermediateRequest{Name: "x", PermittedDNS: []string{"..corp.example"}}},
		{"OCSP not http", certs.IntermediateRequest{Name: "x", OCSPServer: []string{"ldap://ocsp.example"}}},
		{"CRL without host", certs.IntermediateRequest{Name: "x", CRLDistributionPoints: []string{"http:///ca.crl"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := root.IssueIntermediate(tt.req); !errors.Is(err, certs.ErrInvalidRequest) {
				t.Errorf("error %v, want ErrInvalidRequest", err)
			}
		})
	}
}

func TestIssueIntermediateBadParent(t *testing.T) {
	root := certstest.New(t)
	leaf := root.Client(t, "app")
	expired := root.IssueTemplate(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "expired CA"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	})
	tests := []struct {
		name   string
		parent *certs.CA
		want   error
	}{
		{"leaf as parent", &certs.CA{Cert: leaf.Leaf, Key: leaf.PrivateKey.(*ecdsa.PrivateKey)}, certs.ErrNotCA},
		{"key of another CA", &certs.CA{Cert: root.Cert, Key: leaf.PrivateKey.(*ecdsa.PrivateKey)}, certs.ErrKeyMismatch},
		{"expired parent", &certs.CA{Cert: expired.Leaf, Key: expired.PrivateKey.(*ecdsa.PrivateKey)}, certs.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.parent.IssueIntermediate(certs.IntermediateRequest{Name: "sub"}); !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
		})
	}
}
