package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	v4 := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:51234"), netip.MustParseAddrPort("127.0.0.1:15432")}
	v6 := []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::7]:51234"), netip.MustParseAddrPort("[::1]:15432")}
	for _, route := range []string{"default", "a", "pg.main-1_x", strings.Repeat("r", MaxRouteLen)} {
		for _, req := range []Request{
			{Route: route},
			{Route: route, Src: v4[0], Dst: v4[1]},
			{Route: route, Src: v6[0], Dst: v6[1]},
		} {
			b, err := AppendRequest(nil, req)
			if err != nil {
				t.Fatalf("AppendRequest(%+v): %v", req, err)
			}
			r := bytes.NewReader(append(b, "app bytes"...))
			got, err := ReadRequest(r)
			if err != nil || got != req {
				t.Fatalf("ReadRequest = %+v, %v; want %+v", got, err, req)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != "app bytes" {
				t.Fatalf("ReadRequest consumed past the header: rest %q", rest)
			}
		}
	}
}

// TestAppendRequestBytes checks the encoder against doc.go by hand.
func TestAppendRequestBytes(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"kind 1", Request{Route: "pg"}, "\x01\x01\x02pg"},
		{"kind 2 IPv4", Request{Route: "pg", Src: netip.MustParseAddrPort("192.0.2.7:51234"), Dst: netip.MustParseAddrPort("127.0.0.1:15432")},
			"\x01\x02\x02pg" + "\x01" + "\xc0\x00\x02\x07" + "\x7f\x00\x00\x01" + "\xc8\x22" + "\x3c\x48"},
		{"kind 2 IPv6", Request{Route: "pg", Src: netip.MustParseAddrPort("[2001:db8::7]:1"), Dst: netip.MustParseAddrPort("[::1]:2")},
			"\x01\x02\x02pg" + "\x02" + "\x20\x01\x0d\xb8" + strings.Repeat("\x00", 11) + "\x07" + strings.Repeat("\x00", 15) + "\x01" + "\x00\x01" + "\x00\x02"},
		{"zones are not sent", Request{Route: "pg", Src: netip.MustParseAddrPort("[fe80::1%eth0]:1"), Dst: netip.MustParseAddrPort("[fe80::2%eth0]:2")},
			"\x01\x02\x02pg" + "\x02" + "\xfe\x80" + strings.Repeat("\x00", 13) + "\x01" + "\xfe\x80" + strings.Repeat("\x00", 13) + "\x02" + "\x00\x01" + "\x00\x02"},
	}
	for _, tt := range tests {
		got, err := AppendRequest(nil, tt.req)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: AppendRequest = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestAppendRequestRejects(t *testing.T) {
	for _, route := range []string{"", "has space", "slash/y", "ü", strings.Repeat("r", MaxRouteLen+1)} {
		if _, err := AppendRequest(nil, Request{Route: route}); !errors.Is(err, ErrBadRoute) {
			t.Errorf("AppendRequest(%q) err = %v, want ErrBadRoute", route, err)
		}
	}
	a4, a6 := netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("[::1]:1")
	for _, req := range []Request{
		{Route: "pg", Src: a4},
		{Route: "pg", Dst: a4},
		{Route: "pg", Src: a4, Dst: a6},
		{Route: "pg", Src: netip.MustParseAddrPort("[::ffff:127.0.0.1]:1"), Dst: a4},
	} {
		if b, err := AppendRequest(nil, req); !errors.Is(err, ErrBadOrigin) {
			t.Errorf("AppendRequest(%+v) = %q, %v; want ErrBadOrigin", req, b, err)
		}
	}
}

func TestReadRequestErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"truncated fixed part", []byte{Version, kindOpen}, io.ErrUnexpectedEOF},
		{"truncated route", []byte{Version, kindOpen, 5, 'a', 'b'}, io.ErrUnexpectedEOF},
		// Found by FuzzReadRequest: io.ReadFull said io.EOF here.
		{"route missing", []byte{Version, kindOpen, 5}, io.ErrUnexpectedEOF},
		{"bad version", []byte{9, kindOpen, 1, 'a'}, ErrBadVersion},
		{"bad kind", []byte{Version, 7, 1, 'a'}, ErrBadKind},
		{"zero length", []byte{Version, kindOpen, 0}, ErrBadRoute},
		{"oversized", append([]byte{Version, kindOpen, MaxRouteLen + 1}, bytes.Repeat([]byte{'a'}, 200)...), ErrBadRoute},
		{"bad bytes", []byte{Version, kindOpen, 3, 'a', 0, 'b'}, ErrBadRoute},
		{"http", []byte("GET / HTTP/1.1\r\n"), ErrBadVersion},
		{"kind 2 without family", []byte{Version, kindOpenFrom, 1, 'a'}, io.ErrUnexpectedEOF},
		{"kind 2 family 0", []byte{Version, kindOpenFrom, 1, 'a', 0, 1, 2, 3, 4}, ErrBadOrigin},
		{"kind 2 family 3 (unix)", []byte{Version, kindOpenFrom, 1, 'a', 3, 1, 2, 3, 4}, ErrBadOrigin},
		{"kind 2 addresses cut", []byte{Version, kindOpenFrom, 1, 'a', familyIPv4, 127, 0, 0, 1, 127}, io.ErrUnexpectedEOF},
		{"kind 2 IPv6 with IPv4 length", append([]byte{Version, kindOpenFrom, 1, 'a', familyIPv6}, make([]byte, 12)...), io.ErrUnexpectedEOF},
		{"kind 2 bad route", []byte{Version, kindOpenFrom, 1, '/', familyIPv4}, ErrBadRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadRequest(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	tests := []struct {
		in, want Response
	}{
		{Response{Status: StatusOK}, Response{Status: StatusOK}},
		{Response{StatusForbidden, "identity CN=x is not allowed"}, Response{StatusForbidden, "identity CN=x is not allowed"}},
		{Response{StatusUnreachable, strings.Repeat("x", 300)}, Response{StatusUnreachable, strings.Repeat("x", MaxReasonLen)}},
	}
	for _, tt := range tests {
		b := AppendResponse(nil, tt.in)
		got, err := ReadResponse(bytes.NewReader(b))
		if err != nil || got != tt.want {
			t.Errorf("round trip of %v = %v, %v", tt.in.Status, got, err)
		}
	}
	if _, err := ReadResponse(bytes.NewReader([]byte{Version, 2, 10, 'a'})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated reason: err = %v", err)
	}
	// Found by FuzzReadResponse: io.ReadFull said io.EOF here.
	if _, err := ReadResponse(bytes.NewReader([]byte{Version, 2, 10})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reason missing: err = %v", err)
	}
	if _, err := ReadResponse(bytes.NewReader([]byte{3, 0, 0})); !errors.Is(err, ErrBadVersion) {
		t.Errorf("bad version: err = %v", err)
	}
}

func TestStatusString(t *testing.T) {
	if StatusForbidden.String() != "forbidden" || Status(99).String() != "status_99" {
		t.Fatal("unexpected status names")
	}
}
