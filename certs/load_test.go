package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// intermediate returns a CA signed by root.
func intermediate(t *testing.T, root *certstest.CA) *certs.CA {
	t.Helper()
	c := root.IssueTemplate(t, &x509.Certificate{
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * 365 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
	})
	return &certs.CA{Cert: c.Leaf, Key: c.PrivateKey.(*ecdsa.PrivateKey)}
}

func TestLoadKeyPair(t *testing.T) {
	dir := t.TempDir()
	root := certstest.New(t)
	apiCrt, apiKey := certstest.WriteKeyPair(t, dir, "api", root.Server(t, "api"))
	_, otherKey := certstest.WriteKeyPair(t, dir, "other", root.Client(t, "other"))

	inter := intermediate(t, root)
	leaf, err := inter.Issue(certs.Request{Name: "deep", Client: true, ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := certs.EncodeKeyPEM(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	chainCrt := writeFile(t, dir, "chain.crt", certs.EncodeCertPEM(leaf.Cert, inter.Cert))
	reversedCrt := writeFile(t, dir, "reversed.crt", certs.EncodeCertPEM(inter.Cert, leaf.Cert))
	chainKey := writeFile(t, dir, "chain.key", leafKey)

	sec1, err := x509.MarshalECPrivateKey(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	sec1Key := writeFile(t, dir, "sec1.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}))
	garbage := writeFile(t, dir, "garbage", []byte("not PEM at all\n"))
	badKey := writeFile(t, dir, "bad.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	encKey := writeFile(t, dir, "enc.key", pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	missing := filepath.Join(dir, "missing")

	for _, tt := range []struct {
		name              string
		certFile, keyFile string
		want              error
		chainLen          int
	}{
		{"leaf", apiCrt, apiKey, nil, 1},
		{"leaf and intermediate", chainCrt, chainKey, nil, 2},
		{"SEC 1 key", chainCrt, sec1Key, nil, 2},
		{"missing certificate", missing, apiKey, fs.ErrNotExist, 0},
		{"missing key", apiCrt, missing, fs.ErrNotExist, 0},
		{"inputs switched", apiKey, apiCrt, certs.ErrNoCertificate, 0},
		{"certificate as key", apiCrt, apiCrt, certs.ErrNoKey, 0},
		{"key of another certificate", apiCrt, otherKey, certs.ErrKeyMismatch, 0},
		{"leaf not first", reversedCrt, chainKey, certs.ErrKeyMismatch, 0},
		{"garbage certificate", garbage, apiKey, certs.ErrNoCertificate, 0},
		{"garbage key", apiCrt, garbage, certs.ErrNoKey, 0},
		{"malformed key", apiCrt, badKey, certs.ErrInvalidKey, 0},
		{"encrypted key", apiCrt, encKey, certs.ErrInvalidKey, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pair, err := certs.LoadKeyPair(tt.certFile, tt.keyFile)
			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("LoadKeyPair = %v, want %v", err, tt.want)
				}
				var pathErr *fs.PathError
				if errors.Is(err, fs.ErrNotExist) && (!errors.As(err, &pathErr) || pathErr.Path != missing) {
					t.Errorf("error %v does not name the missing file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(pair.Certificate) != tt.chainLen {
				t.Errorf("chain has %d certificates, want %d", len(pair.Certificate), tt.chainLen)
			}
			if pair.Leaf == nil || string(pair.Leaf.Raw) != string(pair.Certificate[0]) {
				t.Error("Leaf is not set to the first certificate")
			}
		})
	}
}

func TestLoadPool(t *testing.T) {
	dir := t.TempDir()
	a, b := certstest.New(t), certstest.New(t)
	apiCrt, apiKey := certstest.WriteKeyPair(t, dir, "api", a.Server(t, "api"))
	leafPEM, err := os.ReadFile(apiCrt)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		data  []byte // nil: the file is missing
		file  string // instead of data
		want  error
		roots int
	}{
		{name: "one CA", data: certs.EncodeCertPEM(a.Cert), roots: 1},
		{name: "bundle", data: certs.EncodeCertPEM(a.Cert, b.Cert), roots: 2},
		{name: "missing", want: fs.ErrNotExist},
		{name: "empty", data: []byte{}, want: certs.ErrNoCertificate},
		{name: "garbage", data: []byte("hello"), want: certs.ErrNoCertificate},
		{name: "key file", file: apiKey, want: certs.ErrNoCertificate},
		{name: "leaf", data: leafPEM, want: certs.ErrNotCA},
		{name: "CA then leaf", data: append(certs.EncodeCertPEM(a.Cert), leafPEM...), want: certs.ErrNotCA},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := tt.file
			if file == "" {
				file = filepath.Join(t.TempDir(), "bundle.crt")
				if tt.data != nil {
					writeFile(t, filepath.Dir(file), "bundle.crt", tt.data)
				}
			}
			pool, roots, err := certs.LoadPool(file)
			if !errors.Is(err, tt.want) {
				t.Fatalf("LoadPool = %v, want %v", err, tt.want)
			}
			if tt.want != nil {
				return
			}
			if len(roots) != tt.roots || pool == nil {
				t.Errorf("LoadPool returned %d roots, want %d", len(roots), tt.roots)
			}
			if _, err := a.Server(t, "x").Leaf.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
				t.Errorf("pool does not verify a leaf of its CA: %v", err)
			}
		})
	}
}

func TestLoadPoolMalformedCertificate(t *testing.T) {
	file := writeFile(t, t.TempDir(), "bad.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}))
	if _, _, err := certs.LoadPool(file); err == nil {
		t.Error("LoadPool accepted a malformed certificate")
	}
}

// TestParseTruncatedPEM cuts a two-certificate bundle and a key at every
// byte, as a reader racing a writer would see them: a cut inside a block
// must fail with ErrCorruptPEM (or find no block at all), never pass for a
// shorter bundle; only a cut between blocks may parse.
func TestParseTruncatedPEM(t *testing.T) {
	a, b := certstest.New(t), certstest.New(t)
	bundle := certs.EncodeCertPEM(a.Cert, b.Cert)
	for i := range len(bundle) {
		cut := bundle[:i]
		got, err := certs.ParseCertificatesPEM(cut)
		whole := bytes.HasSuffix(bytes.TrimSpace(cut), []byte("-----END CERTIFICATE-----"))
		switch {
		case err == nil && !whole:
			t.Fatalf("bundle cut at %d of %d parsed as %d certificates", i, len(bundle), len(got))
		case err != nil && whole:
			t.Fatalf("bundle cut between blocks at %d: %v", i, err)
		case err != nil && !errors.Is(err, certs.ErrCorruptPEM) && !errors.Is(err, certs.ErrNoCertificate):
			t.Fatalf("bundle cut at %d: %v, want ErrCorruptPEM", i, err)
		}
		if err != nil && i > len(bundle)/2 && !errors.Is(err, certs.ErrCorruptPEM) {
			t.Fatalf("second block cut at %d: %v, want ErrCorruptPEM", i, err)
		}
	}
	keyPEM, err := certs.EncodeKeyPEM(a.Key)
	if err != nil {
		t.Fatal(err)
	}
	for i := range len(keyPEM) {
		cut := keyPEM[:i]
		_, err := certs.ParsePrivateKeyPEM(cut)
		whole := bytes.HasSuffix(bytes.TrimSpace(cut), []byte("-----END PRIVATE KEY-----"))
		if (err == nil) != whole {
			t.Fatalf("key cut at %d of %d: err = %v", i, len(keyPEM), err)
		}
		if err != nil && bytes.Contains(cut, []byte("-----BEGIN")) && !errors.Is(err, certs.ErrCorruptPEM) {
			t.Fatalf("key cut at %d: %v, want ErrCorruptPEM", i, err)
		}
	}
	// A damaged block in the middle is not skipped either.
	damaged := bytes.Replace(certs.EncodeCertPEM(a.Cert, b.Cert, a.Cert), []byte("-----END CERTIFICATE-----"), []byte("-----END CERTIFICATX-----"), 1)
	if _, err := certs.ParseCertificatesPEM(damaged); !errors.Is(err, certs.ErrCorruptPEM) {
		t.Fatalf("bundle with a damaged first block: %v, want ErrCorruptPEM", err)
	}
}
