package certs

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// DefaultLeafValidity is the validity of a leaf whose Request.ValidFor is
// zero: 90 days, short enough that a leaked key expires on its own and long
// enough that renewal is a quarterly chore rather than a daily one.
const DefaultLeafValidity = 2160 * time.Hour

// Request describes a leaf certificate to issue.
type Request struct {
	Name           string // Subject common name; required, at most 64 bytes
	Server, Client bool   // roles; at least one is required

	DNS  []string   // DNS SANs; a leftmost "*." wildcard label is allowed
	IPs  []net.IP   // IP SANs
	URIs []*url.URL // URI SANs, e.g. spiffe://trust-domain/workload

	// ValidFor is the validity from now; zero means DefaultLeafValidity.
	// NotAfter is capped at the issuing CA's NotAfter.
	ValidFor time.Duration

	// OCSPServer and CRLDistributionPoints are absolute http(s) URLs
	// copied into the Authority Information Access and CRL Distribution
	// Points extensions (RFC 5280 4.2.2.1, 4.2.1.13), where verifiers look
	// for revocation data. Empty means none.
	OCSPServer            []string
	CRLDistributionPoints []string
}

// Leaf is an issued certificate and its private key.
type Leaf struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// TLSCertificate returns l as a tls.Certificate with the Leaf field set.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{l.Cert.Raw},
		PrivateKey:  l.Key,
		Leaf:        l.Cert,
	}
}

// Issue creates a leaf certificate with a fresh ECDSA P-256 key, signed by
// ca. Request problems wrap ErrInvalidRequest.
func (ca *CA) Issue(r Request) (*Leaf, error) {
	if err := ca.check(); err != nil {
		return nil, fmt.Errorf("issue certificate %q: %w", r.Name, err)
	}
	tmpl, err := r.template(ca.Cert, time.Now())
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: %w", r.Name, err)
	}
	cert, key, err := ca.sign(tmpl)
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: %w", r.Name, err)
	}
	return &Leaf{Cert: cert, Key: key}, nil
}

// sign makes a fresh P-256 key and has ca sign tmpl for it, with a fresh
// serial number (and, for a CA certificate, its subject key identifier).
func (ca *CA) sign(tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	if tmpl.IsCA {
		if tmpl.SubjectKeyId, err = subjectKeyID(&key.PublicKey); err != nil {
			return nil, nil, err
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse signed certificate: %w", err)
	}
	return cert, key, nil
}

// template validates r and turns it into a certificate template (without
// serial number) to be signed by ca at time now. Like mkcert's cert.go, the
// profile reads top to bottom.
func (r Request) template(ca *x509.Certificate, now time.Time) (*x509.Certificate, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	validFor := r.ValidFor
	if validFor == 0 {
		validFor = DefaultLeafValidity
	}
	notAfter := now.Add(validFor)
	if now.After(ca.NotAfter) {
		return nil, fmt.Errorf("CA %q expired at %s: %w", Identity(ca), ca.NotAfter.UTC().Format(time.RFC3339), ErrExpired)
	}
	// A leaf cannot outlive its CA in any useful way: chain verification
	// fails once the CA has expired. Capping keeps the date printed on the
	// leaf honest, and lets a leaf be issued with the same validity as a
	// CA created a moment earlier.
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}

	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: r.Name},
		NotBefore: now.Add(-clockSkew),
		NotAfter:  notAfter,
		// With ECDSA the key only ever signs the handshake; it never
		// encrypts a key (KeyEncipherment is for RSA key transport).
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, // and IsCA false: a leaf cannot sign certificates
		DNSNames:              append([]string(nil), r.DNS...),
		IPAddresses:           append([]net.IP(nil), r.IPs...),
		URIs:                  append([]*url.URL(nil), r.URIs...),
		OCSPServer:            append([]string(nil), r.OCSPServer...),
		CRLDistributionPoints: append([]string(nil), r.CRLDistributionPoints...),
	}
	// The extended key usages restrict the leaf to the roles it was issued
	// for: Go's crypto/tls rejects a client certificate without ClientAuth
	// and a server certificate without ServerAuth.
	if r.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if r.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	// Since Go 1.15 hostname verification ignores the Subject common name
	// and looks only at SANs (https://go.dev/doc/go1.15#commonname,
	// golang/go#39568; RFC 6125 6.4.4). A server certificate without a SAN
	// could never be verified, so, as mkcert does, the name becomes a SAN.
	if r.Server && len(r.DNS) == 0 && len(r.IPs) == 0 {
		if ip := net.ParseIP(r.Name); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else if err := checkDNSName(r.Name, false); err != nil {
			return nil, fmt.Errorf("%w: server certificate needs a DNS or IP SAN and name %q is not a valid DNS name (%v); give one explicitly",
				ErrInvalidRequest, r.Name, err)
		} else {
			tmpl.DNSNames = []string{r.Name}
		}
	}
	return tmpl, nil
}

// maxCommonName is ub-common-name from RFC 5280 appendix A.
const maxCommonName = 64

func (r Request) validate() error {
	if r.Name == "" {
		return fmt.Errorf("%w: name (subject common name) is empty", ErrInvalidRequest)
	}
	if len(r.Name) > maxCommonName {
		return fmt.Errorf("%w: name is %d bytes; a common name is at most %d", ErrInvalidRequest, len(r.Name), maxCommonName)
	}
	if !r.Server && !r.Client {
		return fmt.Errorf("%w: no role; set Server, Client or both", ErrInvalidRequest)
	}
	if r.ValidFor < 0 {
		return fmt.Errorf("%w: validity %v is negative", ErrInvalidRequest, r.ValidFor)
	}
	for _, name := range r.DNS {
		if net.ParseIP(name) != nil {
			return fmt.Errorf("%w: DNS name %q is an IP address; give it as an IP SAN", ErrInvalidRequest, name)
		}
		if err := checkDNSName(name, true); err != nil {
			return fmt.Errorf("%w: DNS name %q: %v", ErrInvalidRequest, name, err)
		}
	}
	for i, ip := range r.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("%w: IP SAN #%d is not a valid IPv4 or IPv6 address", ErrInvalidRequest, i+1)
		}
	}
	for i, u := range r.URIs {
		if err := checkURI(u); err != nil {
			return fmt.Errorf("%w: URI SAN #%d: %v", ErrInvalidRequest, i+1, err)
		}
	}
	return checkRevocationURLs(r.OCSPServer, r.CRLDistributionPoints)
}

// checkRevocationURLs checks the OCSP and CRL URLs of a request.
func checkRevocationURLs(ocspServers, crlPoints []string) error {
	for _, s := range ocspServers {
		if err := checkHTTPURL(s); err != nil {
			return fmt.Errorf("%w: OCSP server %q: %v", ErrInvalidRequest, s, err)
		}
	}
	for _, s := range crlPoints {
		if err := checkHTTPURL(s); err != nil {
			return fmt.Errorf("%w: CRL distribution point %q: %v", ErrInvalidRequest, s, err)
		}
	}
	return nil
}

// checkHTTPURL reports why s cannot be an OCSP or CRL URL: verifiers fetch
// those over plain HTTP (RFC 5280 4.2.1.13, RFC 6960 appendix A), so
// anything but an absolute http(s) URL with a host is a mistake.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("is not an http:// or https:// URL")
	}
	if u.Host == "" {
		return errors.New("has no host")
	}
	return nil
}
