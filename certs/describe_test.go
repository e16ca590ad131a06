package certs_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

func TestDescribe(t *testing.T) {
	root := certstest.New(t)
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	// lasting returns a client certificate valid from notBefore to
	// notAfter (relative to now); an extra hour keeps whole-day counts
	// away from rounding.
	lasting := func(notBefore, notAfter time.Duration) *x509.Certificate {
		return root.IssueTemplate(t, &x509.Certificate{
			Subject:   pkix.Name{CommonName: "app"},
			NotBefore: now.Add(notBefore), NotAfter: now.Add(notAfter),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}).Leaf
	}
	full := root.IssueTemplate(t, &x509.Certificate{
		Subject:   pkix.Name{CommonName: "api", Organization: []string{"Example"}},
		NotBefore: now.Add(-day), NotAfter: now.Add(89*day + time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"api.example"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.1")},
		URIs: []*url.URL{mustURL(t, "spiffe://td/api")}, EmailAddresses: []string{"ops@example.com"},
		OCSPServer: []string{"http://ocsp.example/"}, CRLDistributionPoints: []string{"http://crl.example/ca.crl"},
	}).Leaf
	sub, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "corp", PermittedDNS: []string{"corp.example"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		c       *x509.Certificate
		want    []string
		notWant []string
	}{
		{"server and client leaf", full, []string{
			"Subject:", "CN=api,O=Example",
			"Issuer:", "CN=mtunnel test CA",
			"Serial:", certs.SerialString(full.SerialNumber),
			"Validity:", full.NotAfter.UTC().Format("2006-01-02 15:04:05 UTC"), "expires in 89 days",
			"Key:", "ECDSA P-256",
			"Key usage:", "digitalSignature",
			"Extended key usage:", "serverAuth", "clientAuth",
			"CA:                      no",
			"SANs:", "DNS:api.example", "IP:10.0.0.1", "URI:spiffe://td/api", "email:ops@example.com",
			"OCSP responders:         http://ocsp.example/",
			"CRL distribution points: http://crl.example/ca.crl",
			"SHA-256 fingerprint:     " + certs.Fingerprint(full),
		}, []string{"WARNING", "(self-signed)", "Name constraints"}},
		{"expires in 31 days", lasting(-day, 31*day+time.Hour), []string{"expires in 31 days"}, []string{"WARNING"}},
		{"expires in 29 days", lasting(-day, 29*day+time.Hour), []string{"\nWARNING: expires in 29 days"}, nil},
		{"expires in 1 day", lasting(-day, day+time.Hour), []string{"WARNING: expires in 1 day;"}, nil},
		{"expires within hours", lasting(-day, 5*time.Hour), []string{"WARNING: expires in less than a day"}, nil},
		{"expired", lasting(-10*day, -3*day-time.Hour), []string{"EXPIRED 3 days ago"}, []string{"WARNING", "expires in"}},
		{"not valid yet", lasting(2*day+time.Hour, 40*day), []string{"not valid yet (valid in 2 days)"}, []string{"WARNING"}},
		{"intermediate", sub.Cert, []string{
			"CA:                      yes, path length 0: may sign leaf certificates only",
			"Key usage:               keyCertSign, cRLSign",
			"Name constraints:        permitted DNS corp.example (critical)",
			"SANs:                    none",
			"OCSP responders:         none",
		}, []string{"(self-signed)"}},
		{"root", root.Cert, []string{"Issuer:                  CN=mtunnel test CA (self-signed)", "yes, path length unlimited"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := certs.Describe(tt.c, now)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("unexpected %q in:\n%s", w, got)
				}
			}
		})
	}
}

func TestDescribeRSAKey(t *testing.T) {
	root := certstest.New(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: randomSerial(t), Subject: pkix.Name{CommonName: "legacy"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
	}, root.Cert, &key.PublicKey, root.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if got := certs.Describe(c, time.Now()); !strings.Contains(got, "Key:                     RSA 2048 bits") {
		t.Errorf("RSA key not described:\n%s", got)
	}
}

func TestFingerprint(t *testing.T) {
	c := certstest.New(t).Cert
	sum := sha256.Sum256(c.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var pairs []string
	for i := 0; i < len(h); i += 2 {
		pairs = append(pairs, h[i:i+2])
	}
	if got, want := certs.Fingerprint(c), strings.Join(pairs, ":"); got != want {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
}
