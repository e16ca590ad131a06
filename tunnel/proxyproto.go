package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// PROXY protocol version 2, as the server agent writes it to a route's
// target ahead of a stream's bytes (HAProxy's proxy-protocol.txt, section
// 2.2). Only the sender is here: mtunnel never reads PROXY headers.

// pp2Signature opens every version 2 header.
var pp2Signature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// The header's 13th byte is the version (2) and the command; the 14th the
// address family and transport.
const (
	pp2Local     = 0x20 // version 2, LOCAL: no relayed addresses
	pp2Proxy     = 0x21 // version 2, PROXY
	pp2Unspec    = 0x00 // AF_UNSPEC, UNSPEC
	pp2TCPv4     = 0x11 // AF_INET, STREAM
	pp2TCPv6     = 0x21 // AF_INET6, STREAM
	pp2HeaderLen = 16   // signature, version and command, family, length
)

// TLV types. PP2_TYPE_SSL and its subtypes are the spec's; the client's
// URI SANs and identity go in types from the range it leaves to
// applications (0xE0-0xEF, section 2.2.8).
const (
	pp2TypeSSL           = 0x20 // PP2_TYPE_SSL
	pp2SubtypeSSLVersion = 0x21 // PP2_SUBTYPE_SSL_VERSION
	pp2SubtypeSSLCN      = 0x22 // PP2_SUBTYPE_SSL_CN

	// PP2TypeClientURI carries one URI SAN of the client certificate, such
	// as a SPIFFE ID: one TLV per URI SAN, in the certificate's order.
	PP2TypeClientURI = 0xE0
	// PP2TypeClientIdentity carries the client's identity as mtunnel's
	// logs show it, like "CN=app URI=spiffe://example.org/app".
	PP2TypeClientIdentity = 0xE1
)

// PP2_TYPE_SSL's client field: the client connected over TLS and presented
// a certificate on this connection and in its TLS session. Every mtunnel
// session is all three, and its certificate was verified (verify = 0).
const pp2ClientSSLCert = 0x01 | 0x02 | 0x04 // PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS

// MaxProxyHeaderLen bounds a header with its TLVs. nginx reads at most
// 4096 bytes of PROXY header (NGX_PROXY_PROTOCOL_MAX_HEADER), HAProxy one
// buffer (16 KiB by default); an identity takes a few hundred bytes.
const MaxProxyHeaderLen = 4096

// Every length field in a header, 16 bits, holds a part of one no longer
// than MaxProxyHeaderLen (this fails to compile otherwise).
const _ uint16 = MaxProxyHeaderLen

// ErrProxyHeader is a PROXY header that cannot be written: too long, or
// half an address.
var ErrProxyHeader = errors.New("cannot build PROXY protocol header")

// ProxyHeader is what a target learns about a stream before its first
// byte.
type ProxyHeader struct {
	// Src and Dst are the app's address and the address it connected to
	// (Request.Src, Request.Dst). With both set the header is a PROXY
	// command for TCP over IPv4, or over IPv6 if either address is IPv6.
	// With neither (an app on a unix socket, or a client agent too old to
	// send them) it is a LOCAL command with no address: the spec's PROXY
	// command with AF_UNSPEC would fit better, but HAProxy 2.6 refuses it
	// as an invalid header, and LOCAL is what HAProxy itself sends for
	// clients on unix sockets. Receivers use the connection's own
	// addresses for LOCAL; some (HAProxy) also ignore its TLVs.
	Src, Dst netip.AddrPort
	// Peer is the verified client certificate, described in TLVs (see
	// IdentityTLVs); nil for none.
	Peer *x509.Certificate
	// TLSVersion is the tunnel session's TLS version, for the SSL TLV.
	TLSVersion uint16
}

// AppendProxyHeader appends h as a PROXY protocol v2 header to b. It
// refuses a header over MaxProxyHeaderLen (a certificate with very many or
// very long names) and an address without the other.
func AppendProxyHeader(b []byte, h ProxyHeader) ([]byte, error) {
	if h.Src.IsValid() != h.Dst.IsValid() {
		return b, fmt.Errorf("%w: source %v, destination %v: give both or neither", ErrProxyHeader, h.Src, h.Dst)
	}
	start := len(b)
	b = append(b, pp2Signature[:]...)
	src, dst := h.Src.Addr(), h.Dst.Addr()
	switch {
	case !h.Src.IsValid():
		b = append(b, pp2Local, pp2Unspec, 0, 0)
	case src.Is4() && dst.Is4():
		s, d := src.As4(), dst.As4()
		b = append(append(append(b, pp2Proxy, pp2TCPv4, 0, 0), s[:]...), d[:]...)
	default: // As16 maps an IPv4 address, as HAProxy does for mixed families
		s, d := src.As16(), dst.As16()
		b = append(append(append(b, pp2Proxy, pp2TCPv6, 0, 0), s[:]...), d[:]...)
	}
	if h.Src.IsValid() {
		b = binary.BigEndian.AppendUint16(b, h.Src.Port())
		b = binary.BigEndian.AppendUint16(b, h.Dst.Port())
	}
	if h.Peer != nil {
		b = appendIdentityTLVs(b, h.Peer, h.TLSVersion)
	}
	// Every length inside fits in 16 bits if the whole does.
	if n := len(b) - start; n > MaxProxyHeaderLen {
		return b[:start], fmt.Errorf("%w: %d bytes with the client identity %s, limit %d", ErrProxyHeader, n, PeerID(h.Peer), MaxProxyHeaderLen)
	}
	binary.BigEndian.PutUint16(b[start+14:], uint16(len(b)-start-pp2HeaderLen))
	return b, nil
}

// appendIdentityTLVs appends the TLVs that describe the client:
//
//   - PP2_TYPE_SSL: client = PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN |
//     PP2_CLIENT_CERT_SESS, verify = 0 (verified), then the sub-TLVs
//     PP2_SUBTYPE_SSL_VERSION ("TLSv1.3", OpenSSL's spelling, as HAProxy
//     sends it) and PP2_SUBTYPE_SSL_CN (the subject's common name, if any);
//   - PP2TypeClientURI for each URI SAN;
//   - PP2TypeClientIdentity: the identity as mtunnel logs it.
func appendIdentityTLVs(b []byte, peer *x509.Certificate, version uint16) []byte {
	ssl := len(b)
	b = append(b, pp2TypeSSL, 0, 0, pp2ClientSSLCert, 0, 0, 0, 0)
	if v := tlsVersionName(version); v != "" {
		b = appendTLV(b, pp2SubtypeSSLVersion, v)
	}
	if cn := peer.Subject.CommonName; cn != "" {
		b = appendTLV(b, pp2SubtypeSSLCN, cn)
	}
	binary.BigEndian.PutUint16(b[ssl+1:], uint16(len(b)-ssl-3))
	for _, u := range peer.URIs {
		b = appendTLV(b, PP2TypeClientURI, u.String())
	}
	return appendTLV(b, PP2TypeClientIdentity, PeerID(peer))
}

// appendTLV appends one TLV. A value over 64 KiB gets a wrong length, but
// then the header is over MaxProxyHeaderLen and refused as a whole.
func appendTLV(b []byte, typ byte, value string) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	return append(b, value...)
}

// tlsVersionName spells a TLS version as OpenSSL does ("TLSv1.3"), the
// form PROXY protocol receivers know from HAProxy; "" for none.
func tlsVersionName(v uint16) string {
	switch v {
	case 0:
		return ""
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return tls.VersionName(v)
}
