package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// The stream header decoders read bytes from a peer that may be hostile.
// The fuzz targets below hold them to these properties, whatever the input:
//
//   - no panic;
//   - a decoder reads the header's own bytes and never one beyond them, so
//     the app's bytes that follow stay on the stream;
//   - what it allocates is bounded, however long the input;
//   - it decodes exactly the inputs a reference decoder written from the
//     wire format in doc.go decodes, and refuses the others with the error
//     that names what is wrong;
//   - a decoded header encodes back to the very bytes it was read from, and
//     anything the encoder writes decodes back;
//   - the result does not depend on how the reader splits its data.
//
// Seeds: f.Add below and testdata/fuzz/<FuzzName>/.

// headerAllocLimit bounds what decoding one header may allocate: a route or
// reason buffer of at most 255 bytes, its string and an error message
// (about 1 KiB at most today, for a route of 64 bytes that all need
// quoting). A decoder that buffered input in proportion to what the peer
// sends would blow through it on the 64 KiB seed.
const headerAllocLimit = 2048

// routeAlphabet is the route syntax of doc.go, written independently of
// ValidRoute.
var routeAlphabet = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// splitReaders are the ways a reader may hand over the same bytes; a
// decoder must get the same result from each.
var splitReaders = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"one byte at a time", iotest.OneByteReader},
	{"EOF with the last data", func(r io.Reader) io.Reader { return eofWithLast{r.(*bytes.Reader)} }},
}

// eofWithLast returns io.EOF together with the last bytes, as a reader may
// (io.Reader's contract). Unlike iotest.DataErrReader it reads nothing
// ahead, so what the decoder consumed can still be counted.
type eofWithLast struct{ r *bytes.Reader }

func (e eofWithLast) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == nil && e.r.Len() == 0 {
		err = io.EOF
	}
	return n, err
}

// short quotes at most the first 80 bytes of data, for failure messages
// about inputs that may be 64 KiB long.
func short(data []byte) string {
	if len(data) <= 80 {
		return fmt.Sprintf("%q", data)
	}
	return fmt.Sprintf("%q... (%d bytes)", data[:80], len(data))
}

// wantRequest decodes data the way doc.go describes a request header. It
// returns the request, the header's length, and the error a decoder must
// wrap (nil when data starts with a valid header). headerLen is what a
// decoder may consume: the fixed part; the route only once the fixed part
// announced a usable length; in a kind 2 header the family byte once the
// route was valid, and the addresses once the family was known.
func wantRequest(data []byte) (req Request, headerLen int, want error) {
	switch {
	case len(data) == 0:
		return req, 0, io.EOF
	case len(data) < 3:
		return req, len(data), io.ErrUnexpectedEOF
	case data[0] != 1:
		return req, 3, ErrBadVersion
	case data[1] != 1 && data[1] != 2:
		return req, 3, ErrBadKind
	}
	n := int(data[2])
	if n == 0 || n > 64 {
		return req, 3, ErrBadRoute
	}
	if len(data) < 3+n {
		return req, 3 + n, io.ErrUnexpectedEOF
	}
	route := string(data[3 : 3+n])
	if !routeAlphabet.MatchString(route) {
		return req, 3 + n, ErrBadRoute
	}
	if data[1] == 1 {
		return Request{Route: route}, 3 + n, nil
	}
	off := 3 + n
	if len(data) < off+1 {
		return req, off + 1, io.ErrUnexpectedEOF
	}
	size := map[byte]int{1: 4, 2: 16}[data[off]]
	if size == 0 {
		return req, off + 1, ErrBadOrigin
	}
	end := off + 1 + 2*size + 4
	if len(data) < end {
		return req, end, io.ErrUnexpectedEOF
	}
	a := data[off+1 : end]
	src, _ := netip.AddrFromSlice(a[:size])
	dst, _ := netip.AddrFromSlice(a[size : 2*size])
	port := func(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }
	return Request{Route: route,
		Src: netip.AddrPortFrom(src, port(a[2*size:])),
		Dst: netip.AddrPortFrom(dst, port(a[2*size+2:])),
	}, end, nil
}

