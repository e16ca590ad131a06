package server

import (
	"strings"
	"testing"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/tunnel"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConfigValidate(t *testing.T) {
	ca := certstest.New(t)
	c := &tunnel.Credentials{Certificate: ca.Server(t, "localhost"), Roots: ca.Pool()}
	policy := tunnel.TLSPolicy{Credentials: func() *tunnel.Credentials { return c }}
	allowApp := tunnel.ACL{Rules: []tunnel.Rule{{CN: "app"}}}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"valid", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "127.0.0.1:5432", ACL: allowApp}}}, ""},
		{"allow all", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "db:5432", ACL: tunnel.ACL{AllowAll: true}}}}, ""},
		{"no listen", Config{TLS: policy, Routes: map[string]Route{"default": {Target: "db:1", ACL: allowApp}}}, "no listen address"},
		{"no credentials", Config{Listen: ":0", Routes: map[string]Route{"default": {Target: "db:1", ACL: allowApp}}}, "no credentials"},
		{"no routes", Config{Listen: ":0", TLS: policy}, "no routes"},
		{"deny by default", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "db:1"}}}, "allows nobody"},
		{"bad target", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "db", ACL: allowApp}}}, "target"},
		{"unix target", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "unix:/var/run/postgresql/.s.PGSQL.5432", ACL: allowApp}}}, ""},
		{"relative unix target", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "unix:pg.sock", ACL: allowApp}}}, "must be absolute"},
		{"proxy protocol v2", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "db:1", ACL: allowApp, ProxyProtocol: ProxyV2}}}, ""},
		{"proxy protocol none", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "db:1", ACL: allowApp, ProxyProtocol: ProxyNone}}}, ""},
		{"proxy protocol v1", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"pg": {Target: "db:1", ACL: allowApp, ProxyProtocol: "v1"}}}, `route "pg": proxy protocol "v1"`},
		{"bad route name", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"a b": {Target: "db:1", ACL: allowApp}}}, "name must be"},
		{"bad rule", Config{Listen: ":0", TLS: policy, Routes: map[string]Route{"default": {Target: "db:1", ACL: tunnel.ACL{Rules: []tunnel.Rule{{}}}}}}, "rule 1"},
		{"tls 1.1", Config{Listen: ":0", TLS: tunnel.TLSPolicy{Credentials: policy.Credentials, MinVersion: 0x0302}, Routes: map[string]Route{"default": {Target: "db:1", ACL: allowApp}}}, "not allowed"},
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
