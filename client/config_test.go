package client

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigValidate(t *testing.T) {
	policy := tunnel.TLSPolicy{Credentials: func() *tunnel.Credentials { return &tunnel.Credentials{} }}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"valid", Config{Servers: []string{"db.example.com:8443"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:15432"}}}, ""},
		{"two ephemeral listeners", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:0"}, {Listen: "127.0.0.1:0", Route: "b"}}}, ""},
		{"no server", Config{TLS: policy, Routes: []Route{{Listen: "127.0.0.1:1"}}}, "no server address"},
		{"two servers", Config{Servers: []string{"a:1", "b:1"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5"}}}, ""},
		{"server twice", Config{Servers: []string{"a:1", "a:1"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5"}}}, "given twice"},
		{"second server without port", Config{Servers: []string{"a:1", "b"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5"}}}, `server address "b"`},
		{"reconnect base above max", Config{Servers: []string{"a:1"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5"}},
			Reconnect: tunnel.Reconnect{Base: time.Minute, Max: time.Second}}, "above the maximum"},
		{"no port", Config{Servers: []string{"db"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:1"}}}, "server address"},
		{"no routes", Config{Servers: []string{"h:1"}, TLS: policy}, "no routes"},
		{"no listen", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Route: "x"}}}, "no listen address"},
		{"duplicate listen", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5"}, {Listen: "127.0.0.1:5"}}}, "used twice"},
		{"bad route", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5", Route: "no spaces"}}}, "invalid route name"},
		{"unix listener", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Listen: "unix:/run/mtunnel/pg.sock", ListenMode: 0o660}}}, ""},
		{"relative unix path", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Listen: "unix:pg.sock"}}}, "must be absolute"},
		{"unix path twice", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Listen: "unix:/a.sock"}, {Listen: "unix:/a.sock", Route: "b"}}}, "used twice"},
		{"mode on tcp", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5", ListenMode: 0o660}}}, "unix: listeners only"},
		{"setuid mode", Config{Servers: []string{"h:1"}, TLS: policy, Routes: []Route{{Listen: "unix:/a.sock", ListenMode: os.ModeSetuid | 0o600}}}, "permission bits only"},
		{"no credentials", Config{Servers: []string{"h:1"}, Routes: []Route{{Listen: "127.0.0.1:5"}}}, "no credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := Config{Servers: []string{"db.example.com:8443", "10.0.0.2:8443"}, Routes: []Route{{Listen: "x"}}}
	d := c.withDefaults()
	for srv, want := range map[string]string{"db.example.com:8443": "db.example.com", "10.0.0.2:8443": "10.0.0.2"} {
		if got := d.serverPolicy(srv).ServerName; got != want {
			t.Errorf("server name default for %s = %q, want the host of the server", srv, got)
		}
	}
	d.TLS.ServerName = "explicit.example.com"
	if got := d.serverPolicy("10.0.0.2:8443").ServerName; got != "explicit.example.com" {
		t.Errorf("an explicit server name gave way to %q", got)
	}
	if d.Routes[0].Route != "default" {
		t.Errorf("route default = %q", d.Routes[0].Route)
	}
	if d.Routes[0].ListenMode != 0o600 {
		t.Errorf("listen mode default = %#o, want 0600", uint32(d.Routes[0].ListenMode))
	}
}
