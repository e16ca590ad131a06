package main

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"github.com/mtunnel/mtunnel/certs/certstest"
	"io/fs"
	"net"
	"os"
	"os/exec"
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
		{"intermediate with --server", slices.Concat(issue, []string{"--name", "x", "--intermediate", "--server"}), "--server cannot be used with --intermediate"},
		{"intermediate with --client", slices.Concat(issue, []string{"--name", "x", "--intermediate", "--client"}), "--client cannot be used with --intermediate"},
		{"intermediate with --dns", slices.Concat(issue, []string{"--name", "x", "--intermediate", "--dns", "a.example"}), "--dns cannot be used"},
		{"intermediate without name", slices.Concat(issue, []string{"--intermediate"}), "--name is required"},
		{"intermediate zero validity", slices.Concat(issue, []string{"--name", "x", "--intermediate", "--valid-for", "0s"}), "--valid-for"},
		{"permitted-dns on a leaf", slices.Concat(issue, []string{"--name", "x", "--client", "--permitted-dns", "a.example"}), "--permitted-dns only applies with --intermediate"},
		{"bad permitted-dns", slices.Concat(issue, []string{"--name", "x", "--intermediate", "--permitted-dns", "*.a.example"}), "*.a.example"},
		{"ocsp-url not http", slices.Concat(issue, []string{"--name", "x", "--client", "--ocsp-url", "ftp://ocsp.example"}), "ftp://ocsp.example"},
		{"crl-url without host", slices.Concat(issue, []string{"--name", "x", "--intermediate", "--crl-url", "http:///x.crl"}), "http:///x.crl"},
		{"ca-name reserved", slices.Concat(issue, []string{"--name", "x", "--client", "--ca-name", "ca"}), "--ca-name"},
		{"revoke without cert", []string{"certs", "revoke", "--dir", dir}, "--cert is required"},
		{"revoke without dir", []string{"certs", "revoke", "--cert", "x.crt"}, "--dir is required"},
		{"revoke unknown reason", []string{"certs", "revoke", "--dir", dir, "--cert", "x.crt", "--reason", "lost"}, "keyCompromise"},
		{"revoke removeFromCRL", []string{"certs", "revoke", "--dir", dir, "--cert", "x.crt", "--reason", "removeFromCRL"}, "delta CRLs"},
		{"revoke stray argument", []string{"certs", "revoke", "--dir", dir, "--cert", "x.crt", "extra"}, `"extra"`},
		{"crl zero next update", []string{"certs", "crl", "--dir", dir, "--next-update", "0s"}, "--next-update"},
		{"crl bad next update", []string{"certs", "crl", "--dir", dir, "--next-update", "tomorrow"}, "next-update"},
		{"crl without dir", []string{"certs", "crl"}, "--dir is required"},
		{"show without file", []string{"certs", "show"}, "exactly one certificate FILE"},
		{"show two files", []string{"certs", "show", "a.crt", "b.crt"}, "exactly one certificate FILE"},
		{"show unknown flag after file", []string{"certs", "show", "a.crt", "--bogus"}, "--bogus"},
		{"show --ca without value", []string{"certs", "show", "a.crt", "--ca"}, "--ca"},
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

