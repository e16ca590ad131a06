package certs_test

import (
	"crypto/ecdsa"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %v, want %v", path, got, want)
	}
}

// checkNoTempFiles fails if an atomic write left a temporary file behind.
func checkNoTempFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) { // ReadDir sorts by name
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}

func TestWriteCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki") // missing: WriteCA creates it
	ca := certstest.New(t)
	if err := certs.WriteCA(dir, ca.CA, false); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := certs.CAFiles(dir)
	checkMode(t, dir, 0o700)
	checkMode(t, certFile, 0o644)
	checkMode(t, keyFile, 0o600)
	checkNoTempFiles(t, dir, "ca.crt", "ca.key")

	loaded, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("LoadCA returned a different certificate")
	}
	if !loaded.Key.Public().(*ecdsa.PublicKey).Equal(ca.Key.Public()) {
		t.Error("LoadCA returned a different key")
	}
	// The loaded CA can issue.
	if _, err := loaded.Issue(certs.Request{Name: "x", Client: true}); err != nil {
		t.Errorf("Issue from loaded CA: %v", err)
	}
}

func TestWriteCARefusesOverwrite(t *testing.T) {
	for _, existing := range []string{"ca.key", "ca.crt"} {
		t.Run(existing, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, existing)
			if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := certs.WriteCA(dir, certstest.New(t).CA, false)
			if !errors.Is(err, fs.ErrExist) {
				t.Fatalf("WriteCA = %v, want fs.ErrExist", err)
			}
			if data, _ := os.ReadFile(path); string(data) != "keep me" {
				t.Errorf("%s was replaced", existing)
			}
			checkNoTempFiles(t, dir, existing)
		})
	}
}

// TestWriteCAConcurrent checks that the refusal to overwrite holds between
// racing writers, not only against a CA already on disk.
func TestWriteCAConcurrent(t *testing.T) {
	dir := t.TempDir()
	cas := make([]*certstest.CA, 8)
	for i := range cas {
		cas[i] = certstest.New(t)
	}
	errs := make(chan error, len(cas))
	for _, ca := range cas {
		go func() { errs <- certs.WriteCA(dir, ca.CA, false) }()
	}
	wins := 0
	for range cas {
		err := <-errs
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("WriteCA: %v, want nil or fs.ErrExist", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d writers succeeded, want exactly 1", wins)
	}
	if _, err := certs.LoadCA(dir); err != nil {
		t.Errorf("LoadCA after the race: %v", err)
	}
	checkNoTempFiles(t, dir, "ca.crt", "ca.key")
}

func TestWriteCAOverwrite(t *testing.T) {
	dir := t.TempDir()
	if err := certs.WriteCA(dir, certstest.New(t).CA, false); err != nil {
		t.Fatal(err)
	}
	second := certstest.New(t)
	if err := certs.WriteCA(dir, second.CA, true); err != nil {
		t.Fatal(err)
	}
	loaded, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(second.Cert) {
		t.Error("overwrite kept the first CA")
	}
	checkMode(t, filepath.Join(dir, "ca.key"), 0o600)
	checkNoTempFiles(t, dir, "ca.crt", "ca.key")
}

func TestLoadCAErrors(t *testing.T) {
	ca := certstest.New(t)
	leaf := ca.Client(t, "leaf")
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  error
	}{
		{"missing", func(*testing.T, string) {}, fs.ErrNotExist},
		{"key of another CA", func(t *testing.T, dir string) {
			if err := certs.WriteCA(dir, ca.CA, false); err != nil {
				t.Fatal(err)
			}
			other := certstest.New(t)
			_, keyFile := certs.CAFiles(dir)
			pem, err := certs.EncodeKeyPEM(other.Key)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
				t.Fatal(err)
			}
		}, certs.ErrKeyMismatch},
		{"leaf as CA", func(t *testing.T, dir string) {
			certstest.WriteKeyPair(t, dir, "ca", leaf)
		}, certs.ErrNotCA},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			if _, err := certs.LoadCA(dir); !errors.Is(err, tt.want) {
				t.Errorf("LoadCA = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestWriteLeaf(t *testing.T) {
	ca := certstest.New(t)
	dir := t.TempDir()
	for range 2 { // the second write renews the pair in place
		leaf, err := ca.CA.Issue(certs.Request{Name: "api", Server: true, ValidFor: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := certs.WriteLeaf(dir, "api", leaf); err != nil {
			t.Fatal(err)
		}
		certFile, keyFile := certs.LeafFiles(dir, "api")
		checkMode(t, certFile, 0o644)
		checkMode(t, keyFile, 0o600)
		checkNoTempFiles(t, dir, "api.crt", "api.key")
		pair, err := certs.LoadKeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if !pair.Leaf.Equal(leaf.Cert) {
			t.Error("loaded a different certificate than was written")
		}
	}
}

func TestValidateFileName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"api", true},
		{"api.internal", true},
		{"laptop 1", true},
		{"", false},
		{".hidden", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{`a\b`, false},
		{"ca", false},
		{"CA", false},
		{"a\nb", false},
		{"a\x00b", false},
		{"\xff", false},
	} {
		err := certs.ValidateFileName(tt.name)
		if tt.ok && err != nil {
			t.Errorf("ValidateFileName(%q) = %v, want nil", tt.name, err)
		}
		if !tt.ok && !errors.Is(err, certs.ErrInvalidFileName) {
			t.Errorf("ValidateFileName(%q) = %v, want ErrInvalidFileName", tt.name, err)
		}
	}
	leaf, err := certstest.New(t).CA.Issue(certs.Request{Name: "x", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteLeaf(t.TempDir(), "../x", leaf); !errors.Is(err, certs.ErrInvalidFileName) {
		t.Errorf("WriteLeaf(../x) = %v, want ErrInvalidFileName", err)
	}
}
