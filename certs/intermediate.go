package certs

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// DefaultIntermediateValidity is the validity of an intermediate CA whose
// IntermediateRequest.ValidFor is zero: five years, capped like every
// certificate at the issuing CA's expiry.
const DefaultIntermediateValidity = 5 * 365 * 24 * time.Hour

// IntermediateRequest describes an intermediate (subordinate) CA to issue.
type IntermediateRequest struct {
	Name string // Subject common name; required, at most 64 bytes

	// ValidFor is the validity from now; zero means
	// DefaultIntermediateValidity. NotAfter is capped at the issuing CA's.
	ValidFor time.Duration

	// PermittedDNS restricts the DNS SANs of every certificate below the
	// intermediate to these domains and their subdomains ("example.com");
	// a leading dot (".example.com") allows subdomains only. Empty means
	// no restriction. As RFC 5280 4.2.1.10 specifies, a DNS constraint
	// does not restrict names of other types: IP and URI SANs stay
	// unconstrained.
	PermittedDNS []string

	// MaxPathLen is how many further intermediate CAs may follow this one
	// in a chain. Zero means it may only sign leaves.
	MaxPathLen int

	// OCSPServer and CRLDistributionPoints are absolute http(s) URLs
	// written into the intermediate itself, where verifiers look for its
	// revocation status (RFC 5280 4.2.2.1, 4.2.1.13).
	OCSPServer            []string
	CRLDistributionPoints []string
}

// IssueIntermediate creates an intermediate CA with a fresh ECDSA P-256
// key, signed by ca. The result issues leaves with Issue; agents must then
// present the intermediate after their leaf (see WriteLeafChain), since
// peers trust only the root. Request problems, including a path length
// ca does not allow, wrap ErrInvalidRequest.
func (ca *CA) IssueIntermediate(r IntermediateRequest) (*CA, error) {
	if err := ca.check(); err != nil {
		return nil, fmt.Errorf("issue intermediate CA %q: %w", r.Name, err)
	}
	tmpl, err := r.template(ca.Cert, time.Now())
	if err != nil {
		return nil, fmt.Errorf("issue intermediate CA %q: %w", r.Name, err)
	}
	cert, key, err := ca.sign(tmpl)
	if err != nil {
		return nil, fmt.Errorf("issue intermediate CA %q: %w", r.Name, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// template validates r against its parent and turns it into a certificate
// template without serial number and key identifier.
func (r IntermediateRequest) template(parent *x509.Certificate, now time.Time) (*x509.Certificate, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	if err := checkPathLen(parent, r.MaxPathLen); err != nil {
		return nil, err
	}
	if now.After(parent.NotAfter) {
		return nil, fmt.Errorf("CA %q expired at %s: %w", Identity(parent), parent.NotAfter.UTC().Format(time.RFC3339), ErrExpired)
	}
	validFor := r.ValidFor
	if validFor == 0 {
		validFor = DefaultIntermediateValidity
	}
	// As for leaves: a CA below an expired CA verifies no chain, so its
	// printed expiry should not promise more.
	notAfter := now.Add(validFor)
	if notAfter.After(parent.NotAfter) {
		notAfter = parent.NotAfter
	}

	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: r.Name},
		NotBefore: now.Add(-clockSkew),
		NotAfter:  notAfter,
		// Like the root: signs certificates and CRLs, never a handshake.
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Go encodes MaxPathLen 0 as "no limit" unless MaxPathLenZero is
		// set, which would let a compromised intermediate mint further CAs.
		MaxPathLen:            r.MaxPathLen,
		MaxPathLenZero:        r.MaxPathLen == 0,
		OCSPServer:            append([]string(nil), r.OCSPServer...),
		CRLDistributionPoints: append([]string(nil), r.CRLDistributionPoints...),
	}
	if len(r.PermittedDNS) > 0 {
		tmpl.PermittedDNSDomains = append([]string(nil), r.PermittedDNS...)
		// RFC 5280 4.2.1.10: conforming CAs MUST mark name constraints
		// critical, so that a verifier that does not understand them
		// rejects the chain instead of ignoring the restriction.
		tmpl.PermittedDNSDomainsCritical = true
	}
	return tmpl, nil
}

func (r IntermediateRequest) validate() error {
	switch {
	case r.Name == "":
		return fmt.Errorf("%w: name (subject common name) is empty", ErrInvalidRequest)
	case len(r.Name) > maxCommonName:
		return fmt.Errorf("%w: name is %d bytes; a common name is at most %d", ErrInvalidRequest, len(r.Name), maxCommonName)
	case r.ValidFor < 0:
		return fmt.Errorf("%w: validity %v is negative", ErrInvalidRequest, r.ValidFor)
	case r.MaxPathLen < 0:
		return fmt.Errorf("%w: path length %d is negative", ErrInvalidRequest, r.MaxPathLen)
	}
	for _, d := range r.PermittedDNS {
		if err := checkDNSConstraint(d); err != nil {
			return fmt.Errorf("%w: permitted DNS domain %q: %v", ErrInvalidRequest, d, err)
		}
	}
	return checkRevocationURLs(r.OCSPServer, r.CRLDistributionPoints)
}

// checkDNSConstraint reports why d cannot be a dNSName constraint: a DNS
// name, optionally with one leading dot (subdomains only, the form Go's
// verifier and OpenSSL both understand), and no wildcard, which name
// constraints do not have.
func checkDNSConstraint(d string) error {
	if net.ParseIP(d) != nil {
		return errors.New("is an IP address, not a domain")
	}
	return checkDNSName(strings.TrimPrefix(d, "."), false)
}

// checkPathLen reports whether parent may sign a CA that allows pathLen
// further CAs below it (RFC 5280 4.2.1.9): x509 verification would reject
// the chain otherwise, so refusing early names the actual problem.
func checkPathLen(parent *x509.Certificate, pathLen int) error {
	switch {
	case parent.MaxPathLen == 0 && parent.MaxPathLenZero:
		return fmt.Errorf("%w: CA %q has path length 0: it may sign leaf certificates only, not another CA", ErrInvalidRequest, Identity(parent))
	case parent.MaxPathLen > 0 && pathLen >= parent.MaxPathLen:
		return fmt.Errorf("%w: path length %d: CA %q allows at most %d below the new CA", ErrInvalidRequest, pathLen, Identity(parent), parent.MaxPathLen-1)
	}
	return nil
}
