package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/mtunnel/mtunnel/certs"
)

// Reason names why a handshake or a peer was refused. The values are stable
// strings meant for log attributes and metric labels.
type Reason string

// Reasons a handshake fails or a session is ended by verification.
const (
	ReasonNotTLS           Reason = "not_tls"
	ReasonTimeout          Reason = "handshake_timeout"
	ReasonALPN             Reason = "alpn_mismatch"
	ReasonNoCertificate    Reason = "no_certificate"
	ReasonUnknownAuthority Reason = "unknown_authority"
	ReasonExpired          Reason = "expired"
	ReasonNotYetValid      Reason = "not_yet_valid"
	ReasonWrongUsage       Reason = "wrong_key_usage"
	ReasonNameMismatch     Reason = "name_mismatch"
	ReasonNameConstraints  Reason = "name_constraints"
	ReasonBadChain         Reason = "bad_chain"
	ReasonBadSignature     Reason = "bad_signature"
	ReasonWeakKey          Reason = "weak_key"
	ReasonRevoked          Reason = "revoked"
	ReasonCRLStale         Reason = "crl_stale"
	ReasonOCSPInvalid      Reason = "ocsp_invalid"
	ReasonOCSPUnavailable  Reason = "ocsp_unavailable"
	ReasonPeerRejected     Reason = "rejected_by_peer"
	ReasonPeerClosed       Reason = "peer_closed"
	ReasonUnreachable      Reason = "unreachable" // the TCP connect failed: refused, no route, unknown host
	ReasonProtocol         Reason = "protocol_error"
	// ReasonSessionRefused: the server verified the client but refused
	// the session (the identity's session limit, or the server drains).
	ReasonSessionRefused Reason = "session_refused"
)

// VerifyError is a refusal with its reason.
type VerifyError struct {
	Reason Reason
	Err    error
}

func (e *VerifyError) Error() string { return string(e.Reason) + ": " + e.Err.Error() }
func (e *VerifyError) Unwrap() error { return e.Err }

