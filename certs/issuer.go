package certs

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
)

// ErrNotIssuer reports a certificate that the CA in question did not sign,
// for example one from another certificate directory given to revoke.
var ErrNotIssuer = errors.New("not issued by this CA")

// CheckIssued reports whether ca signed c: the issuer name matches ca's
// subject and the signature verifies with ca's key. The CA's own
// certificate does not count, since a CA cannot revoke itself. The error
// wraps ErrNotIssuer and names c's actual issuer.
func (ca *CA) CheckIssued(c *x509.Certificate) error {
	if ca == nil || ca.Cert == nil || c == nil {
		return errors.New("check issuer: certificate is missing")
	}
	if c.Equal(ca.Cert) {
		return fmt.Errorf("%w: certificate %q is the CA itself", ErrNotIssuer, Identity(c))
	}
	if !signedBy(c, ca.Cert) {
		return fmt.Errorf("%w: certificate %q was issued by %q, not by %q", ErrNotIssuer, Identity(c), c.Issuer.String(), Identity(ca.Cert))
	}
	return nil
}

// IssuerOf returns the certificate among cas that signed c, or nil if none
// did. A self-signed c in cas is its own issuer.
func IssuerOf(c *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if signedBy(c, ca) {
			return ca
		}
	}
	return nil
}

// TrustAnchor returns the CA among roots that chain, ordered leaf first
// as in a certificate file, leads to: the top-most certificate of roots
// reached by following issuers from the chain's last certificate. It
// returns nil when the chain leads to none of them. It checks signatures
// only (not validity, usage or name constraints); call VerifyChain for the
// verdict, and TrustAnchor to tell a human which CA vouched.
func TrustAnchor(chain []*x509.Certificate, roots []*x509.Certificate) *x509.Certificate {
	if len(chain) == 0 {
		return nil
	}
	cur := chain[len(chain)-1]
	var anchor *x509.Certificate
	for _, r := range roots {
		if cur.Equal(r) {
			anchor = r
		}
	}
	for range len(roots) { // each step moves up one CA; this bounds a loop
		next := IssuerOf(cur, roots)
		if next == nil || next.Equal(cur) { // self-signed: the chain ends
			break
		}
		anchor, cur = next, next
	}
	return anchor
}

// signedBy reports whether parent's subject and key issued c.
func signedBy(c, parent *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, parent.RawSubject) && c.CheckSignatureFrom(parent) == nil
}
