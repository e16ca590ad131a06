package tunnel

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSplitNetwork(t *testing.T) {
	long := "/" + strings.Repeat("s", MaxUnixPath-1)
	tests := []struct {
		in               string
		network, address string
		wantErr          bool
	}{
		{"127.0.0.1:5432", "tcp", "127.0.0.1:5432", false},
		{"[::1]:5432", "tcp", "[::1]:5432", false},
		{"db.internal", "tcp", "db.internal", false}, // TCP syntax is the net package's business
		{"unix:/var/run/postgresql/.s.PGSQL.5432", "unix", "/var/run/postgresql/.s.PGSQL.5432", false},
		{"unix:" + long, "unix", long, false},
		{"unix:" + long + "s", "", "", true},
		{"unix:run/pg.sock", "", "", true},
		{"unix:", "", "", true},
		{"unix:@abstract", "", "", true},
		{"unix:/a\x00b", "", "", true},
	}
	for _, tt := range tests {
		network, address, err := SplitNetwork(tt.in)
		if tt.wantErr {
			if !errors.Is(err, ErrBadAddress) {
				t.Errorf("SplitNetwork(%q) = %q, %q, %v; want ErrBadAddress", tt.in, network, address, err)
			}
			continue
		}
		if err != nil || network != tt.network || address != tt.address {
			t.Errorf("SplitNetwork(%q) = %q, %q, %v; want %q, %q", tt.in, network, address, err, tt.network, tt.address)
		}
	}
}

func TestKeepAlive(t *testing.T) {
	for addr, want := range map[string]time.Duration{
		"127.0.0.1:5432":        -1,
		"127.9.9.9:1":           -1,
		"[::1]:6379":            -1,
		"[::ffff:127.0.0.1]:80": -1,
		"localhost:5432":        -1,
		"10.0.0.7:5432":         0,
		"db.internal:5432":      0,
		"[2001:db8::1]:5432":    0,
		"/run/pg.sock":          0,
	} {
		if got := KeepAlive(addr); got != want {
			t.Errorf("KeepAlive(%q) = %v, want %v", addr, got, want)
		}
	}
}
