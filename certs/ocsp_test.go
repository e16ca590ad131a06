package certs_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

// ocspSigner makes OCSP responses in Go: about the certificates of issuer
// (the CertID), signed by key, embedding embed (nil for none).
type ocspSigner struct {
	issuer *x509.Certificate
	embed  *x509.Certificate
	key    crypto.Signer
}

func (s ocspSigner) respond(t *testing.T, tmpl ocsp.Response) []byte {
	t.Helper()
	tmpl.Certificate = s.embed
	responderName := s.issuer // CreateResponse takes the ResponderID from it
	if s.embed != nil {
		responderName = s.embed
	}
	der, err := ocsp.CreateResponse(s.issuer, responderName, tmpl, s.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// responderCert issues a delegated OCSP responder certificate from ca.
func responderCert(t *testing.T, ca *certstest.CA, eku []x509.ExtKeyUsage, notBefore, notAfter time.Time) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	c := ca.IssueTemplate(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "ocsp responder"},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: eku,
	})
	return c.Leaf, c.PrivateKey.(crypto.Signer)
}

func TestVerifyOCSPResponse(t *testing.T) {
	ca := certstest.New(t)
	other := certstest.New(t)
	leaf := ca.Client(t, "app").Leaf
	now := time.Now()
	good := ocsp.Response{Status: ocsp.Good, SerialNumber: leaf.SerialNumber, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}

	signing := []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	delegated, delegatedKey := responderCert(t, ca, signing, now.Add(-time.Hour), now.Add(time.Hour))
	noEKU, noEKUKey := responderCert(t, ca, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, now.Add(-time.Hour), now.Add(time.Hour))
	anyEKU, anyEKUKey := responderCert(t, ca, []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, now.Add(-time.Hour), now.Add(time.Hour))
	expired, expiredKey := responderCert(t, ca, signing, now.Add(-2*time.Hour), now.Add(-time.Hour))
	foreign, foreignKey := responderCert(t, other, signing, now.Add(-time.Hour), now.Add(time.Hour))
	// The CA's own key under another name: the key hash matches, the name
	// hash does not.
	renamed := selfSigned(t, ca, "not the CA")

	byCA := ocspSigner{issuer: ca.Cert, key: ca.Key}
	with := func(f func(*ocsp.Response)) ocsp.Response {
		r := good
		f(&r)
		return r
	}
	tests := []struct {
		name    string
		der     []byte
		want    certs.OCSPStatus
		wantErr error
	}{
		{"signed by the CA", byCA.respond(t, good), certs.OCSPGood, nil},
		{"signed by the CA, CA certificate embedded", ocspSigner{ca.Cert, ca.Cert, ca.Key}.respond(t, good), certs.OCSPGood, nil},
		{"SHA-256 CertID", byCA.respond(t, with(func(r *ocsp.Response) { r.IssuerHash = crypto.SHA256 })), certs.OCSPGood, nil},
		{"delegated responder with OCSPSigning", ocspSigner{ca.Cert, delegated, delegatedKey}.respond(t, good), certs.OCSPGood, nil},
		{"unknown", byCA.respond(t, with(func(r *ocsp.Response) { r.Status = ocsp.Unknown })), certs.OCSPUnknown, nil},
		{"thisUpdate within skew", byCA.respond(t, with(func(r *ocsp.Response) { r.ThisUpdate = now.Add(30 * time.Second) })), certs.OCSPGood, nil},
		{"no nextUpdate, an hour old", byCA.respond(t, with(func(r *ocsp.Response) {
			r.ThisUpdate, r.NextUpdate = now.Add(-time.Hour), time.Time{}
		})), certs.OCSPGood, nil},

		{"delegated responder without OCSPSigning", ocspSigner{ca.Cert, noEKU, noEKUKey}.respond(t, good), 0, certs.ErrOCSPInvalid},
		{"delegated responder with anyExtendedKeyUsage", ocspSigner{ca.Cert, anyEKU, anyEKUKey}.respond(t, good), 0, certs.ErrOCSPInvalid},
		{"delegated responder expired", ocspSigner{ca.Cert, expired, expiredKey}.respond(t, good), 0, certs.ErrOCSPInvalid},
		{"delegated responder of another CA", ocspSigner{ca.Cert, foreign, foreignKey}.respond(t, good), 0, certs.ErrOCSPInvalid},
		{"signed by another CA", ocspSigner{ca.Cert, nil, other.Key}.respond(t, good), 0, certs.ErrOCSPInvalid},
		{"signed by another CA, embedded", ocspSigner{ca.Cert, other.Cert, other.Key}.respond(t, good), 0, certs.ErrOCSPInvalid},
		{"stale nextUpdate", byCA.respond(t, with(func(r *ocsp.Response) {
			r.ThisUpdate, r.NextUpdate = now.Add(-2*time.Hour), now.Add(-2*time.Minute)
		})), 0, certs.ErrOCSPInvalid},
		{"no nextUpdate, over a day old", byCA.respond(t, with(func(r *ocsp.Response) {
			r.ThisUpdate, r.NextUpdate = now.Add(-25*time.Hour), time.Time{}
		})), 0, certs.ErrOCSPInvalid},
		{"future thisUpdate", byCA.respond(t, with(func(r *ocsp.Response) { r.ThisUpdate = now.Add(5 * time.Minute) })), 0, certs.ErrOCSPInvalid},
		{"nextUpdate before thisUpdate", byCA.respond(t, with(func(r *ocsp.Response) { r.NextUpdate = now.Add(-2 * time.Minute) })), 0, certs.ErrOCSPInvalid},
		{"wrong serial", byCA.respond(t, with(func(r *ocsp.Response) { r.SerialNumber = big.NewInt(42) })), 0, certs.ErrOCSPInvalid},
		{"issuer hashes of another CA", ocspSigner{other.Cert, nil, ca.Key}.respond(t, good), 0, certs.ErrOCSPInvalid},
		{"issuer name hash mismatch", ocspSigner{renamed, nil, ca.Key}.respond(t, good), 0, certs.ErrOCSPInvalid},
		{"tryLater", ocsp.TryLaterErrorResponse, 0, certs.ErrOCSPUnavailable},
		{"internalError", ocsp.InternalErrorErrorResponse, 0, certs.ErrOCSPUnavailable},
		{"unauthorized", ocsp.UnauthorizedErrorResponse, 0, certs.ErrOCSPInvalid},
		{"malformedRequest", ocsp.MalformedRequestErrorResponse, 0, certs.ErrOCSPInvalid},
		{"garbage", []byte("<html>hello</html>"), 0, certs.ErrOCSPInvalid},
		{"empty", nil, 0, certs.ErrOCSPInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := certs.VerifyOCSPResponse(tt.der, leaf, ca.Cert, now, time.Minute)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tt.want || string(res.Raw) != string(tt.der) {
				t.Errorf("status %v, want %v (raw kept: %v)", res.Status, tt.want, string(res.Raw) == string(tt.der))
			}
		})
	}
}