// requestFrom makes a request with addresses out of arbitrary bytes: the
// first byte picks IPv4 or IPv6 for each address (which may differ), the
// rest gives addresses and ports. It returns false when data is too short.
func requestFrom(data []byte) (Request, bool) {
	if len(data) < 1+2*16+4 {
		return Request{}, false
	}
	srcLen, dstLen := 4, 4
	if data[0]&1 != 0 {
		srcLen = 16
	}
	if data[0]&2 != 0 {
		dstLen = 16
	}
	a := data[1:]
	src, _ := netip.AddrFromSlice(a[:srcLen])
	dst, _ := netip.AddrFromSlice(a[srcLen : srcLen+dstLen])
	p := a[srcLen+dstLen:]
	return Request{Route: "r",
		Src: netip.AddrPortFrom(src, uint16(p[0])<<8|uint16(p[1])),
		Dst: netip.AddrPortFrom(dst, uint16(p[2])<<8|uint16(p[3])),
	}, true
}

// wantResponse decodes data the way doc.go describes a response header.
func wantResponse(data []byte) (resp Response, headerLen int, want error) {
	switch {
	case len(data) == 0:
		return Response{}, 0, io.EOF
	case len(data) < 3:
		return Response{}, len(data), io.ErrUnexpectedEOF
	case data[0] != 1:
		return Response{}, 3, ErrBadVersion
	}
	n := int(data[2])
	if len(data) < 3+n {
		return Response{}, 3 + n, io.ErrUnexpectedEOF
	}
	return Response{Status: Status(data[1]), Reason: string(data[3 : 3+n])}, 3 + n, nil
}

// allocated runs fn and returns the bytes it allocated. Should that exceed
// limit it tries twice more and returns the least: another goroutine
// allocating at the same moment cannot inflate all three.
func allocated(limit uint64, fn func()) uint64 {
	least := uint64(math.MaxUint64)
	var before, after runtime.MemStats
	for range 3 {
		runtime.ReadMemStats(&before)
		fn()
		runtime.ReadMemStats(&after)
		if least = min(least, after.TotalAlloc-before.TotalAlloc); least <= limit {
			break
		}
	}
	return least
}

func headerSeeds(f *testing.F) {
	long := append([]byte{Version, kindOpen, MaxRouteLen}, bytes.Repeat([]byte("r"), 64<<10)...)
	for _, seed := range [][]byte{
		nil,
		{Version},
		{Version, kindOpen, 7},
		[]byte("\x01\x01\x07default"),
		[]byte("\x01\x01\x07defaultapp bytes"),
		[]byte("\x01\x01\x0bpg.main-1_x"),
		[]byte("\x01\x01\x40" + strings.Repeat("r", MaxRouteLen)),
		[]byte("\x01\x01\x41" + strings.Repeat("r", MaxRouteLen+1)),
		[]byte("\x01\x00\x00"),
		[]byte("\x01\x04\x12no route \"x\" here"),
		[]byte("\x01\x02\xff" + strings.Repeat("x", MaxReasonLen)),
		[]byte("\x01\x02\xff" + strings.Repeat("x", MaxReasonLen-1)),
		[]byte("\x01\x01\x03a\x00b"),
		[]byte("\x01\x01\x02\xc3\xbc"),
		[]byte("\x01\x02\x02pg\x01\x7f\x00\x00\x01\x7f\x00\x00\x01\xc8\x22\x3c\x48app bytes"),
		[]byte("\x01\x02\x02pg\x02" + strings.Repeat("\x00", 15) + "\x01" + strings.Repeat("\x00", 10) + "\xff\xff\x7f\x00\x00\x01\xc8\x22\x3c\x48"),
		[]byte("\x01\x02\x02pg\x00\x7f\x00\x00\x01"),
		[]byte("\x01\x02\x02pg\x01\x7f\x00"),
		[]byte("\x01\x02\x02pg"),
		[]byte("\x01\x03\x02pg"),
		[]byte("GET / HTTP/1.1\r\n"),
		[]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), // a TLS ClientHello
		long,
	} {
		f.Add(seed)
	}
}

