package certs_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

func TestVerifyChain(t *testing.T) {
	ca, other := certstest.New(t), certstest.New(t)
	inter := intermediate(t, ca)
	deep, err := inter.Issue(certs.Request{Name: "deep", Server: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	expired := ca.IssueTemplate(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "old"},
		NotBefore:   time.Now().Add(-2 * time.Hour),
		NotAfter:    time.Now().Add(-time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	server := ca.Server(t, "api").Leaf
	for _, tt := range []struct {
		name          string
		leaf          *x509.Certificate
		intermediates []*x509.Certificate
		roots         *x509.CertPool
		usage         x509.ExtKeyUsage
		want          error // nil: must verify
	}{
		{"server", server, nil, ca.Pool(), x509.ExtKeyUsageServerAuth, nil},
		{"client", ca.Client(t, "c").Leaf, nil, ca.Pool(), x509.ExtKeyUsageClientAuth, nil},
		{"through intermediate", deep.Cert, []*x509.Certificate{inter.Cert}, ca.Pool(), x509.ExtKeyUsageServerAuth, nil},
		{"other CA", server, nil, other.Pool(), x509.ExtKeyUsageServerAuth, certs.ErrUntrusted},
		{"intermediate missing", deep.Cert, nil, ca.Pool(), x509.ExtKeyUsageServerAuth, certs.ErrUntrusted},
		{"client cert as server", ca.Client(t, "c").Leaf, nil, ca.Pool(), x509.ExtKeyUsageServerAuth, certs.ErrWrongUsage},
		{"server cert as client", server, nil, ca.Pool(), x509.ExtKeyUsageClientAuth, certs.ErrWrongUsage},
		{"expired", expired.Leaf, nil, ca.Pool(), x509.ExtKeyUsageServerAuth, certs.ErrExpired},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := certs.VerifyChain(tt.leaf, tt.intermediates, tt.roots, tt.usage)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyChain: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifyChain = %v, want %v", err, tt.want)
			}
			var x509Err x509.UnknownAuthorityError
			if tt.want == certs.ErrUntrusted && !errors.As(err, &x509Err) {
				t.Errorf("VerifyChain = %v, does not wrap the x509 error", err)
			}
		})
	}
}

func TestVerifyChainRejectsNilRoots(t *testing.T) {
	// x509 would fall back to the system roots; VerifyChain must not.
	leaf := certstest.New(t).Server(t, "api").Leaf
	if err := certs.VerifyChain(leaf, nil, nil, x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("VerifyChain with nil roots succeeded")
	}
	if err := certs.VerifyChain(nil, nil, x509.NewCertPool(), x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("VerifyChain with nil leaf succeeded")
	}
}

func TestIdentity(t *testing.T) {
	for _, tt := range []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"nil", nil, "<no certificate>"},
		{"CN", &x509.Certificate{Subject: pkix.Name{CommonName: "api"}, DNSNames: []string{"ignored"}}, "CN=api"},
		{"CN and URIs", &x509.Certificate{
			Subject: pkix.Name{CommonName: "api"},
			URIs:    []*url.URL{{Scheme: "spiffe", Host: "td", Path: "/x"}, {Scheme: "urn", Opaque: "a:b"}},
		}, "CN=api URI=spiffe://td/x URI=urn:a:b"},
		{"SANs without CN", &x509.Certificate{
			DNSNames:    []string{"a.example", "b.example"},
			IPAddresses: []net.IP{net.ParseIP("10.0.0.1")},
		}, "DNS=a.example DNS=b.example IP=10.0.0.1"},
		{"nothing but a serial", &x509.Certificate{SerialNumber: big.NewInt(255)}, "serial=ff"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := certs.Identity(tt.cert); got != tt.want {
				t.Errorf("Identity = %q, want %q", got, tt.want)
			}
		})
	}
}
