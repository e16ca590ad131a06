package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
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
}

// Validate reports a policy that cannot produce a safe configuration.
func (p TLSPolicy) Validate() error {
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

func (p TLSPolicy) minVersion() uint16 {
	if p.MinVersion == 0 {
		return tls.VersionTLS13
	}
	return p.MinVersion
}

// ServerConfig is the configuration of the server agent's listener.
//
// ClientAuth is RequestClientCert, not RequireAndVerifyClientCert: the
// verification is done by verifyPeer in VerifyConnection, which runs on every
// handshake including resumptions, and which can name the reason a client
// was refused (a missing certificate included) for logs and metrics.
func (p TLSPolicy) ServerConfig() *tls.Config {
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
			return verifyPeer(cs, p.Credentials().Roots, x509.ExtKeyUsageClientAuth, "")
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
func (p TLSPolicy) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         p.minVersion(),
		NextProtos:         []string{ALPN},
		ServerName:         p.ServerName,
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &p.Credentials().Certificate, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs, p.Credentials().Roots, x509.ExtKeyUsageServerAuth, p.ServerName)
		},
	}
}
