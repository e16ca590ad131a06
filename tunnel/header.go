package tunnel

import (
	"errors"
	"fmt"
	"io"
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

const kindOpen = 1

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

// AppendRequest appends the stream header that opens route to dst:
//
//	version(1) kind(1) len(1) route(len)
func AppendRequest(dst []byte, route string) ([]byte, error) {
	if !ValidRoute(route) {
		return dst, fmt.Errorf("encode stream header: %w: %q", ErrBadRoute, route)
	}
	dst = append(dst, Version, kindOpen, byte(len(route)))
	return append(dst, route...), nil
}

// ReadRequest reads one stream header from r and returns the route it names.
// It reads exactly the header's bytes, never beyond, so the bytes that
// follow on the stream are left for the copy loop.
func ReadRequest(r io.Reader) (string, error) {
	var fixed [3]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return "", fmt.Errorf("read stream header: %w", err)
	}
	if fixed[0] != Version {
		return "", fmt.Errorf("read stream header: %w: %d", ErrBadVersion, fixed[0])
	}
	if fixed[1] != kindOpen {
		return "", fmt.Errorf("read stream header: %w: %d", ErrBadKind, fixed[1])
	}
	n := int(fixed[2])
	if n == 0 || n > MaxRouteLen {
		return "", fmt.Errorf("read stream header: %w: length %d", ErrBadRoute, n)
	}
	var buf [MaxRouteLen]byte
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		return "", fmt.Errorf("read stream header: %w", cutShort(err))
	}
	route := string(buf[:n])
	if !ValidRoute(route) {
		return "", fmt.Errorf("read stream header: %w: %q", ErrBadRoute, route)
	}
	return route, nil
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
