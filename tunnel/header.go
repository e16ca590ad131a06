package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Version is the stream header version this build speaks. A server that
// reads any other version answers StatusBadRequest and closes the stream.
const Version = 1

// MaxRouteLen and MaxReasonLen bound the two variable fields of the stream
// header, so a peer can never make us buffer more than a few hundred bytes
// before we have decided what to do with a stream.
const (
	MaxRouteLen  = 64
	MaxReasonLen = 255
)

// Request kinds: "open" names a route; "open from" also carries the app
// connection's addresses. A server older than kind 2 answers it with
// StatusBadRequest.
const (
	kindOpen     = 1
	kindOpenFrom = 2
)

// Address families of a kind 2 request, numbered as in PROXY protocol v2.
const (
	familyIPv4 = 1
	familyIPv6 = 2
)

// Status is the server agent's answer to a stream header.
type Status uint8

// Status values on the wire. Never renumber; add new ones at the end.
const (
	StatusOK           Status = 0
	StatusUnknownRoute Status = 1
	StatusForbidden    Status = 2
	StatusUnreachable  Status = 3
	StatusBadRequest   Status = 4
	StatusUnavailable  Status = 5
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusUnknownRoute:
		return "unknown_route"
	case StatusForbidden:
		return "forbidden"
	case StatusUnreachable:
		return "target_unreachable"
	case StatusBadRequest:
		return "bad_request"
	case StatusUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("status_%d", uint8(s))
}

// Errors returned by the header decoders. Truncated input surfaces as
// io.ErrUnexpectedEOF (or io.EOF when not a single byte arrived).
var (
	ErrBadVersion = errors.New("unsupported stream header version")
	ErrBadKind    = errors.New("unsupported stream header kind")
	ErrBadRoute   = errors.New("invalid route name")
	ErrBadOrigin  = errors.New("invalid app addresses")
)

// ValidRoute reports whether name may be used as a route name: 1 to
// MaxRouteLen bytes of ASCII letters, digits, '.', '_' and '-'. Keeping the
// alphabet small means a route name can go into logs and metric labels as is.
func ValidRoute(name string) bool {
	if len(name) == 0 || len(name) > MaxRouteLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Request is a stream header: the route to open and, when the client agent
// knows them, the app connection's addresses.
type Request struct {
	Route string
	// Src is the app's address and Dst the client agent's own listening
	// address, as the client agent's socket reported them (so a proxy in
	// front of the client agent shows as the app). Both are set or
	// neither: an app on a unix socket has no IP address. They travel in a
	// kind 2 header, without zones.
	Src, Dst netip.AddrPort
}

// HasOrigin reports whether the request carries the app's addresses.
func (r Request) HasOrigin() bool { return r.Src.IsValid() }

// AppendRequest appends the stream header of req to dst:
//
//	kind 1: version(1) kind(1) len(1) route(len)
//	kind 2: version(1) kind(1) len(1) route(len) family(1) src dst srcport(2) dstport(2)
//
// A request without addresses is kind 1. Kind 2 addresses are 4 bytes
// each for family 1 (both addresses IPv4) and 16 for family 2 (IPv6),
// ports big endian.
func AppendRequest(dst []byte, req Request) ([]byte, error) {
	if !ValidRoute(req.Route) {
		return dst, fmt.Errorf("encode stream header: %w: %q", ErrBadRoute, req.Route)
	}
	if req.Src.IsValid() != req.Dst.IsValid() {
		return dst, fmt.Errorf("encode stream header: %w: source %v, destination %v: give both or neither", ErrBadOrigin, req.Src, req.Dst)
	}
	if !req.HasOrigin() {
		dst = append(dst, Version, kindOpen, byte(len(req.Route)))
		return append(dst, req.Route...), nil
	}
	src, dstAddr := req.Src.Addr().WithZone(""), req.Dst.Addr().WithZone("")
	if src.Is4() != dstAddr.Is4() {
		return dst, fmt.Errorf("encode stream header: %w: source %v and destination %v are of different families", ErrBadOrigin, req.Src, req.Dst)
	}
	dst = append(dst, Version, kindOpenFrom, byte(len(req.Route)))
	dst = append(dst, req.Route...)
	if src.Is4() {
		s, d := src.As4(), dstAddr.As4()
		dst = append(append(append(dst, familyIPv4), s[:]...), d[:]...)
	} else {
		s, d := src.As16(), dstAddr.As16()
		dst = append(append(append(dst, familyIPv6), s[:]...), d[:]...)
	}
	dst = binary.BigEndian.AppendUint16(dst, req.Src.Port())
	return binary.BigEndian.AppendUint16(dst, req.Dst.Port()), nil
}

// ReadRequest reads one stream header from r. It reads exactly the
// header's bytes, never beyond, so the bytes that follow on the stream are
// left for the copy loop.
func ReadRequest(r io.Reader) (Request, error) {
	var fixed [3]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Request{}, fmt.Errorf("read stream header: %w", err)
	}
	if fixed[0] != Version {
		return Request{}, fmt.Errorf("read stream header: %w: %d", ErrBadVersion, fixed[0])
	}
	kind := fixed[1]
	if kind != kindOpen && kind != kindOpenFrom {
		return Request{}, fmt.Errorf("read stream header: %w: %d", ErrBadKind, kind)
	}
	n := int(fixed[2])
	if n == 0 || n > MaxRouteLen {
		return Request{}, fmt.Errorf("read stream header: %w: length %d", ErrBadRoute, n)
	}
	var buf [MaxRouteLen]byte
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return Request{}, fmt.Errorf("read stream header: %w", cutShort(err))
	}
	req := Request{Route: string(buf[:n])}
	if !ValidRoute(req.Route) {
		return Request{}, fmt.Errorf("read stream header: %w: %q", ErrBadRoute, req.Route)
	}
	if kind == kindOpenFrom {
		var err error
		if req.Src, req.Dst, err = readOrigin(r); err != nil {
			return Request{}, fmt.Errorf("read stream header: %w", err)
		}
	}
	return req, nil
}

