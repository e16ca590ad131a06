package certs_test

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

// TestIntermediateFiles writes an intermediate and a leaf it issued, and
// checks that the leaf's files are what an agent needs: leaf and
// intermediate, verifying against the root alone.
func TestIntermediateFiles(t *testing.T) {
	dir := t.TempDir()
	root := certstest.New(t)
	sub, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "sub"})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteIntermediate(dir, "sub", sub); err != nil {
		t.Fatal(err)
	}
	subCrt, subKey := certs.LeafFiles(dir, "sub")
	checkMode(t, subCrt, 0o644)
	checkMode(t, subKey, 0o600)

	loaded, chain, err := certs.LoadIntermediate(dir, "sub")
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(sub.Cert) || len(chain) != 1 || !chain[0].Equal(sub.Cert) {
		t.Fatalf("LoadIntermediate: cert %q, chain of %d; want sub and [sub]", certs.Identity(loaded.Cert), len(chain))
	}
	leaf, err := loaded.Issue(certs.Request{Name: "gw", Server: true, DNS: []string{"gw.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteLeafChain(dir, "gw", leaf, chain...); err != nil {
		t.Fatal(err)
	}
	gwCrt, gwKey := certs.LeafFiles(dir, "gw")
	checkMode(t, gwCrt, 0o644)
	checkMode(t, gwKey, 0o600)
	pair, err := certs.LoadKeyPair(gwCrt, gwKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(pair.Certificate) != 2 {
		t.Fatalf("gw.crt holds %d certificates, want leaf + intermediate", len(pair.Certificate))
	}
	inter, err := x509.ParseCertificate(pair.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.VerifyChain(pair.Leaf, []*x509.Certificate{inter}, root.Pool(), x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("leaf from its file does not verify against the root: %v", err)
	}
}

func TestIntermediateFilesTwoLevels(t *testing.T) {
	dir := t.TempDir()
	root := certstest.New(t)
	mid, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "mid", MaxPathLen: 1})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := mid.IssueIntermediate(certs.IntermediateRequest{Name: "sub"})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteIntermediate(dir, "sub", sub, mid.Cert); err != nil {
		t.Fatal(err)
	}
	_, chain, err := certs.LoadIntermediate(dir, "sub")
	if err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || !chain[0].Equal(sub.Cert) || !chain[1].Equal(mid.Cert) {
		t.Fatalf("chain of %d certificates, want [sub mid]", len(chain))
	}
	if err := certs.WriteIntermediate(dir, "bad", sub, root.Cert); err == nil {
		t.Error("WriteIntermediate accepted a chain that skips mid")
	}
}

func TestWriteLeafChainRefusesDisorder(t *testing.T) {
	dir := t.TempDir()
	root := certstest.New(t)
	sub, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "sub"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := sub.Issue(certs.Request{Name: "app", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, chain := range map[string][]*x509.Certificate{
		"root instead of intermediate": {root.Cert},
		"root before intermediate":     {root.Cert, sub.Cert},
	} {
		if err := certs.WriteLeafChain(dir, "app", leaf, chain...); err == nil {
			t.Errorf("%s: WriteLeafChain succeeded", name)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "app.crt")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused chain left app.crt behind: %v", err)
	}
	// Without a chain it is WriteLeaf.
	fromRoot, err := root.CA.Issue(certs.Request{Name: "app", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteLeafChain(dir, "app", fromRoot); err != nil {
		t.Errorf("WriteLeafChain without chain: %v", err)
	}
}

func TestLoadIntermediateErrors(t *testing.T) {
	dir := t.TempDir()
	root := certstest.New(t)
	leaf, err := root.CA.Issue(certs.Request{Name: "app", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteLeaf(dir, "app", leaf); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want error
	}{
		{"missing", fs.ErrNotExist},
		{"app", certs.ErrNotCA},
		{"../app", certs.ErrInvalidFileName},
	}
	for _, tt := range tests {
		if _, _, err := certs.LoadIntermediate(dir, tt.name); !errors.Is(err, tt.want) {
			t.Errorf("LoadIntermediate(%q): error %v, want %v", tt.name, err, tt.want)
		}
	}
}