// certsOK runs an mtunnel command that must succeed and returns its
// standard output.
func certsOK(t *testing.T, args ...string) string {
	t.Helper()
	code, stdout, stderr := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("mtunnel %s: exit code %d; stderr:\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

func readChain(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return cs
}

// indexStatus returns the status of serial in dir/index.txt, 0 if absent.
func indexStatus(t *testing.T, dir string, c *x509.Certificate) byte {
	t.Helper()
	entries, err := certs.ReadIndex(filepath.Join(dir, "index.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Serial.Cmp(c.SerialNumber) == 0 {
			return e.Status
		}
	}
	return 0
}

func TestCertsIssueIntermediate(t *testing.T) {
	dir := t.TempDir()
	initCA(t, dir)
	stdout := certsOK(t, "certs", "issue", "--dir", dir, "--intermediate", "--name", "corp",
		"--permitted-dns", "corp.example", "--permitted-dns", ".svc.example",
		"--ocsp-url", "http://ocsp.example/", "--crl-url", "http://crl.example/ca.crl")
	certFile, keyFile := filepath.Join(dir, "corp.crt"), filepath.Join(dir, "corp.key")
	checkMode(t, certFile, 0o644)
	checkMode(t, keyFile, 0o600)
	if !strings.Contains(stdout, "wrote "+certFile) || !strings.Contains(stdout, "--ca-name corp") {
		t.Errorf("stdout does not report the intermediate and how to use it:\n%s", stdout)
	}
	c := readCert(t, certFile)
	root := readCert(t, filepath.Join(dir, "ca.crt"))
	if !c.IsCA || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Errorf("IsCA %v MaxPathLen %d MaxPathLenZero %v, want a CA for leaves only", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if !reflect.DeepEqual(c.PermittedDNSDomains, []string{"corp.example", ".svc.example"}) || !c.PermittedDNSDomainsCritical {
		t.Errorf("PermittedDNSDomains %q (critical %v)", c.PermittedDNSDomains, c.PermittedDNSDomainsCritical)
	}
	if !reflect.DeepEqual(c.OCSPServer, []string{"http://ocsp.example/"}) || !reflect.DeepEqual(c.CRLDistributionPoints, []string{"http://crl.example/ca.crl"}) {
		t.Errorf("OCSPServer %q, CRLDistributionPoints %q", c.OCSPServer, c.CRLDistributionPoints)
	}
	if err := c.CheckSignatureFrom(root); err != nil {
		t.Errorf("not signed by ca.crt: %v", err)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d < 4*365*24*time.Hour {
		t.Errorf("validity %v; an intermediate should not get the 90-day leaf default", d)
	}
	if got := indexStatus(t, dir, c); got != certs.IndexValid {
		t.Errorf("index.txt status %q for the intermediate, want V", got)
	}
}

func TestCertsIssueFromIntermediate(t *testing.T) {
	dir := t.TempDir()
	initCA(t, dir)
	certsOK(t, "certs", "issue", "--dir", dir, "--intermediate", "--name", "corp", "--permitted-dns", "corp.example")
	stdout := certsOK(t, "certs", "issue", "--dir", dir, "--ca-name", "corp", "--name", "gw", "--server",
		"--dns", "gw.corp.example", "--crl-url", "http://crl.example/corp.crl")
	if !strings.Contains(stdout, `intermediate CA "CN=corp"`) {
		t.Errorf("stdout does not mention the chain:\n%s", stdout)
	}
	certFile, keyFile := filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	chain := readChain(t, certFile)
	if len(chain) != 2 || chain[0].Subject.CommonName != "gw" || !chain[1].Equal(readCert(t, filepath.Join(dir, "corp.crt"))) {
		t.Fatalf("gw.crt holds %d certificates, want gw then corp", len(chain))
	}
	if !reflect.DeepEqual(chain[0].CRLDistributionPoints, []string{"http://crl.example/corp.crl"}) {
		t.Errorf("CRLDistributionPoints = %q", chain[0].CRLDistributionPoints)
	}
	pair, err := certs.LoadKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, _, err := certs.LoadPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.VerifyChain(pair.Leaf, chain[1:], roots, x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("gw.crt does not verify against ca.crt: %v", err)
	}
	if got := indexStatus(t, dir, chain[0]); got != certs.IndexValid {
		t.Errorf("index.txt status %q for gw, want V", got)
	}

	// A name outside the intermediate's constraints: refused, nothing
	// written or recorded.
	before, _ := os.ReadFile(filepath.Join(dir, "index.txt"))
	code, _, stderr := runCLI(t, "certs", "issue", "--dir", dir, "--ca-name", "corp", "--name", "evil", "--server", "--dns", "evil.example")
	if code != 2 || !strings.Contains(stderr, "evil.example") || !strings.Contains(stderr, "corp.example") {
		t.Errorf("name outside the constraints: exit code %d, stderr %q; want 2 naming the name and the constraint", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "evil.crt")); err == nil {
		t.Error("refused certificate was written")
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "index.txt")); !bytes.Equal(before, after) {
		t.Error("refused certificate was recorded in index.txt")
	}

	// An intermediate that may only sign leaves cannot sign a CA.
	code, _, stderr = runCLI(t, "certs", "issue", "--dir", dir, "--ca-name", "corp", "--intermediate", "--name", "deeper")
	if code != 2 || !strings.Contains(stderr, "path length 0") {
		t.Errorf("intermediate under corp: exit code %d, stderr %q; want 2 and the path length", code, stderr)
	}

	code, _, stderr = runCLI(t, "certs", "issue", "--dir", dir, "--ca-name", "nosuch", "--name", "x", "--client")
	if code != 1 || !strings.Contains(stderr, "--intermediate") {
		t.Errorf("missing intermediate: exit code %d, stderr %q; want 1 and how to create it", code, stderr)
	}
}

func TestCertsRevokeAndCRL(t *testing.T) {
	dir := t.TempDir()
	initCA(t, dir)
	certsOK(t, "certs", "issue", "--dir", dir, "--name", "lost", "--client")
	certsOK(t, "certs", "issue", "--dir", dir, "--name", "kept", "--client")
	lost, kept := readCert(t, filepath.Join(dir, "lost.crt")), readCert(t, filepath.Join(dir, "kept.crt"))
	if indexStatus(t, dir, lost) != certs.IndexValid || indexStatus(t, dir, kept) != certs.IndexValid {
		t.Fatal("issued certificates are not in index.txt as valid")
	}

	stdout := certsOK(t, "certs", "revoke", "--dir", dir, "--cert", filepath.Join(dir, "lost.crt"), "--reason", "keyCompromise")
	if !strings.Contains(stdout, certs.SerialString(lost.SerialNumber)) || !strings.Contains(stdout, "mtunnel certs crl --dir "+dir) {
		t.Errorf("revoke output should name the serial and the next step:\n%s", stdout)
	}
	if got := indexStatus(t, dir, lost); got != certs.IndexRevoked {
		t.Errorf("index.txt status %q for the revoked certificate, want R", got)
	}
	index, _ := os.ReadFile(filepath.Join(dir, "index.txt"))

	// Again, with another reason: nothing changes.
	stdout = certsOK(t, "certs", "revoke", "--dir", dir, "--cert", filepath.Join(dir, "lost.crt"), "--reason", "superseded")
	if !strings.Contains(stdout, "already revoked") || !strings.Contains(stdout, "keyCompromise") {
		t.Errorf("second revoke should say it was already revoked, for keyCompromise:\n%s", stdout)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "index.txt")); !bytes.Equal(index, again) {
		t.Error("second revoke changed index.txt")
	}

	caCerts := []*x509.Certificate{readCert(t, filepath.Join(dir, "ca.crt"))}
	crlFile := filepath.Join(dir, "ca.crl")
	var set *certs.CRLSet
	for want := int64(1); want <= 2; want++ {
		stdout = certsOK(t, "certs", "crl", "--dir", dir, "--next-update", "48h")
		checkMode(t, crlFile, 0o644)
		crl, err := certs.LoadCRL(crlFile, caCerts)
		if err != nil {
			t.Fatalf("LoadCRL: %v", err)
		}
		if crl.List.Number.Int64() != want {
			t.Errorf("CRL number %s, want %d", crl.List.Number, want)
		}
		if !strings.Contains(stdout, fmt.Sprintf("CRL number %d", want)) || !strings.Contains(stdout, "1 revoked") {
			t.Errorf("crl output should give number %d and one entry:\n%s", want, stdout)
		}
		if d := crl.List.NextUpdate.Sub(crl.List.ThisUpdate); d != 48*time.Hour {
			t.Errorf("next update %v after this update, want 48h", d)
		}
		e, ok := crl.Revoked(lost.SerialNumber)
		if !ok || e.ReasonCode != 1 {
			t.Errorf("revoked serial: on CRL %v, reason %d; want keyCompromise (1)", ok, e.ReasonCode)
		}
		if _, ok := crl.Revoked(kept.SerialNumber); ok {
			t.Error("unrevoked certificate on the CRL")
		}
		if set, err = set.Update(crl); err != nil {
			t.Errorf("agents would refuse CRL number %d: %v", want, err)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "crlnumber")); string(data) != "2\n" {
		t.Errorf("crlnumber holds %q, want \"2\\n\"", data)
	}
}

func TestCertsRevokeRefusesForeignCertificate(t *testing.T) {
	dir, otherDir := t.TempDir(), t.TempDir()
	initCA(t, dir)
	initCA(t, otherDir) // same CA name, different key
	certsOK(t, "certs", "issue", "--dir", otherDir, "--name", "stranger", "--client")
	certsOK(t, "certs", "issue", "--dir", dir, "--intermediate", "--name", "corp")
	certsOK(t, "certs", "issue", "--dir", dir, "--ca-name", "corp", "--name", "deep", "--client")
	for _, file := range []string{filepath.Join(otherDir, "stranger.crt"), filepath.Join(dir, "ca.crt")} {
		code, _, stderr := runCLI(t, "certs", "revoke", "--dir", dir, "--cert", file)
		if code != 1 || !strings.Contains(stderr, "not issued by this CA") || !strings.Contains(stderr, file) {
			t.Errorf("revoke %s: exit code %d, stderr %q; want 1 saying it is not this CA's", file, code, stderr)
		}
	}
	// The intermediate's leaf: the root cannot revoke it, and says which
	// intermediate can.
	deep := filepath.Join(dir, "deep.crt")
	code, _, stderr := runCLI(t, "certs", "revoke", "--dir", dir, "--cert", deep)
	if code != 1 || !strings.Contains(stderr, "issued by the intermediate CA corp.crt: add --ca-name corp") {
		t.Errorf("revoke %s from the root: exit code %d, stderr %q; want 1 naming --ca-name corp", deep, code, stderr)
	}
	code, _, stderr = runCLI(t, "certs", "revoke", "--dir", dir, "--ca-name", "corp", "--cert", filepath.Join(dir, "ca.crt"))
	if code != 1 || !strings.Contains(stderr, "not issued by this CA") {
		t.Errorf("revoke the root with --ca-name corp: exit code %d, stderr %q; want 1", code, stderr)
	}
	entries, err := certs.ReadIndex(filepath.Join(dir, "index.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Status == certs.IndexRevoked {
			t.Errorf("refused revocation recorded for %s", e.Subject)
		}
	}
}

func TestCertsRevokeEnv(t *testing.T) {
	dir := t.TempDir()
	initCA(t, dir)
	certsOK(t, "certs", "issue", "--dir", dir, "--name", "app", "--client")
	t.Setenv("MTUNNEL_DIR", dir)
	t.Setenv("MTUNNEL_CERT", filepath.Join(dir, "ca.crt")) // an agent's variable: must not be used
	t.Setenv("MTUNNEL_REVOKE_CERT", filepath.Join(dir, "app.crt"))
	t.Setenv("MTUNNEL_REASON", "cessationOfOperation")
	t.Setenv("MTUNNEL_NEXT_UPDATE", "2h")
	certsOK(t, "certs", "revoke")
	certsOK(t, "certs", "crl")
	crl, err := certs.LoadCRL(filepath.Join(dir, "ca.crl"), []*x509.Certificate{readCert(t, filepath.Join(dir, "ca.crt"))})
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := crl.Revoked(readCert(t, filepath.Join(dir, "app.crt")).SerialNumber); !ok || e.ReasonCode != 5 {
		t.Errorf("app on CRL %v with reason %d, want cessationOfOperation (5)", ok, e.ReasonCode)
	}
	if d := crl.List.NextUpdate.Sub(crl.List.ThisUpdate); d != 2*time.Hour {
		t.Errorf("next update after %v, want 2h", d)
	}
}

func TestCertsShow(t *testing.T) {
	dir, otherDir := t.TempDir(), t.TempDir()
	initCA(t, dir, "--name", "Home CA")
	initCA(t, otherDir, "--name", "Other CA")
	certsOK(t, "certs", "issue", "--dir", dir, "--name", "gw", "--server", "--dns", "gw.example", "--ip", "10.1.2.3")
	certsOK(t, "certs", "issue", "--dir", dir, "--intermediate", "--name", "corp")
	certsOK(t, "certs", "issue", "--dir", dir, "--ca-name", "corp", "--name", "deep", "--client")
	// deep's leaf without its intermediate cannot reach ca.crt.
	deepAlone := filepath.Join(t.TempDir(), "deep-alone.crt")
	if err := os.WriteFile(deepAlone, certs.EncodeCertPEM(readChain(t, filepath.Join(dir, "deep.crt"))[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	gw, ca, otherCA := filepath.Join(dir, "gw.crt"), filepath.Join(dir, "ca.crt"), filepath.Join(otherDir, "ca.crt")
	gwCert := readCert(t, gw)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string
		notWant  []string
	}{
		{"without --ca", []string{gw}, 0, []string{
			"Subject:                 CN=gw", "Issuer:                  CN=Home CA", "DNS:gw.example", "IP:10.1.2.3",
			"serverAuth", "expires in 89 days", "Serial:                  " + certs.SerialString(gwCert.SerialNumber),
			"SHA-256 fingerprint:     " + certs.Fingerprint(gwCert),
		}, []string{"OK:", "NOT TRUSTED", "WARNING"}},
		{"trusted", []string{gw, "--ca", ca}, 0, []string{"CN=gw", "OK: chains to CN=Home CA"}, []string{"NOT TRUSTED"}},
		{"--ca before the file", []string{"--ca", ca, gw}, 0, []string{"OK: chains to CN=Home CA"}, nil},
		{"--ca=FILE", []string{gw, "--ca=" + ca}, 0, []string{"OK: chains to CN=Home CA"}, nil},
		{"another CA", []string{gw, "--ca", otherCA}, 1, []string{"CN=gw", "NOT TRUSTED:", "CN=Home CA", otherCA}, []string{"OK:"}},
		{"chain through an intermediate", []string{filepath.Join(dir, "deep.crt"), "--ca", ca}, 0, []string{
			"Certificate 1 of 2", "CN=deep", "Certificate 2 of 2", "CN=corp", "may sign leaf certificates only", "OK: chains to CN=Home CA",
		}, nil},
		{"intermediate missing", []string{deepAlone, "--ca", ca}, 1, []string{"NOT TRUSTED:", "CN=corp", "append its certificate"}, []string{"OK:"}},
		{"the CA itself", []string{ca, "--ca", ca}, 0, []string{"(self-signed)", "OK: chains to CN=Home CA"}, nil},
		{"not a certificate", []string{filepath.Join(dir, "gw.key")}, 1, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"certs", "show"}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(stdout, w) {
					t.Errorf("stdout has %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// TestCertsCRLOpenSSL checks the CRL with OpenSSL, an independent parser
// and verifier.
func TestCertsCRLOpenSSL(t *testing.T) {
	openssl := certstest.NeedOpenSSL(t)
	dir := t.TempDir()
	initCA(t, dir)
	certsOK(t, "certs", "issue", "--dir", dir, "--name", "lost", "--client")
	certsOK(t, "certs", "issue", "--dir", dir, "--name", "kept", "--client")
	certsOK(t, "certs", "revoke", "--dir", dir, "--cert", filepath.Join(dir, "lost.crt"), "--reason", "keyCompromise")
	certsOK(t, "certs", "crl", "--dir", dir)
	lost := readCert(t, filepath.Join(dir, "lost.crt"))
	run := func(args ...string) (string, error) {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		return string(out), err
	}

	text, err := run("crl", "-in", filepath.Join(dir, "ca.crl"), "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, text)
	}
	for _, want := range []string{"Serial Number: " + certs.SerialString(lost.SerialNumber), "Key Compromise", "CRL Number"} {
		if !strings.Contains(text, want) {
			t.Errorf("openssl crl output lacks %q:\n%s", want, text)
		}
	}

	verify := func(name string) (string, error) {
		return run("verify", "-crl_check", "-CAfile", filepath.Join(dir, "ca.crt"), "-CRLfile", filepath.Join(dir, "ca.crl"), filepath.Join(dir, name+".crt"))
	}
	if out, err := verify("lost"); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Errorf("openssl verify of the revoked certificate: %v\n%s\nwant it reported revoked", err, out)
	}
	if out, err := verify("kept"); err != nil {
		t.Errorf("openssl verify of the unrevoked certificate: %v\n%s", err, out)
	}
}

// A leaf an intermediate issued is revoked with --ca-name: recorded in the
// intermediate's own index, listed in the CRL the intermediate signs (which
// agents load beside the root's), and not in the root's CRL.
func TestCertsRevokeUnderIntermediate(t *testing.T) {
	dir := t.TempDir()
	initCA(t, dir)
	certsOK(t, "certs", "issue", "--dir", dir, "--intermediate", "--name", "corp")
	certsOK(t, "certs", "issue", "--dir", dir, "--ca-name", "corp", "--name", "deep", "--client")
	certsOK(t, "certs", "issue", "--dir", dir, "--ca-name", "corp", "--name", "kept", "--client")
	deep := filepath.Join(dir, "deep.crt")
	certsOK(t, "certs", "revoke", "--dir", dir, "--ca-name", "corp", "--cert", deep, "--reason", "keyCompromise")
	certsOK(t, "certs", "crl", "--dir", dir, "--ca-name", "corp")
	certsOK(t, "certs", "crl", "--dir", dir)

	corp := readCert(t, filepath.Join(dir, "corp.crt"))
	crl, err := certs.LoadCRL(filepath.Join(dir, "corp.crl"), []*x509.Certificate{corp})
	if err != nil {
		t.Fatalf("corp.crl, checked against corp.crt: %v", err)
	}
	if e, ok := crl.Revoked(leafOf(t, deep).SerialNumber); !ok || e.ReasonCode != 1 {
		t.Errorf("deep on corp's CRL %v with reason %d, want keyCompromise (1)", ok, e.ReasonCode)
	}
	if _, ok := crl.Revoked(leafOf(t, filepath.Join(dir, "kept.crt")).SerialNumber); ok {
		t.Error("kept is on corp's CRL")
	}
	root, err := certs.LoadCRL(filepath.Join(dir, "ca.crl"), []*x509.Certificate{readCert(t, filepath.Join(dir, "ca.crt"))})
	if err != nil {
		t.Fatal(err)
	}
	if len(root.List.RevokedCertificateEntries) != 0 {
		t.Errorf("the root's CRL lists %d certificates, want none", len(root.List.RevokedCertificateEntries))
	}
	// A second CRL of corp's gets the next number.
	certsOK(t, "certs", "crl", "--dir", dir, "--ca-name", "corp")
	again, err := certs.LoadCRL(filepath.Join(dir, "corp.crl"), []*x509.Certificate{corp})
	if err != nil {
		t.Fatal(err)
	}
	if again.List.Number.Cmp(crl.List.Number) <= 0 {
		t.Errorf("corp's CRL numbers %v then %v, want growing", crl.List.Number, again.List.Number)
	}
}

// leafOf reads the first certificate of a chain file.
func leafOf(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	c, err := certsReadFirst(file)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