// readOrigin reads the address part of a kind 2 request.
func readOrigin(r io.Reader) (src, dst netip.AddrPort, err error) {
	var family [1]byte
	if _, err := io.ReadFull(r, family[:]); err != nil {
		return src, dst, cutShort(err)
	}
	var size int
	switch family[0] {
	case familyIPv4:
		size = 4
	case familyIPv6:
		size = 16
	default:
		return src, dst, fmt.Errorf("%w: address family %d", ErrBadOrigin, family[0])
	}
	var buf [2*16 + 4]byte
	b := buf[:2*size+4]
	if _, err := io.ReadFull(r, b); err != nil {
		return src, dst, cutShort(err)
	}
	sa, _ := netip.AddrFromSlice(b[:size])
	da, _ := netip.AddrFromSlice(b[size : 2*size])
	ports := b[2*size:]
	return netip.AddrPortFrom(sa, binary.BigEndian.Uint16(ports)), netip.AddrPortFrom(da, binary.BigEndian.Uint16(ports[2:])), nil
}

// Response is the server agent's answer to a stream header.
type Response struct {
	Status Status
	Reason string // short, human readable; empty for StatusOK
}

// AppendResponse appends resp to dst:
//
//	version(1) status(1) len(1) reason(len)
//
// A reason longer than MaxReasonLen is cut, never rejected: it is advice
// for a log line.
func AppendResponse(dst []byte, resp Response) []byte {
	reason := resp.Reason
	if len(reason) > MaxReasonLen {
		reason = reason[:MaxReasonLen]
	}
	dst = append(dst, Version, byte(resp.Status), byte(len(reason)))
	return append(dst, reason...)
}

// ReadResponse reads one response header from r, reading exactly its bytes.
func ReadResponse(r io.Reader) (Response, error) {
	var fixed [3]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Response{}, fmt.Errorf("read stream response: %w", err)
	}
	if fixed[0] != Version {
		return Response{}, fmt.Errorf("read stream response: %w: %d", ErrBadVersion, fixed[0])
	}
	resp := Response{Status: Status(fixed[1])}
	if n := int(fixed[2]); n > 0 {
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return Response{}, fmt.Errorf("read stream response: %w", cutShort(err))
		}
		resp.Reason = string(buf)
	}
	return resp, nil
}

// cutShort reports an end of input after a header's fixed part as what it
// is, a header cut short: io.ReadFull says io.EOF when not one byte of the
// variable part arrived, which would read as "the peer sent nothing".
func cutShort(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
