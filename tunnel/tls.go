package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// ALPN is the only application protocol an mtunnel agent speaks over TLS.
// Requiring it on both sides means a generic TLS client (a browser, a
// health checker, another tunnel) is refused during the handshake instead of
// being fed yamux frames.
const ALPN = "mtunnel/1"

// Credentials is what one agent presents and what it trusts. It is replaced
// whole on reload, never modified in place.
type Credentials struct {
	Certificate tls.Certificate // own chain and key; Leaf must be set
	Roots       *x509.CertPool  // CAs trusted to sign the peer's certificate
	// CAs lists the certificates in Roots, for reports (a CertPool cannot
	// list its own). Optional: without it no CA shows in the status or
	// the expiry metrics.
	CAs []*x509.Certificate
	// Intermediates are CA certificates that may complete a peer's chain
	// when the peer does not send them (--intermediates). They are never
	// trusted on their own.
	Intermediates []*x509.Certificate
	// Issuer is the CA certificate that signed our own leaf, needed to ask
	// OCSP about it for stapling. Optional.
	Issuer *x509.Certificate
}

// RevocationChecker decides whether a verified chain (leaf first, root
// last) has been revoked. staple is the OCSP response the peer stapled, or
// nil. It returns a *VerifyError.
type RevocationChecker interface {
	Check(chain []*x509.Certificate, staple []byte) error
}

// TLSPolicy builds the crypto/tls configurations of both agents. All mTLS
// decisions live here and in verify.go, so they can be read in one place.
type TLSPolicy struct {
	// Credentials returns the credentials to use; it is called on every
	// handshake so a reload takes effect for the next one. Required.
	Credentials func() *Credentials
	// ServerName is the name the server's certificate must carry (a DNS or
	// IP SAN). Required when verifying a server; unused by the server agent.
	ServerName string
	// MinVersion is tls.VersionTLS13 when zero; tls.VersionTLS12 is the
	// lowest allowed.
	MinVersion uint16
	// ClockSkew is how far outside its validity period a certificate may
	// be and still pass, for peers whose clocks disagree. Default 1 minute;
	// negative means none.
	ClockSkew time.Duration
	// LegacyCN lets a server certificate without any SAN match the server
	// name by its common name (off by default; each match is logged).
	LegacyCN bool
	// Revocation, if set, is consulted for every verified chain.
	Revocation RevocationChecker
	// Logger receives warnings such as legacy CN matches. Nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

func (p *TLSPolicy) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *TLSPolicy) clockSkew() time.Duration {
	switch {
	case p.ClockSkew < 0:
		return 0
	case p.ClockSkew == 0:
		return time.Minute
	}
	return p.ClockSkew
}

func (p *TLSPolicy) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// VerifyClient runs the full verification of a session's client: its
// certificate chain as sent (leaf first) and the OCSP response it stapled,
// if any. Agents call it again on open sessions to catch revocation and
// expiry after the handshake.
func (p *TLSPolicy) VerifyClient(s *Session) error {
	return p.verifyPeer(s.PeerChain, s.Staple, x509.ExtKeyUsageClientAuth)
}

// VerifyServer is VerifyClient for a session's server, including its name.
// A staple that has gone stale since the handshake is replaced by asking
// the responder, as at a handshake without a staple.
func (p *TLSPolicy) VerifyServer(s *Session) error {
	return p.verifyPeer(s.PeerChain, s.Staple, x509.ExtKeyUsageServerAuth)
}

// checkALPN refuses a connection that did not negotiate our protocol.
func checkALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != ALPN {
		return refuse(ReasonALPN, "peer negotiated ALPN %q, want %q", cs.NegotiatedProtocol, ALPN)
	}
	return nil
}

// Validate reports a policy that cannot produce a safe configuration.
func (p *TLSPolicy) Validate() error {
	if p.Credentials == nil {
		return errors.New("tls policy: no credentials")
	}
	switch p.MinVersion {
	case 0, tls.VersionTLS12, tls.VersionTLS13:
	default:
		return fmt.Errorf("tls policy: minimum version %s is not allowed (use 1.2 or 1.3)", tls.VersionName(p.MinVersion))
	}
	return nil
}

func (p *TLSPolicy) minVersion() uint16 {
	if p.MinVersion == 0 {
		return tls.VersionTLS13
	}
	return p.MinVersion
}

// ServerConfig is the configuration of the server agent's listener.
//
// ClientAuth is RequestClientCert, not RequireAndVerifyClientCert: the
// verification is done by verifyPeer (verify.go) in VerifyConnection, which runs on every
// handshake including resumptions, and which can name the reason a client
// was refused (a missing certificate included) for logs and metrics.
func (p *TLSPolicy) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: p.minVersion(),
		NextProtos: []string{ALPN},
		ClientAuth: tls.RequestClientCert,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			// Refuse a client that does not offer our protocol with a
			// reason of our own, rather than crypto/tls's generic error.
			if !slices.Contains(hello.SupportedProtos, ALPN) {
				return nil, &VerifyError{Reason: ReasonALPN, Err: fmt.Errorf("client offered ALPN %q, want %q", hello.SupportedProtos, ALPN)}
			}
			return nil, nil
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &p.Credentials().Certificate, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkALPN(cs); err != nil {
				return err
			}
			return p.verifyPeer(cs.PeerCertificates, cs.OCSPResponse, x509.ExtKeyUsageClientAuth)
		},
	}
}

// ClientConfig is the configuration of the client agent's dialer.
//
// InsecureSkipVerify only turns off crypto/tls's built-in check: verifyPeer
// runs the same x509 chain verification plus the hostname check in
// VerifyConnection, which crypto/tls calls whatever InsecureSkipVerify says.
// Doing it ourselves gives every failure a reason and keeps the client and
// server checks in one function.
func (p *TLSPolicy) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         p.minVersion(),
		NextProtos:         []string{ALPN},
		ServerName:         p.ServerName,
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &p.Credentials().Certificate, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkALPN(cs); err != nil {
				return err
			}
			return p.verifyPeer(cs.PeerCertificates, cs.OCSPResponse, x509.ExtKeyUsageServerAuth)
		},
	}
}