func refuse(r Reason, format string, args ...any) *VerifyError {
	return &VerifyError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// verifyPeer is the whole check of a peer's certificate chain, in order:
//
//  1. a certificate is there, with a key of an allowed type and size;
//  2. the chain: x509 verification to one of the trusted roots, using the
//     intermediates the peer sent and the configured ones. This checks every
//     signature (MD5 and SHA-1 are refused), basic constraints, path
//     lengths, name constraints, validity periods (with ClockSkew allowed on
//     either side) and the extended key usage of the role;
//  3. what x509 does not check: the leaf must name the role's extended key
//     usage explicitly (x509 lets a leaf without any EKU pass for every
//     role) and its key usage must allow signatures. (A CA whose key usage
//     lacks keyCertSign is refused by x509 itself, in CheckSignatureFrom.)
//  4. for a server: its name, as a DNS or IP SAN; the common name only with
//     LegacyCN, for a certificate with no SAN at all under a chain without
//     name constraints;
//  5. revocation of each certificate on the chain (CRL, OCSP).
//
// staple is the OCSP response the peer stapled, if any.
func (p *TLSPolicy) verifyPeer(peer []*x509.Certificate, staple []byte, usage x509.ExtKeyUsage) error {
	if len(peer) == 0 {
		return refuse(ReasonNoCertificate, "peer sent no certificate")
	}
	leaf := peer[0]
	for _, c := range peer {
		if err := checkKey(c); err != nil {
			return err
		}
	}
	creds := p.Credentials()
	chains, err := p.verifyChain(leaf, peer[1:], creds, usage)
	if err != nil {
		return err
	}
	if !hasEKU(leaf, usage) {
		return refuse(ReasonWrongUsage, "%s does not name the %s extended key usage", subject(leaf), usageName(usage))
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return refuse(ReasonWrongUsage, "%s key usage does not allow digital signatures", subject(leaf))
	}
	var firstErr error
	for _, chain := range chains {
		err := p.checkChain(chain, staple, usage)
		if err == nil {
			return nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// checkChain runs the checks that depend on the chain found: the server
// name and revocation.
func (p *TLSPolicy) checkChain(chain []*x509.Certificate, staple []byte, usage x509.ExtKeyUsage) error {
	if usage == x509.ExtKeyUsageServerAuth {
		if err := p.checkServerName(chain); err != nil {
			return err
		}
	}
	if p.Revocation != nil {
		return p.Revocation.Check(chain, staple)
	}
	return nil
}

// verifyChain runs x509 verification, allowing ClockSkew: a certificate
// that is only just outside its validity is verified at the edge of it.
func (p *TLSPolicy) verifyChain(leaf *x509.Certificate, sent []*x509.Certificate, creds *Credentials, usage x509.ExtKeyUsage) ([][]*x509.Certificate, error) {
	opts := x509.VerifyOptions{
		Roots:         creds.Roots,
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{usage},
		CurrentTime:   p.now(),
	}
	for _, c := range sent {
		opts.Intermediates.AddCert(c)
	}
	for _, c := range creds.Intermediates {
		opts.Intermediates.AddCert(c)
	}
	chains, err := leaf.Verify(opts)
	var invalid x509.CertificateInvalidError
	if err != nil && errors.As(err, &invalid) && invalid.Reason == x509.Expired && invalid.Cert != nil {
		if at, ok := p.withinSkew(invalid.Cert, opts.CurrentTime); ok {
			opts.CurrentTime = at
			chains, err = leaf.Verify(opts)
		}
	}
	if err != nil {
		return nil, &VerifyError{Reason: x509Reason(err, opts.CurrentTime), Err: fmt.Errorf("verify %s: %w", subject(leaf), err)}
	}
	return chains, nil
}

// withinSkew reports whether c is outside its validity at now by no more
// than ClockSkew, and the instant at which it is valid.
func (p *TLSPolicy) withinSkew(c *x509.Certificate, now time.Time) (time.Time, bool) {
	skew := p.clockSkew()
	switch {
	case now.Before(c.NotBefore) && c.NotBefore.Sub(now) <= skew:
		return c.NotBefore, true
	case now.After(c.NotAfter) && now.Sub(c.NotAfter) <= skew:
		return c.NotAfter, true
	}
	return time.Time{}, false
}

// checkServerName matches the server name against the leaf's SANs, and
// against its common name only where LegacyCN allows it.
func (p *TLSPolicy) checkServerName(chain []*x509.Certificate) error {
	leaf := chain[0]
	if p.ServerName == "" {
		return refuse(ReasonNameMismatch, "no server name configured to verify %s against", subject(leaf))
	}
	err := leaf.VerifyHostname(p.ServerName)
	if err == nil {
		return nil
	}
	if !p.LegacyCN {
		return &VerifyError{Reason: ReasonNameMismatch, Err: err}
	}
	switch {
	case hasSAN(leaf):
		return &VerifyError{Reason: ReasonNameMismatch, Err: fmt.Errorf("%w (the common name is only considered for certificates without any SAN)", err)}
	case constrained(chain[1:]):
		// Go applies name constraints to SANs only, so a CN match under a
		// constrained CA would bypass the constraints (FIELD-NOTES).
		return refuse(ReasonNameMismatch, "%s has no SAN and its chain has name constraints: legacy common name matching refused", subject(leaf))
	case !strings.EqualFold(strings.TrimSuffix(leaf.Subject.CommonName, "."), strings.TrimSuffix(p.ServerName, ".")):
		return &VerifyError{Reason: ReasonNameMismatch, Err: fmt.Errorf("%w (legacy common name %q does not match either)", err, leaf.Subject.CommonName)}
	}
	p.logger().Warn("legacy common name match: server certificate has no SAN",
		"server_name", p.ServerName, "cn", leaf.Subject.CommonName)
	return nil
}

func hasSAN(c *x509.Certificate) bool {
	return len(c.DNSNames)+len(c.IPAddresses)+len(c.URIs)+len(c.EmailAddresses) > 0
}

func constrained(cas []*x509.Certificate) bool {
	for _, c := range cas {
		if len(c.PermittedDNSDomains)+len(c.ExcludedDNSDomains)+len(c.PermittedIPRanges)+len(c.ExcludedIPRanges)+
			len(c.PermittedEmailAddresses)+len(c.ExcludedEmailAddresses)+len(c.PermittedURIDomains)+len(c.ExcludedURIDomains) > 0 {
			return true
		}
	}
	return false
}

func hasEKU(c *x509.Certificate, usage x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == usage || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// checkKey refuses key types and sizes below today's floor: RSA under 2048
// bits; ECDSA on curves other than P-256, P-384 and P-521.
func checkKey(c *x509.Certificate) error {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return refuse(ReasonWeakKey, "%s has a %d-bit RSA key (at least 2048 required)", subject(c), k.N.BitLen())
		}
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256, 384, 521:
		default:
			return refuse(ReasonWeakKey, "%s uses an unsupported ECDSA curve", subject(c))
		}
	case ed25519.PublicKey:
	default:
		return refuse(ReasonWeakKey, "%s has an unsupported key type %T", subject(c), k)
	}
	return nil
}

func usageName(u x509.ExtKeyUsage) string {
	if u == x509.ExtKeyUsageServerAuth {
		return "serverAuth"
	}
	return "clientAuth"
}

// subject names c in error messages, as certs.Identity names peers in logs.
func subject(c *x509.Certificate) string { return "certificate " + certs.Identity(c) }

// x509Reason maps an error from x509.Certificate.Verify to a Reason.
func x509Reason(err error, at time.Time) Reason {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var alg x509.InsecureAlgorithmError
	switch {
	case errors.As(err, &unknown):
		return ReasonUnknownAuthority
	case errors.As(err, &host):
		return ReasonNameMismatch
	case errors.As(err, &alg):
		return ReasonBadSignature
	case errors.As(err, &invalid):
		switch invalid.Reason {
		case x509.Expired:
			if invalid.Cert != nil && at.Before(invalid.Cert.NotBefore) {
				return ReasonNotYetValid
			}
			return ReasonExpired
		case x509.IncompatibleUsage, x509.CANotAuthorizedForExtKeyUsage:
			return ReasonWrongUsage
		case x509.CANotAuthorizedForThisName, x509.NameMismatch, x509.NameConstraintsWithoutSANs, x509.UnconstrainedName:
			return ReasonNameConstraints
		}
	}
	return ReasonBadChain
}

// Classify names the reason a handshake failed, for logs and metrics.
func Classify(err error) Reason {
	var verr *VerifyError
	var rec tls.RecordHeaderError
	var op *net.OpError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &verr):
		return verr.Reason
	case errors.As(err, &rec):
		return ReasonNotTLS
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case errors.As(err, &op) && op.Op == "dial":
		return ReasonUnreachable
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, ErrConnAborted), errors.Is(err, net.ErrClosed):
		return ReasonPeerClosed
	case errors.As(err, &op) && op.Op == "remote error":
		// crypto/tls reports an alert from the peer as a *net.OpError
		// with Op "remote error"; the alert type itself is unexported.
		return ReasonPeerRejected
	}
	return ReasonProtocol
}