func FuzzReadRequest(f *testing.F) {
	headerSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		wantReq, headerLen, want := wantRequest(data)
		for _, rd := range splitReaders {
			r := bytes.NewReader(data)
			req, err := ReadRequest(rd.wrap(r))
			if want == nil && (err != nil || req != wantReq) {
				t.Fatalf("%s: ReadRequest(%s) = %+v, %v; want %+v", rd.name, short(data), req, err, wantReq)
			}
			if want != nil && !errors.Is(err, want) {
				t.Fatalf("%s: ReadRequest(%s) = %+v, %v; want an error wrapping %v", rd.name, short(data), req, err, want)
			}
			if read := len(data) - r.Len(); read > headerLen || (want == nil && read != headerLen) {
				t.Fatalf("%s: ReadRequest(%s) read %d bytes; the header is %d", rd.name, short(data), read, headerLen)
			}
		}
		if want == nil {
			enc, err := AppendRequest(nil, wantReq)
			if err != nil || !bytes.Equal(enc, data[:headerLen]) {
				t.Fatalf("AppendRequest(%+v) = %q, %v; want the bytes it was read from, %q", wantReq, enc, err, data[:headerLen])
			}
		}
		if n := allocated(headerAllocLimit, func() { ReadRequest(bytes.NewReader(data)) }); n > headerAllocLimit {
			t.Fatalf("ReadRequest of %d bytes allocated %d bytes; limit %d", len(data), n, headerAllocLimit)
		}

		// The other way round: data as a route name, and as addresses.
		name := string(data)
		enc, err := AppendRequest(nil, Request{Route: name})
		if !routeAlphabet.MatchString(name) {
			if !errors.Is(err, ErrBadRoute) {
				t.Fatalf("AppendRequest(%s) = %q, %v; want ErrBadRoute", short(data), enc, err)
			}
		} else if got, err := ReadRequest(bytes.NewReader(enc)); err != nil || got != (Request{Route: name}) {
			t.Fatalf("ReadRequest(AppendRequest(%s)) = %+v, %v", short(data), got, err)
		}
		if in, ok := requestFrom(data); ok {
			enc, err := AppendRequest(nil, in)
			if in.Src.Addr().Is4() != in.Dst.Addr().Is4() {
				if !errors.Is(err, ErrBadOrigin) {
					t.Fatalf("AppendRequest(%+v) of mixed families = %q, %v; want ErrBadOrigin", in, enc, err)
				}
				return
			}
			if got, err := ReadRequest(bytes.NewReader(enc)); err != nil || got != in {
				t.Fatalf("ReadRequest(AppendRequest(%+v)) = %+v, %v", in, got, err)
			}
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	headerSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		wantResp, headerLen, want := wantResponse(data)
		for _, rd := range splitReaders {
			r := bytes.NewReader(data)
			resp, err := ReadResponse(rd.wrap(r))
			if want == nil && (err != nil || resp != wantResp) {
				t.Fatalf("%s: ReadResponse(%s) = %+v, %v; want %+v", rd.name, short(data), resp, err, wantResp)
			}
			if want != nil && !errors.Is(err, want) {
				t.Fatalf("%s: ReadResponse(%s) = %+v, %v; want an error wrapping %v", rd.name, short(data), resp, err, want)
			}
			if read := len(data) - r.Len(); read > headerLen || (want == nil && read != headerLen) {
				t.Fatalf("%s: ReadResponse(%s) read %d bytes; the header is %d", rd.name, short(data), read, headerLen)
			}
		}
		if want == nil {
			if enc := AppendResponse(nil, wantResp); !bytes.Equal(enc, data[:headerLen]) {
				t.Fatalf("AppendResponse(%+v) = %q; want the bytes it was read from, %q", wantResp, enc, data[:headerLen])
			}
		}
		if n := allocated(headerAllocLimit, func() { ReadResponse(bytes.NewReader(data)) }); n > headerAllocLimit {
			t.Fatalf("ReadResponse of %d bytes allocated %d bytes; limit %d", len(data), n, headerAllocLimit)
		}

		// The other way round: data as a status and a reason, which the
		// encoder cuts to MaxReasonLen.
		if len(data) == 0 {
			return
		}
		in := Response{Status: Status(data[0]), Reason: string(data[1:])}
		sent := Response{Status: in.Status, Reason: in.Reason[:min(len(in.Reason), MaxReasonLen)]}
		enc := AppendResponse(nil, in)
		if got, err := ReadResponse(bytes.NewReader(enc)); err != nil || got != sent {
			t.Fatalf("ReadResponse(AppendResponse(%v, %s)) = %+v, %v; want %+v", in.Status, short(data[1:]), got, err, sent)
		}
	})
}
