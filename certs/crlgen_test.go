package certs_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

// TestCRLFromIndex goes the way "certs revoke" and "certs crl" do: record
// revocations in the index, build CRLs from it with numbers from
// NextCRLNumber, and load each back with LoadCRL, which verifies the
// signature.
func TestCRLFromIndex(t *testing.T) {
	dir := t.TempDir()
	root := certstest.New(t)
	if err := certs.WriteCA(dir, root.CA, false); err != nil {
		t.Fatal(err)
	}
	issue := func(name string) *x509.Certificate {
		l, err := root.CA.Issue(certs.Request{Name: name, Client: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := certs.RecordIssued(certs.IndexFile(dir), l.Cert); err != nil {
			t.Fatal(err)
		}
		return l.Cert
	}
	compromised, superseded, plain, valid := issue("compromised"), issue("superseded"), issue("plain"), issue("valid")
	at := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	for _, r := range []struct {
		c      *x509.Certificate
		reason int
	}{{compromised, 1}, {superseded, 4}, {plain, 0}} {
		if err := certs.RecordRevoked(certs.IndexFile(dir), r.c, r.reason, at); err != nil {
			t.Fatal(err)
		}
	}
	index, err := certs.ReadIndex(certs.IndexFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	revoked := certs.RevocationEntries(index)

	var set *certs.CRLSet
	for want := int64(1); want <= 3; want++ {
		number, err := certs.NextCRLNumber(dir)
		if err != nil {
			t.Fatal(err)
		}
		if number.Cmp(big.NewInt(want)) != 0 {
			t.Fatalf("CRL number %s, want %d", number, want)
		}
		now := time.Now()
		der, err := root.CreateCRL(revoked, number, now, now.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := certs.WriteCRL(dir, der); err != nil {
			t.Fatal(err)
		}
		checkMode(t, certs.CRLFile(dir), 0o644)
		crl, err := certs.LoadCRL(certs.CRLFile(dir), []*x509.Certificate{root.Cert})
		if err != nil {
			t.Fatalf("LoadCRL: %v", err)
		}
		if crl.List.Number.Cmp(number) != 0 {
			t.Errorf("loaded CRL number %s, want %s", crl.List.Number, number)
		}
		if set, err = set.Update(crl); err != nil {
			t.Errorf("CRLSet.Update with CRL number %s: %v", number, err)
		}
	}

	crl := set.For(root.Cert)
	for _, tt := range []struct {
		name   string
		c      *x509.Certificate
		reason int
	}{{"keyCompromise", compromised, 1}, {"superseded", superseded, 4}, {"unspecified", plain, 0}} {
		e, ok := crl.Revoked(tt.c.SerialNumber)
		if !ok {
			t.Errorf("%s: serial %s not on the CRL", tt.name, certs.SerialString(tt.c.SerialNumber))
			continue
		}
		if e.ReasonCode != tt.reason || !e.RevocationTime.Equal(at) {
			t.Errorf("%s: reason %d at %v, want %d at %v", tt.name, e.ReasonCode, e.RevocationTime, tt.reason, at)
		}
	}
	if _, ok := crl.Revoked(valid.SerialNumber); ok {
		t.Error("a valid certificate is on the CRL")
	}
	if n := len(crl.List.RevokedCertificateEntries); n != 3 {
		t.Errorf("CRL lists %d certificates, want 3", n)
	}
}

func TestCRLFileIsPEM(t *testing.T) {
	dir := t.TempDir()
	root := certstest.New(t)
	now := time.Now()
	der, err := root.CreateCRL(nil, big.NewInt(1), now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteCRL(dir, der); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(certs.CRLFile(dir))
	if err != nil {
		t.Fatal(err)
	}
	if b, rest := pem.Decode(data); b == nil || b.Type != "X509 CRL" || len(rest) != 0 {
		t.Errorf("ca.crl is not one PEM \"X509 CRL\" block:\n%s", data)
	}
	checkNoTempFiles(t, dir, "ca.crl")
}

func TestLoadCRLOtherCA(t *testing.T) {
	dir := t.TempDir()
	root, other := certstest.New(t), certstest.New(t) // same subject name, different keys
	now := time.Now()
	der, err := root.CreateCRL(nil, big.NewInt(1), now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteCRL(dir, der); err != nil {
		t.Fatal(err)
	}
	if _, err := certs.LoadCRL(certs.CRLFile(dir), []*x509.Certificate{other.Cert}); !errors.Is(err, certs.ErrCRLNoIssuer) {
		t.Errorf("CRL checked against another CA: error %v, want ErrCRLNoIssuer", err)
	}
}

func TestRevocationEntries(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	expiry := at.Add(24 * time.Hour)
	entry := func(status byte, serial int64, reason int) certs.IndexEntry {
		e := certs.IndexEntry{Status: status, Expiry: expiry, Serial: big.NewInt(serial), Reason: reason, Subject: "/CN=x"}
		if status == certs.IndexRevoked {
			e.RevokedAt = at
		}
		return e
	}
	tests := []struct {
		name  string
		index []certs.IndexEntry
		want  []int64 // serials on the CRL
	}{
		{"empty", nil, nil},
		{"valid and expired are not listed", []certs.IndexEntry{entry(certs.IndexValid, 1, 0), entry(certs.IndexExpired, 2, 0)}, nil},
		{"revoked in index order", []certs.IndexEntry{entry(certs.IndexRevoked, 9, 1), entry(certs.IndexValid, 3, 0), entry(certs.IndexRevoked, 4, 0)}, []int64{9, 4}},
		{"removeFromCRL is not a full-CRL reason", []certs.IndexEntry{entry(certs.IndexRevoked, 5, 8), entry(certs.IndexRevoked, 6, 6)}, []int64{6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := certs.RevocationEntries(tt.index)
			if len(got) != len(tt.want) {
				t.Fatalf("%d entries, want %d", len(got), len(tt.want))
			}
			for i, e := range got {
				if e.SerialNumber.Int64() != tt.want[i] || !e.RevocationTime.Equal(at) {
					t.Errorf("entry %d: serial %s at %v, want %d at %v", i, e.SerialNumber, e.RevocationTime, tt.want[i], at)
				}
			}
		})
	}
}

func TestCreateCRLInvalid(t *testing.T) {
	root := certstest.New(t)
	noCRLSign := root.IssueTemplate(t, &x509.Certificate{
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true, SubjectKeyId: []byte{1, 2, 3},
	})
	signOnly := &certs.CA{Cert: noCRLSign.Leaf, Key: noCRLSign.PrivateKey.(*ecdsa.PrivateKey)}
	now := time.Now()
	tests := []struct {
		name       string
		ca         *certs.CA
		number     *big.Int
		next       time.Time
		wantToWork bool
	}{
		{"valid", root.CA, big.NewInt(1), now.Add(time.Hour), true},
		{"nil number", root.CA, nil, now.Add(time.Hour), false},
		{"zero number", root.CA, big.NewInt(0), now.Add(time.Hour), false},
		{"next update not after this update", root.CA, big.NewInt(1), now, false},
		{"CA without cRLSign", signOnly, big.NewInt(1), now.Add(time.Hour), false},
		{"no CA", &certs.CA{}, big.NewInt(1), now.Add(time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.ca.CreateCRL(nil, tt.number, now, tt.next)
			if (err == nil) != tt.wantToWork {
				t.Errorf("error %v, want success %v", err, tt.wantToWork)
			}
		})
	}
}

func TestNextCRLNumber(t *testing.T) {
	root := certstest.New(t)
	next := func(t *testing.T, dir string) *big.Int {
		t.Helper()
		n, err := certs.NextCRLNumber(dir)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Run("counts from 1 and persists", func(t *testing.T) {
		dir := t.TempDir()
		for want := int64(1); want <= 3; want++ {
			if n := next(t, dir); n.Int64() != want {
				t.Errorf("number %s, want %d", n, want)
			}
		}
		if data, _ := os.ReadFile(certs.CRLNumberFile(dir)); string(data) != "3\n" {
			t.Errorf("crlnumber holds %q, want \"3\\n\"", data)
		}
		checkNoTempFiles(t, dir, "crlnumber")
	})
	t.Run("never below the existing CRL", func(t *testing.T) {
		dir := t.TempDir()
		now := time.Now()
		der, err := root.CreateCRL(nil, big.NewInt(41), now, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if err := certs.WriteCRL(dir, der); err != nil {
			t.Fatal(err)
		}
		if n := next(t, dir); n.Int64() != 42 {
			t.Errorf("number %s with ca.crl number 41 and no crlnumber, want 42", n)
		}
	})
	t.Run("malformed file", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(certs.CRLNumberFile(dir), []byte("0x10\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := certs.NextCRLNumber(dir); err == nil {
			t.Error("NextCRLNumber accepted crlnumber \"0x10\"")
		}
	})
	t.Run("locked", func(t *testing.T) {
		dir := t.TempDir()
		next(t, dir)
		lock := certs.CRLNumberFile(dir) + ".lock"
		if err := os.WriteFile(lock, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := certs.NextCRLNumber(dir); !errors.Is(err, fs.ErrExist) {
			t.Errorf("with %s present: error %v, want fs.ErrExist", lock, err)
		}
		if err := os.Remove(lock); err != nil {
			t.Fatal(err)
		}
		if n := next(t, dir); n.Int64() != 2 {
			t.Errorf("after the lock is gone: number %s, want 2", n)
		}
	})
	t.Run("concurrent callers never share a number", func(t *testing.T) {
		dir := t.TempDir()
		var (
			mu   sync.Mutex
			seen = map[int64]bool{}
			wg   sync.WaitGroup
		)
		for range 16 {
			wg.Go(func() {
				n, err := certs.NextCRLNumber(dir)
				if errors.Is(err, fs.ErrExist) {
					return // lost the race for the lock; refused, not duplicated
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if seen[n.Int64()] {
					t.Errorf("number %s handed out twice", n)
				}
				seen[n.Int64()] = true
			})
		}
		wg.Wait()
		if len(seen) == 0 {
			t.Error("no caller got a number")
		}
	})
}

func TestCheckIssued(t *testing.T) {
	root, other := certstest.New(t), certstest.New(t) // same subject name, different keys
	sub, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "sub"})
	if err != nil {
		t.Fatal(err)
	}
	fromSub, err := sub.Issue(certs.Request{Name: "deep", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    *x509.Certificate
		ok   bool
	}{
		{"leaf of the CA", root.Client(t, "app").Leaf, true},
		{"intermediate of the CA", sub.Cert, true},
		{"leaf of an intermediate", fromSub.Cert, false},
		{"leaf of another CA with the same name", other.Client(t, "app").Leaf, false},
		{"the CA itself", root.Cert, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := root.CheckIssued(tt.c)
			if tt.ok && err != nil {
				t.Errorf("CheckIssued: %v", err)
			}
			if !tt.ok && !errors.Is(err, certs.ErrNotIssuer) {
				t.Errorf("CheckIssued error %v, want ErrNotIssuer", err)
			}
		})
	}
}

func TestTrustAnchor(t *testing.T) {
	root, other := certstest.New(t), certstest.New(t)
	sub, err := root.IssueIntermediate(certs.IntermediateRequest{Name: "sub"})
	if err != nil {
		t.Fatal(err)
	}
	fromSub, err := sub.Issue(certs.Request{Name: "deep", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	leaf := root.Client(t, "app").Leaf
	tests := []struct {
		name  string
		chain []*x509.Certificate
		roots []*x509.Certificate
		want  *x509.Certificate
	}{
		{"leaf of the root", []*x509.Certificate{leaf}, []*x509.Certificate{other.Cert, root.Cert}, root.Cert},
		{"leaf and intermediate", []*x509.Certificate{fromSub.Cert, sub.Cert}, []*x509.Certificate{root.Cert}, root.Cert},
		{"intermediate in the bundle", []*x509.Certificate{fromSub.Cert}, []*x509.Certificate{sub.Cert, root.Cert}, root.Cert},
		{"intermediate alone in the bundle", []*x509.Certificate{fromSub.Cert}, []*x509.Certificate{sub.Cert}, sub.Cert},
		{"intermediate missing", []*x509.Certificate{fromSub.Cert}, []*x509.Certificate{root.Cert}, nil},
		{"the root itself", []*x509.Certificate{root.Cert}, []*x509.Certificate{root.Cert}, root.Cert},
		{"another CA", []*x509.Certificate{leaf}, []*x509.Certificate{other.Cert}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := certs.TrustAnchor(tt.chain, tt.roots)
			if (got == nil) != (tt.want == nil) || got != nil && !got.Equal(tt.want) {
				t.Errorf("TrustAnchor = %q, want %q", certs.Identity(got), certs.Identity(tt.want))
			}
		})
	}
}
