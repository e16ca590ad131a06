package tunnel

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// pp2Sig is the version 2 signature, written out from the spec.
const pp2Sig = "\r\n\r\n\x00\r\nQUIT\n"

func peerCert(cn string, uris ...string) *x509.Certificate {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			panic(err)
		}
		c.URIs = append(c.URIs, parsed)
	}
	return c
}

// TestProxyHeaderBytes checks whole headers byte by byte, written by hand
// from HAProxy's proxy-protocol.txt (section 2.2).
func TestProxyHeaderBytes(t *testing.T) {
	app := peerCert("app", "spiffe://t.example/a")
	sslTLV := "\x20\x00\x15" + "\x07" + "\x00\x00\x00\x00" + // PP2_TYPE_SSL, 21 bytes: client bits, verify 0
		"\x21\x00\x07TLSv1.3" + // PP2_SUBTYPE_SSL_VERSION
		"\x22\x00\x03app" // PP2_SUBTYPE_SSL_CN
	idTLVs := "\xe0\x00\x14spiffe://t.example/a" + // URI SAN
		"\xe1\x00\x1fCN=app URI=spiffe://t.example/a" // identity
	tests := []struct {
		name string
		h    ProxyHeader
		want string
	}{{
		name: "IPv4 with identity",
		h: ProxyHeader{Src: netip.MustParseAddrPort("192.0.2.7:51234"), Dst: netip.MustParseAddrPort("127.0.0.1:15432"),
			Peer: app, TLSVersion: tls.VersionTLS13},
		want: pp2Sig + "\x21\x11\x00\x5d" + // PROXY, TCP over IPv4, 12+24+23+34 = 93 bytes follow
			"\xc0\x00\x02\x07" + "\x7f\x00\x00\x01" + "\xc8\x22" + "\x3c\x48" + sslTLV + idTLVs,
	}, {
		name: "IPv6 without identity",
		h:    ProxyHeader{Src: netip.MustParseAddrPort("[2001:db8::7]:1"), Dst: netip.MustParseAddrPort("[::1]:2")},
		want: pp2Sig + "\x21\x21\x00\x24" + // PROXY, TCP over IPv6, 36 bytes
			"\x20\x01\x0d\xb8" + strings.Repeat("\x00", 11) + "\x07" + strings.Repeat("\x00", 15) + "\x01" + "\x00\x01\x00\x02",
	}, {
		name: "IPv4 source, IPv6 destination: both as IPv6",
		h:    ProxyHeader{Src: netip.MustParseAddrPort("192.0.2.7:1"), Dst: netip.MustParseAddrPort("[::1]:2")},
		want: pp2Sig + "\x21\x21\x00\x24" +
			strings.Repeat("\x00", 10) + "\xff\xff\xc0\x00\x02\x07" + strings.Repeat("\x00", 15) + "\x01" + "\x00\x01\x00\x02",
	}, {
		name: "no addresses: LOCAL, identity still sent",
		h:    ProxyHeader{Peer: app, TLSVersion: tls.VersionTLS13},
		want: pp2Sig + "\x20\x00\x00\x51" + sslTLV + idTLVs, // LOCAL, UNSPEC, 24+23+34 = 81 bytes
	}, {
		name: "no common name, TLS 1.2",
		h:    ProxyHeader{Peer: peerCert("", "spiffe://t.example/b"), TLSVersion: tls.VersionTLS12},
		want: pp2Sig + "\x20\x00\x00\x44" + // LOCAL, 18+23+27 = 68 bytes
			"\x20\x00\x0f\x07\x00\x00\x00\x00" + "\x21\x00\x07TLSv1.2" +
			"\xe0\x00\x14spiffe://t.example/b" + "\xe1\x00\x18URI=spiffe://t.example/b",
	}, {
		name: "bare LOCAL",
		h:    ProxyHeader{},
		want: pp2Sig + "\x20\x00\x00\x00",
	}}
	for _, tt := range tests {
		got, err := AppendProxyHeader([]byte("kept"), tt.h)
		if err != nil || string(got) != "kept"+tt.want {
			t.Errorf("%s:\n got %q, %v\nwant %q", tt.name, got, err, "kept"+tt.want)
		}
	}
}

// pp2TLV is one TLV as parsePP2 read it.
type pp2TLV struct {
	typ   byte
	value []byte
}

