package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mtunnel/mtunnel/certs/certstest"
)

// FuzzConfig loads arbitrary bytes as a config file, the way the agents
// do (loadYAML, then serverSetup / clientSetup with nothing but --config),
// in a folder that holds every file the README's examples name. Whatever
// the bytes:
//
//   - nothing panics;
//   - a load succeeds, or fails with a configuration error (exit status 2)
//     that names the file and speaks of the file's parts, not of Go types;
//   - an agent configuration built from the file passes Validate, every
//     identity rule in it validates, and it has every route the file has.
//
// Seeds: the README's examples (TestREADMEConfigs checks that they load),
// f.Add below and testdata/fuzz/FuzzConfig/.
func FuzzConfig(f *testing.F) {
	dir := readmePKI(f)
	for _, ex := range readmeConfigs(f) {
		f.Add([]byte(ex))
	}
	for _, seed := range []string{
		"",
		"---\n",
		"- listen: :1\n",
		"listen: :8443\nroutes:\n  db: {target: 'db:1', allow_all: true}\n",
		"routes: [1]\n",
		"routes:\n  db: 5\n",
		"routes:\n  db:\n    allow: cn\n",
		"routes:\n  db:\n    allow: [cn]\n",
		"routes:\n  db:\n    allow: [{cn: a, dns: b}]\n",
		"routes:\n  db:\n    allow: [{uri: 'spiffe://example.org/a?b'}]\n",
		"routes:\n  - listen: 127.0.0.1:1\n    route: [db]\n",
		"tls: 3\n",
		"tls:\n  crl: {a: 1}\n",
		"a: &a [*a, *a]\n",
		"routes: &r\n  db: *r\n",
		"listen: !!binary AAAA\n",
		"base: &b {target: 'db:1'}\nroutes:\n  db:\n    <<: *b\n",
		"listen: :1\nlisten: :2\n",
		"\tlisten: :1\n",
		"listen: \"\\xff\"\n",
	} {
		f.Add([]byte(seed))
	}
	file := filepath.Join(dir, "fuzz.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var sf serverFile
		if err := loadYAML(file, &sf); err != nil {
			checkConfigError(t, data, err, file)
		} else {
			checkServerSetup(t, data, file, sf)
		}
		var cf clientFile
		if err := loadYAML(file, &cf); err != nil {
			checkConfigError(t, data, err, file)
		} else {
			checkClientSetup(t, data, file, cf)
		}
	})
}

// checkServerSetup builds the server agent's configuration from file,
// which loads as sf. (A file that does not load fails setup with the very
// error loadYAML gave.)
func checkServerSetup(t *testing.T, data []byte, file string, sf serverFile) {
	t.Helper()
	cfg, err := resolveServer(t, []string{"--config", file})
	if err != nil {
		checkConfigError(t, data, err, "")
		return
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("server config from %q does not validate: %v", data, err)
	}
	for name, r := range cfg.Routes {
		for _, rule := range r.ACL.Rules {
			if err := rule.Validate(); err != nil {
				t.Fatalf("route %q of %q: rule %v is used but invalid: %v", name, data, rule, err)
			}
		}
		if _, ok := sf.Routes[name]; !ok {
			t.Fatalf("route %q of the server config is not in the file %q", name, data)
		}
	}
	if len(cfg.Routes) != len(sf.Routes) {
		t.Fatalf("server config has %d routes, the file %q has %d", len(cfg.Routes), data, len(sf.Routes))
	}
}

// checkClientSetup is checkServerSetup for the client agent.
func checkClientSetup(t *testing.T, data []byte, file string, cf clientFile) {
	t.Helper()
	cfg, err := resolveClient(t, []string{"--config", file})
	if err != nil {
		checkConfigError(t, data, err, "")
		return
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("client config from %q does not validate: %v", data, err)
	}
	if len(cfg.Routes) != len(cf.Routes) {
		t.Fatalf("client config has %d routes, the file %q has %d", len(cfg.Routes), data, len(cf.Routes))
	}
}

// goNames are what a config error must not show a user: the Go types the
// file is decoded into. A package name counts only with an identifier
// after its dot: YAML quotes a long value back cut short with "...", so
// an input "0tunnel0000" comes back as "0tunnel...".
var goNames = regexp.MustCompile(`\b(main|tunnel)\.[A-Za-z_]|serverFile|clientFile|fileTLS`)

// checkConfigError fails unless err is a configuration error whose
// message names file (unless file is "") and no Go type. Names the input
// itself spells are let through: they may be quoted back.
func checkConfigError(t *testing.T, data []byte, err error, file string) {
	t.Helper()
	var cerr *configError
	if !errors.As(err, &cerr) {
		t.Fatalf("loading %q: error %v (%T) is not a configuration error", data, err, err)
	}
	msg := err.Error()
	if file != "" && !strings.Contains(msg, file) {
		t.Fatalf("loading %q: error %q does not name the file", data, msg)
	}
	if name := goNames.FindString(msg); name != "" && !bytes.Contains(data, []byte(name)) {
		t.Fatalf("loading %q: error %q shows Go type names (%q)", data, msg, name)
	}
}

// readmePKI makes a folder with the files the README's example configs
// name: a CA, the server's and the client's key pairs, an intermediates
// bundle and a CRL.
func readmePKI(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	ca := certstest.New(tb)
	ca.WriteFiles(tb, dir)
	certstest.WriteKeyPair(tb, dir, "db.example.com", ca.Server(tb, "db.example.com"))
	certstest.WriteKeyPair(tb, dir, "app", ca.Client(tb, "app"))
	// The bundle a server uses to complete chains may hold any CA
	// certificate; the CA's own serves.
	data, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		tb.Fatal(err)
	}
	for name, content := range map[string][]byte{"team-a.crt": data, "ca.crl": crlPEM(tb, ca, 1)} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// readmeConfigs returns the YAML examples in README.md.
func readmeConfigs(tb testing.TB) []string {
	tb.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1) {
		out = append(out, string(m[1]))
	}
	if len(out) == 0 {
		tb.Fatal("README.md has no ```yaml examples")
	}
	return out
}

// TestREADMEConfigs: the README's example configs load, each as the agent
// it is written for, in the folder FuzzConfig uses. Without this the fuzz
// target could silently never get past loading certificates.
func TestREADMEConfigs(t *testing.T) {
	dir := readmePKI(t)
	for i, ex := range readmeConfigs(t) {
		file := filepath.Join(dir, "example.yaml")
		writeFile(t, dir, "example.yaml", ex)
		var err error
		if strings.HasPrefix(ex, "server:") {
			_, err = resolveClient(t, []string{"--config", file})
		} else {
			_, err = resolveServer(t, []string{"--config", file})
		}
		if err != nil {
			t.Errorf("README example %d does not load: %v\n%s", i+1, err, ex)
		}
	}
}
