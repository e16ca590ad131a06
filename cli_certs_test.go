package main

import (
	"bytes"
	"crypto/x509"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
)

// initCA creates a CA in dir with `mtunnel certs init`.
func initCA(t *testing.T, dir string, extra ...string) {
	t.Helper()
	if code, _, stderr := runCLI(t, slices.Concat([]string{"certs", "init", "--dir", dir}, extra)...); code != 0 {
		t.Fatalf("certs init: exit code %d; stderr:\n%s", code, stderr)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(cs) != 1 {
		t.Fatalf("%s holds %d certificates, want 1", path, len(cs))
	}
	return cs[0]
}

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}

func TestCertsInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki") // does not exist yet
	code, stdout, stderr := runCLI(t, "certs", "init", "--dir", dir, "--name", "Test CA")
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
	}
	caFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	checkMode(t, caFile, 0o644)
	checkMode(t, keyFile, 0o600)
	for _, f := range []string{caFile, keyFile} {
		if !strings.Contains(stdout, "wrote "+f) {
			t.Errorf("stdout does not report %s:\n%s", f, stdout)
		}
	}
	ca := readCert(t, caFile)
	if !ca.IsCA || ca.Subject.CommonName != "Test CA" {
		t.Errorf("ca.crt: IsCA %v, CN %q; want a CA named \"Test CA\"", ca.IsCA, ca.Subject.CommonName)
	}
	if _, err := certs.LoadCA(dir); err != nil {
		t.Errorf("LoadCA: %v", err)
	}
	before, _ := os.ReadFile(caFile)

	// Again without --force: refused, the CA left as it was.
	code, _, stderr = runCLI(t, "certs", "init", "--dir", dir)
	if code != 1 {
		t.Errorf("second init: exit code %d, want 1", code)
	}
	if !strings.Contains(stderr, caFile) && !strings.Contains(stderr, keyFile) || !strings.Contains(stderr, "--force") {
		t.Errorf("second init: stderr %q should name the existing file and suggest --force", stderr)
	}
	if after, _ := os.ReadFile(caFile); !bytes.Equal(before, after) {
		t.Error("second init without --force replaced ca.crt")
	}

	// With --force: a new CA.
	initCA(t, dir, "--force")
	if after, _ := os.ReadFile(caFile); bytes.Equal(before, after) {
		t.Error("init --force left ca.crt unchanged")
	}
	checkMode(t, keyFile, 0o600)
}

func TestCertsIssueServer(t *testing.T) {
	dir := t.TempDir()
	initCA(t, dir)
	code, stdout, stderr := runCLI(t, "certs", "issue", "--dir", dir, "--name", "gw", "--server",
		"--dns", "x.example.com", "--dns", "y.example.com", "--ip", "127.0.0.1", "--ip", "::1")
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
	}
	certFile, keyFile := filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	checkMode(t, certFile, 0o644)
	checkMode(t, keyFile, 0o600)
	c := readCert(t, certFile)
	if c.Subject.CommonName != "gw" {
		t.Errorf("CN = %q, want gw", c.Subject.CommonName)
	}
	if !reflect.DeepEqual(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("ExtKeyUsage = %v, want [ServerAuth] only", c.ExtKeyUsage)
	}
	if !reflect.DeepEqual(c.DNSNames, []string{"x.example.com", "y.example.com"}) {
		t.Errorf("DNSNames = %q", c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v, want [127.0.0.1 ::1]", c.IPAddresses)
	}
	if c.IsCA {
		t.Error("leaf is a CA")
	}
	if !strings.Contains(stdout, "roles server,") || !strings.Contains(stdout, "x.example.com, y.example.com, 127.0.0.1, ::1") {
		t.Errorf("stdout does not summarise roles and names:\n%s", stdout)
	}
	pair, err := certs.LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("LoadKeyPair: %v", err)
	}
	roots, _, err := certs.LoadPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.VerifyChain(pair.Leaf, nil, roots, x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("VerifyChain: %v", err)
	}
	if err := certs.VerifyChain(pair.Leaf, nil, roots, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("server certificate verified for ClientAuth")
	}
}