// pp2Parsed is a header as parsePP2 read it.
type pp2Parsed struct {
	command   byte // 0 LOCAL, 1 PROXY
	family    byte // 14th byte
	src, dst  netip.AddrPort
	tlvs      []pp2TLV
	sslClient byte
	sslVerify uint32
	sslSubs   []pp2TLV
}

// parsePP2 reads a PROXY v2 header from the front of b the way the spec
// tells a receiver to, checking every length, and returns it and its size.
// It is independent of the encoder, so a round trip through it tests the
// encoder against the spec.
func parsePP2(b []byte) (pp2Parsed, int, error) {
	var p pp2Parsed
	if len(b) < 16 || string(b[:12]) != pp2Sig || b[12]>>4 != 2 {
		return p, 0, errors.New("no version 2 signature")
	}
	p.command, p.family = b[12]&0x0f, b[13]
	size := 16 + int(binary.BigEndian.Uint16(b[14:]))
	if len(b) < size {
		return p, 0, fmt.Errorf("header of %d bytes cut at %d", size, len(b))
	}
	rest := b[16:size]
	switch {
	case p.command == 0:
		if p.family != 0 {
			return p, 0, fmt.Errorf("LOCAL with family %#x", p.family)
		}
	case p.command == 1 && (p.family == 0x11 || p.family == 0x21):
		n := 4
		if p.family == 0x21 {
			n = 16
		}
		if len(rest) < 2*n+4 {
			return p, 0, errors.New("address block cut")
		}
		s, _ := netip.AddrFromSlice(rest[:n])
		d, _ := netip.AddrFromSlice(rest[n : 2*n])
		p.src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(rest[2*n:]))
		p.dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(rest[2*n+2:]))
		rest = rest[2*n+4:]
	default:
		return p, 0, fmt.Errorf("command %d with family %#x", p.command, p.family)
	}
	var err error
	if p.tlvs, err = parseTLVs(rest); err != nil {
		return p, 0, err
	}
	for _, tlv := range p.tlvs {
		if tlv.typ != 0x20 {
			continue
		}
		if len(tlv.value) < 5 {
			return p, 0, errors.New("PP2_TYPE_SSL shorter than its fixed part")
		}
		p.sslClient, p.sslVerify = tlv.value[0], binary.BigEndian.Uint32(tlv.value[1:])
		if p.sslSubs, err = parseTLVs(tlv.value[5:]); err != nil {
			return p, 0, fmt.Errorf("PP2_TYPE_SSL: %w", err)
		}
	}
	return p, size, nil
}

func parseTLVs(b []byte) ([]pp2TLV, error) {
	var out []pp2TLV
	for len(b) > 0 {
		if len(b) < 3 {
			return nil, fmt.Errorf("%d bytes left, less than a TLV", len(b))
		}
		n := int(binary.BigEndian.Uint16(b[1:]))
		if len(b) < 3+n {
			return nil, fmt.Errorf("TLV %#x of %d bytes overruns the header", b[0], n)
		}
		out = append(out, pp2TLV{b[0], b[3 : 3+n]})
		b = b[3+n:]
	}
	return out, nil
}

// values returns the values of every TLV of type typ, as strings.
func values(tlvs []pp2TLV, typ byte) []string {
	var out []string
	for _, t := range tlvs {
		if t.typ == typ {
			out = append(out, string(t.value))
		}
	}
	return out
}

func TestProxyHeaderRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 200)
	peers := []*x509.Certificate{
		nil,
		peerCert("app"),
		peerCert(""),
		peerCert("db-client", "spiffe://example.org/ns/prod/sa/api", "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e"),
		peerCert(long, "spiffe://example.org/"+long),
	}
	addrs := [][2]string{
		{"", ""},
		{"127.0.0.1:40000", "127.0.0.1:15432"},
		{"[2001:db8::1]:65535", "[2001:db8::2]:0"},
	}
	for _, peer := range peers {
		for _, a := range addrs {
			for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				h := ProxyHeader{Peer: peer, TLSVersion: version}
				if a[0] != "" {
					h.Src, h.Dst = netip.MustParseAddrPort(a[0]), netip.MustParseAddrPort(a[1])
				}
				checkRoundTrip(t, h)
			}
		}
	}
}

