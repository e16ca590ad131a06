package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Reason names why a handshake or a peer was refused. The values are stable
// strings meant for log attributes and metric labels.
type Reason string

// Reasons a handshake fails.
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
	ReasonPeerRejected     Reason = "rejected_by_peer"
	ReasonPeerClosed       Reason = "peer_closed"
	ReasonProtocol         Reason = "protocol_error"
)

// VerifyError is a refusal with its reason.
type VerifyError struct {
	Reason Reason
	Err    error
}

func (e *VerifyError) Error() string { return string(e.Reason) + ": " + e.Err.Error() }
func (e *VerifyError) Unwrap() error { return e.Err }

// verifyPeer is the whole check of a peer: the protocol, the presence of a
// certificate, the chain to one of roots (signatures, basic and name
// constraints, validity period, extended key usage for the peer's role) and,
// when verifying a server, its name.
func verifyPeer(cs tls.ConnectionState, roots *x509.CertPool, usage x509.ExtKeyUsage, serverName string) error {
	if cs.NegotiatedProtocol != ALPN {
		return &VerifyError{Reason: ReasonALPN, Err: fmt.Errorf("peer negotiated ALPN %q, want %q", cs.NegotiatedProtocol, ALPN)}
	}
	if len(cs.PeerCertificates) == 0 {
		return &VerifyError{Reason: ReasonNoCertificate, Err: errors.New("peer sent no certificate")}
	}
	leaf := cs.PeerCertificates[0]
	intermediates := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		intermediates.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return &VerifyError{Reason: x509Reason(err), Err: fmt.Errorf("verify %s: %w", subject(leaf), err)}
	}
	if serverName != "" {
		if err := leaf.VerifyHostname(serverName); err != nil {
			return &VerifyError{Reason: ReasonNameMismatch, Err: err}
		}
	}
	return nil
}

func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("certificate %q", c.Subject.CommonName)
	}
	return fmt.Sprintf("certificate serial %s", c.SerialNumber)
}

// x509Reason maps an error from x509.Certificate.Verify to a Reason.
func x509Reason(err error) Reason {
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
			if invalid.Cert != nil && time.Now().Before(invalid.Cert.NotBefore) {
				return ReasonNotYetValid
			}
			return ReasonExpired
		case x509.IncompatibleUsage:
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
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return ReasonPeerClosed
	case errors.As(err, &op) && op.Op == "remote error":
		// crypto/tls reports an alert from the peer as a *net.OpError
		// with Op "remote error"; the alert type itself is unexported.
		return ReasonPeerRejected
	}
	return ReasonProtocol
}
