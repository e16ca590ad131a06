package tunnel

import (
	"errors"
	"strings"
	"testing"
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
