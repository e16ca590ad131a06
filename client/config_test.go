package client

import (
	"strings"
	"testing"

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
		{"valid", Config{Server: "db.example.com:8443", TLS: policy, Routes: []Route{{Listen: "127.0.0.1:15432"}}}, ""},
		{"two ephemeral listeners", Config{Server: "h:1", TLS: policy, Routes: []Route{{Listen: "127.0.0.1:0"}, {Listen: "127.0.0.1:0", Route: "b"}}}, ""},
		{"no server", Config{TLS: policy, Routes: []Route{{Listen: "127.0.0.1:1"}}}, "server address"},
		{"no port", Config{Server: "db", TLS: policy, Routes: []Route{{Listen: "127.0.0.1:1"}}}, "server address"},
		{"no routes", Config{Server: "h:1", TLS: policy}, "no routes"},
		{"no listen", Config{Server: "h:1", TLS: policy, Routes: []Route{{Route: "x"}}}, "no listen address"},
		{"duplicate listen", Config{Server: "h:1", TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5"}, {Listen: "127.0.0.1:5"}}}, "used twice"},
		{"bad route", Config{Server: "h:1", TLS: policy, Routes: []Route{{Listen: "127.0.0.1:5", Route: "no spaces"}}}, "invalid route name"},
		{"no credentials", Config{Server: "h:1", Routes: []Route{{Listen: "127.0.0.1:5"}}}, "no credentials"},
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
	c := Config{Server: "db.example.com:8443", Routes: []Route{{Listen: "x"}}}
	d := c.withDefaults()
	if d.TLS.ServerName != "db.example.com" {
		t.Errorf("server name default = %q, want the host of Server", d.TLS.ServerName)
	}
	if d.Routes[0].Route != "default" {
		t.Errorf("route default = %q", d.Routes[0].Route)
	}
}
