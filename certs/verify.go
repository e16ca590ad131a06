package certs

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// VerifyChain checks that leaf chains, through intermediates, to a CA in
// roots, that every certificate on the way is within its validity period,
// and that the chain allows usage (x509.ExtKeyUsageServerAuth for a server
// certificate, x509.ExtKeyUsageClientAuth for a client one). Agents call it
// at start-up so that a certificate their peers would reject fails early and
// in plain words. The error wraps ErrUntrusted, ErrExpired or ErrWrongUsage
// when it is one of those, and the underlying x509 error.
//
// roots must not be nil: x509 would then fall back to the system roots,
// which never vouch for an mtunnel CA and must not vouch for a peer.
func VerifyChain(leaf *x509.Certificate, intermediates []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if leaf == nil {
		return errors.New("verify certificate: certificate is missing")
	}
	if roots == nil {
		return fmt.Errorf("verify certificate %q: trust bundle is missing", Identity(leaf))
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
		CurrentTime:   time.Now(),
	}
	for _, c := range intermediates {
		opts.Intermediates.AddCert(c)
	}
	_, err := leaf.Verify(opts)
	if err == nil {
		return nil
	}
	id := Identity(leaf)
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("certificate %q is %w: %w", id, ErrUntrusted, err)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return fmt.Errorf("certificate %q or its chain is %w: %w", id, ErrExpired, err)
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return fmt.Errorf("certificate %q is %w: it lacks the %s extended key usage: %w", id, ErrWrongUsage, usageName(usage), err)
	}
	return fmt.Errorf("verify certificate %q: %w", id, err)
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageServerAuth:
		return "server authentication (ServerAuth)"
	case x509.ExtKeyUsageClientAuth:
		return "client authentication (ClientAuth)"
	}
	return fmt.Sprintf("extended key usage #%d", u)
}

// Identity returns a short identity of c for humans and logs: the subject
// common name followed by any URI SANs, e.g. "CN=api URI=spiffe://td/api".
// Without a common name it lists the DNS and IP SANs instead; without those,
// the serial number. It never includes key material.
func Identity(c *x509.Certificate) string {
	if c == nil {
		return "<no certificate>"
	}
	var parts []string
	if cn := c.Subject.CommonName; cn != "" {
		parts = append(parts, "CN="+cn)
	} else {
		for _, d := range c.DNSNames {
			parts = append(parts, "DNS="+d)
		}
		for _, ip := range c.IPAddresses {
			parts = append(parts, "IP="+ip.String())
		}
	}
	for _, u := range c.URIs {
		parts = append(parts, "URI="+u.String())
	}
	if len(parts) == 0 && c.SerialNumber != nil {
		parts = append(parts, fmt.Sprintf("serial=%x", c.SerialNumber))
	}
	return strings.Join(parts, " ")
}
