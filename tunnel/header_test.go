package tunnel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	for _, route := range []string{"default", "a", "pg.main-1_x", strings.Repeat("r", MaxRouteLen)} {
		b, err := AppendRequest(nil, route)
		if err != nil {
			t.Fatalf("AppendRequest(%q): %v", route, err)
		}
		r := bytes.NewReader(append(b, "app bytes"...))
		got, err := ReadRequest(r)
		if err != nil || got != route {
			t.Fatalf("ReadRequest = %q, %v; want %q", got, err, route)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "app bytes" {
			t.Fatalf("ReadRequest consumed past the header: rest %q", rest)
		}
	}
}

func TestAppendRequestRejects(t *testing.T) {
	for _, route := range []string{"", "has space", "slash/y", "ü", strings.Repeat("r", MaxRouteLen+1)} {
		if _, err := AppendRequest(nil, route); !errors.Is(err, ErrBadRoute) {
			t.Errorf("AppendRequest(%q) err = %v, want ErrBadRoute", route, err)
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