func TestVerifyOCSPResponseRevoked(t *testing.T) {
	ca := certstest.New(t)
	leaf := ca.Client(t, "app").Leaf
	now := time.Now().Truncate(time.Second)
	der := ocspSigner{issuer: ca.Cert, key: ca.Key}.respond(t, ocsp.Response{
		Status: ocsp.Revoked, SerialNumber: leaf.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(time.Hour),
		RevokedAt: now.Add(-time.Hour), RevocationReason: ocsp.KeyCompromise,
	})
	res, err := certs.VerifyOCSPResponse(der, leaf, ca.Cert, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != certs.OCSPRevoked || res.Reason != 1 || !res.RevokedAt.Equal(now.Add(-time.Hour)) ||
		!res.ThisUpdate.Equal(now) || !res.NextUpdate.Equal(now.Add(time.Hour)) {
		t.Errorf("result %+v", res)
	}
}

// An issuer that did not issue the certificate is the caller's mistake,
// even when the response is a valid one about that issuer's certificate of
// the same serial number.
func TestVerifyOCSPResponseWrongIssuer(t *testing.T) {
	ca, other := certstest.New(t), certstest.New(t) // both "mtunnel test CA"
	leaf := ca.Client(t, "app").Leaf
	now := time.Now()
	der := ocspSigner{issuer: other.Cert, key: other.Key}.respond(t, ocsp.Response{
		Status: ocsp.Good, SerialNumber: leaf.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(time.Hour),
	})
	for _, issuer := range []*x509.Certificate{other.Cert, selfSigned(t, other, "someone else")} {
		_, err := certs.VerifyOCSPResponse(der, leaf, issuer, now, 0)
		if err == nil || errors.Is(err, certs.ErrOCSPInvalid) || errors.Is(err, certs.ErrOCSPUnavailable) {
			t.Errorf("issuer %q: err = %v, want a caller error", issuer.Subject.CommonName, err)
		}
	}
}

// selfSigned returns a CA certificate for ca's key with another subject.
func selfSigned(t *testing.T, ca *certstest.CA, name string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ca.Key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Request.OCSPServer and CRLDistributionPoints end up in the certificate,
// and only absolute http(s) URLs are accepted.
func TestRequestRevocationURLs(t *testing.T) {
	ca := certstest.New(t)
	r := certs.Request{Name: "app", Client: true,
		OCSPServer: []string{"http://ocsp.example:8080"}, CRLDistributionPoints: []string{"http://crl.example/ca.crl"}}
	leaf := ca.Issue(t, r).Leaf
	if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != r.OCSPServer[0] ||
		len(leaf.CRLDistributionPoints) != 1 || leaf.CRLDistributionPoints[0] != r.CRLDistributionPoints[0] {
		t.Errorf("certificate has OCSP %q and CRL %q, want %q and %q", leaf.OCSPServer, leaf.CRLDistributionPoints, r.OCSPServer, r.CRLDistributionPoints)
	}
	for _, bad := range []string{"ocsp.example", "ldap://ocsp.example", "http://", "http:///path"} {
		if _, err := ca.CA.Issue(certs.Request{Name: "app", Client: true, OCSPServer: []string{bad}}); !errors.Is(err, certs.ErrInvalidRequest) {
			t.Errorf("OCSP server %q: err = %v, want ErrInvalidRequest", bad, err)
		}
		if _, err := ca.CA.Issue(certs.Request{Name: "app", Client: true, CRLDistributionPoints: []string{bad}}); !errors.Is(err, certs.ErrInvalidRequest) {
			t.Errorf("CRL distribution point %q: err = %v, want ErrInvalidRequest", bad, err)
		}
	}
}

func TestDescribeOCSP(t *testing.T) {
	ca := certstest.New(t)
	leaf := ca.Client(t, "app").Leaf
	now := time.Now().Truncate(time.Second)
	der := ocspSigner{issuer: ca.Cert, key: ca.Key}.respond(t, ocsp.Response{
		Status: ocsp.Good, SerialNumber: leaf.SerialNumber, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
	})
	info, err := certs.DescribeOCSP(der)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != certs.OCSPGood || !info.ThisUpdate.Equal(now.Add(-time.Minute)) || !info.NextUpdate.Equal(now.Add(time.Hour)) {
		t.Errorf("info %+v", info)
	}
	if _, err := certs.DescribeOCSP([]byte("not an OCSP response")); err == nil {
		t.Error("garbage described without an error")
	}
}