func checkRoundTrip(t *testing.T, h ProxyHeader) {
	t.Helper()
	b, err := AppendProxyHeader(nil, h)
	if err != nil {
		t.Fatalf("AppendProxyHeader(%+v): %v", h, err)
	}
	p, n, err := parsePP2(append(b, "app bytes"...))
	if err != nil || n != len(b) {
		t.Fatalf("parse %q: %v (size %d of %d)", b, err, n, len(b))
	}
	wantCmd := byte(1)
	if !h.Src.IsValid() {
		wantCmd = 0
	}
	if p.command != wantCmd || p.src != h.Src || p.dst != h.Dst {
		t.Fatalf("header says command %d, %v -> %v; want %d, %v -> %v", p.command, p.src, p.dst, wantCmd, h.Src, h.Dst)
	}
	if h.Peer == nil {
		if len(p.tlvs) != 0 {
			t.Fatalf("TLVs %v without a peer", p.tlvs)
		}
		return
	}
	if p.sslClient != 0x07 || p.sslVerify != 0 {
		t.Fatalf("PP2_TYPE_SSL client %#x verify %d, want 0x07 and 0", p.sslClient, p.sslVerify)
	}
	wantVersion := map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[h.TLSVersion]
	if got := values(p.sslSubs, 0x21); len(got) != 1 || got[0] != wantVersion {
		t.Fatalf("PP2_SUBTYPE_SSL_VERSION %q, want %q", got, wantVersion)
	}
	var wantCN []string
	if cn := h.Peer.Subject.CommonName; cn != "" {
		wantCN = []string{cn}
	}
	if got := values(p.sslSubs, 0x22); fmt.Sprint(got) != fmt.Sprint(wantCN) {
		t.Fatalf("PP2_SUBTYPE_SSL_CN %q, want %q", got, wantCN)
	}
	var wantURIs []string
	for _, u := range h.Peer.URIs {
		wantURIs = append(wantURIs, u.String())
	}
	if got := values(p.tlvs, PP2TypeClientURI); fmt.Sprint(got) != fmt.Sprint(wantURIs) {
		t.Fatalf("URI TLVs %q, want %q", got, wantURIs)
	}
	if got := values(p.tlvs, PP2TypeClientIdentity); len(got) != 1 || got[0] != PeerID(h.Peer) {
		t.Fatalf("identity TLV %q, want %q", got, PeerID(h.Peer))
	}
}

func TestProxyHeaderRefuses(t *testing.T) {
	many := peerCert("app")
	for i := range 40 {
		u, _ := url.Parse(fmt.Sprintf("spiffe://example.org/%03d/%s", i, strings.Repeat("s", 80)))
		many.URIs = append(many.URIs, u)
	}
	a := netip.MustParseAddrPort("127.0.0.1:1")
	for _, h := range []ProxyHeader{
		{Src: a, Dst: a, Peer: many},                                 // about 7 KiB of names
		{Src: a, Dst: a, Peer: peerCert(strings.Repeat("c", 70000))}, // a length that would not fit 16 bits
		{Src: a},
		{Dst: a},
	} {
		b, err := AppendProxyHeader([]byte("kept"), h)
		if !errors.Is(err, ErrProxyHeader) || !bytes.Equal(b, []byte("kept")) {
			t.Errorf("AppendProxyHeader(src %v, dst %v, peer %.20s...) = %d bytes, %v; want ErrProxyHeader and b untouched",
				h.Src, h.Dst, PeerID(h.Peer), len(b), err)
		}
	}
	// Just under the limit is fine.
	var fits *x509.Certificate
	for n := 0; ; n++ {
		c := peerCert(strings.Repeat("c", n))
		if b, err := AppendProxyHeader(nil, ProxyHeader{Src: a, Dst: a, Peer: c, TLSVersion: tls.VersionTLS13}); err != nil {
			break
		} else if len(b) > MaxProxyHeaderLen {
			t.Fatalf("a header of %d bytes was accepted, limit %d", len(b), MaxProxyHeaderLen)
		}
		fits = c
	}
	if b, err := AppendProxyHeader(nil, ProxyHeader{Src: a, Dst: a, Peer: fits, TLSVersion: tls.VersionTLS13}); err != nil || len(b) < MaxProxyHeaderLen-1 {
		t.Fatalf("the longest header accepted is %d bytes (%v), want about %d", len(b), err, MaxProxyHeaderLen)
	}
}
