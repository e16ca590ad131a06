package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfigFile writes a YAML file into dir and returns its path. Each
// %s in body is replaced by the next arg.
func writeConfigFile(t *testing.T, dir, name, body string, args ...any) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(fmt.Sprintf(body, args...)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// serverYAMLTemplate is a server config (listen address, routes) whose
// certificate paths are relative to the file: pki/ next to it.
const serverYAMLTemplate = `listen: %s
tls:
  cert: pki/db.example.com.crt
  key: pki/db.example.com.key
  ca: pki/ca.crt
routes:
%s`

// TestConfigErrorsBinary: every configuration mistake a user is likely to
// make stops the agent with exit status 2 and a message that names the
// flag or file at fault and the problem.
func TestConfigErrorsBinary(t *testing.T) {
	dir := t.TempDir()
	k := newBinPKI(t, filepath.Join(dir, "pki"))
	other := newBinPKI(t, filepath.Join(dir, "other")) // another CA
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	inUse := held.Addr().String()
	server := k.serverArgs("127.0.0.1:0", "127.0.0.1:5432")
	missing := filepath.Join(dir, "pki", "missing.crt")

	route := "  db:\n    target: 127.0.0.1:5432\n    allow:\n      - cn: app\n"
	unknownKey := writeConfigFile(t, dir, "unknown-key.yaml", serverYAMLTemplate, "127.0.0.1:0",
		"  db:\n    target: 127.0.0.1:5432\n    alow:\n      - cn: app\n")
	badTarget := writeConfigFile(t, dir, "bad-target.yaml", serverYAMLTemplate, "127.0.0.1:0",
		"  db:\n    target: db.internal\n    allow_all: true\n")
	sub := filepath.Join(dir, "sub") // no pki/ in here
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	missingRel := writeConfigFile(t, sub, "missing-cert.yaml", serverYAMLTemplate, "127.0.0.1:0", route)
	clientUnknown := writeConfigFile(t, dir, "client.yaml",
		"server: 127.0.0.1:8443\nlisten: 127.0.0.1:0\ntls:\n  cert: pki/app.crt\n  key: pki/app.key\n  ca: pki/ca.crt\n")

	for _, tc := range []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"missing cert file", withFlag(server, "--cert", missing),
			[]string{"--cert", missing, "no such file"}},
		{"key of another pair", withFlag(server, "--key", k.appKey),
			[]string{"--key", k.appKey, "does not match"}},
		{"cert not signed by --ca", withFlag(server, "--ca", other.ca),
			[]string{"--ca", "not signed"}},
		{"server port in use", withFlag(server, "--listen", inUse),
			[]string{inUse, "address already in use"}},
		{"client port in use", withFlag(k.clientArgs("127.0.0.1:8443"), "--listen", inUse),
			[]string{inUse, "address already in use"}},
		{"no allow rule", withoutFlag(server, "--allow-cn"),
			[]string{`route "default"`, "allow", "deny by default"}},
		{"config: unknown key", []string{"server", "--config", unknownKey},
			[]string{unknownKey, "alow"}},
		{"config: target without port", []string{"server", "--config", badTarget},
			[]string{badTarget, "db.internal", "missing port"}},
		{"config: relative cert path resolved against the file", []string{"server", "--config", missingRel},
			[]string{missingRel, "tls.cert", filepath.Join(sub, "pki", "db.example.com.crt"), "no such file"}},
		{"client config: unknown key", []string{"client", "--config", clientUnknown},
			[]string{clientUnknown, "listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runBinary(t, nil, tc.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2\nstderr:\n%s", r.code, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr does not mention %q:\n%s", w, r.stderr)
				}
			}
		})
	}
}