// TestCertsIssueEnv drives certs init and issue by MTUNNEL_* variables
// alone.
func TestCertsIssueEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("MTUNNEL_DIR", dir)
	t.Setenv("MTUNNEL_NAME", "Env CA")
	if code, _, stderr := runCLI(t, "certs", "init"); code != 0 {
		t.Fatalf("certs init: exit code %d; stderr:\n%s", code, stderr)
	}
	if got := readCert(t, filepath.Join(dir, "ca.crt")).Subject.CommonName; got != "Env CA" {
		t.Errorf("CA CN = %q, want \"Env CA\"", got)
	}
	t.Setenv("MTUNNEL_NAME", "app")
	t.Setenv("MTUNNEL_CLIENT", "true")
	t.Setenv("MTUNNEL_URI", "spiffe://example.org/app")
	t.Setenv("MTUNNEL_VALID_FOR", "48h")
	if code, _, stderr := runCLI(t, "certs", "issue"); code != 0 {
		t.Fatalf("certs issue: exit code %d; stderr:\n%s", code, stderr)
	}
	c := readCert(t, filepath.Join(dir, "app.crt"))
	if !reflect.DeepEqual(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage = %v, want [ClientAuth] only", c.ExtKeyUsage)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org/app" {
		t.Errorf("URIs = %v", c.URIs)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d < 48*time.Hour || d > 49*time.Hour {
		t.Errorf("validity %v, want about 48h", d)
	}
}

func TestCertsUsageErrors(t *testing.T) {
	dir := t.TempDir()
	initCA(t, dir)
	issue := []string{"certs", "issue", "--dir", dir}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"issue without role", slices.Concat(issue, []string{"--name", "x"}), "give --server, --client or both"},
		{"issue without name", slices.Concat(issue, []string{"--server"}), "--name is required"},
		{"issue without dir", []string{"certs", "issue", "--name", "x", "--server"}, "--dir is required"},
		{"issue bad ip", slices.Concat(issue, []string{"--name", "x", "--server", "--ip", "localhost"}), `--ip "localhost"`},
		{"issue bad dns", slices.Concat(issue, []string{"--name", "x", "--server", "--dns", "a b"}), "a b"},
		{"issue name with slash", slices.Concat(issue, []string{"--name", "../x", "--client"}), "--name"},
		{"issue negative validity", slices.Concat(issue, []string{"--name", "x", "--client", "--valid-for", "-1h"}), "--valid-for"},
		{"issue unknown flag", slices.Concat(issue, []string{"--name", "x", "--client", "--bogus"}), "bogus"},
		{"issue stray argument", slices.Concat(issue, []string{"--name", "x", "--client", "extra"}), `"extra"`},
		{"init zero validity", []string{"certs", "init", "--dir", t.TempDir(), "--valid-for", "0s"}, "--valid-for"},
		{"init without dir", []string{"certs", "init"}, "--dir is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != 2 {
				t.Errorf("exit code = %d, want 2; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr = %q\nwant it to contain %q", stderr, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "x.crt")); err == nil {
		t.Error("a failed issue wrote x.crt")
	}
}

func TestCertsIssueWithoutCA(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runCLI(t, "certs", "issue", "--dir", dir, "--name", "x", "--client")
	if code != 1 {
		t.Errorf("exit code = %d, want 1", code)
	}
	if !strings.Contains(stderr, "mtunnel certs init --dir "+dir) {
		t.Errorf("stderr %q should say how to create the CA", stderr)
	}
}

// TestCertsFitAgents checks that what `mtunnel certs` issues is what the
// agents accept, each in its own role only.
func TestCertsFitAgents(t *testing.T) {
	dir := t.TempDir()
	initCA(t, dir)
	for _, args := range [][]string{
		{"--name", "localhost", "--server"},
		{"--name", "app", "--client"},
	} {
		if code, _, stderr := runCLI(t, slices.Concat([]string{"certs", "issue", "--dir", dir}, args)...); code != 0 {
			t.Fatalf("certs issue %v: exit code %d; stderr:\n%s", args, code, stderr)
		}
	}
	files := func(name string) []string {
		return []string{"--cert", filepath.Join(dir, name+".crt"), "--key", filepath.Join(dir, name+".key"), "--ca", filepath.Join(dir, "ca.crt")}
	}
	if _, err := resolveServer(t, slices.Concat([]string{"--listen", ":1", "--target", "db:1", "--allow-cn", "app"}, files("localhost"))); err != nil {
		t.Errorf("server with the server certificate: %v", err)
	}
	if _, err := resolveClient(t, slices.Concat([]string{"--server", "localhost:1", "--listen", ":1"}, files("app"))); err != nil {
		t.Errorf("client with the client certificate: %v", err)
	}
	if _, err := resolveServer(t, slices.Concat([]string{"--listen", ":1", "--target", "db:1", "--allow-cn", "app"}, files("app"))); err == nil {
		t.Error("server accepted the client certificate")
	}
	if _, err := resolveClient(t, slices.Concat([]string{"--server", "localhost:1", "--listen", ":1"}, files("localhost"))); err == nil {
		t.Error("client accepted the server certificate")
	}
}
