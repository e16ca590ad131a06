package certs_test

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func hexSerial(t *testing.T, s string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		t.Fatalf("bad serial %q", s)
	}
	return n
}

// testdata/openssl-ca-index.txt was written by "openssl ca" 3.0.19: one
// valid certificate and revocations with -crl_reason superseded,
// -crl_compromise, -crl_hold, no reason and -crl_CA_compromise.
func TestReadIndexFromOpenSSL(t *testing.T) {
	const file = "testdata/openssl-ca-index.txt"
	entries, err := certs.ReadIndex(file)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		status byte
		serial string
		reason int
		cn     string
	}{
		{'V', "4165E98EDAC5DCFF223C17A8186B4267DB9BD35A", 0, "one"},
		{'R', "70EE66D02D039407FB8A3EEEB65ECB37239CDB86", 4, "two"},   // superseded
		{'R', "601529A5CEEB40913D58964A1A58C6FAD067784B", 1, "three"}, // keyTime,DATE
		{'R', "50356D4D1003F18078C3CE46B42ED227D85C9704", 6, "four"},  // holdInstruction,OID
		{'R', "5679338297D1B832BA24E4FC4E4EAAE270721B4B", 0, "five"},
		{'R', "57ADE5B42AAF3EE1249E186DC634370EB8CB419A", 2, "six"}, // CAkeyTime,DATE
	}
	if len(entries) != len(want) {
		t.Fatalf("got %d entries, want %d", len(entries), len(want))
	}
	expiry, revoked := date("2026-12-30T05:51:22Z"), date("2026-11-30T05:51:22Z")
	for i, w := range want {
		e := entries[i]
		if e.Status != w.status || e.Serial.Cmp(hexSerial(t, w.serial)) != 0 || e.Reason != w.reason ||
			e.Subject != "/O=Example Org/CN="+w.cn || !e.Expiry.Equal(expiry) {
			t.Errorf("entry %d = %+v, want %+v", i, e, w)
		}
		if w.status == 'R' && !e.RevokedAt.Equal(revoked) {
			t.Errorf("entry %d revoked at %v, want %v", i, e.RevokedAt, revoked)
		}
	}

	// Writing the entries back reproduces the file byte for byte, keeping
	// the invalidity dates and hold instruction that IndexEntry does not
	// model.
	out := filepath.Join(t.TempDir(), "index.txt")
	if err := certs.WriteIndex(out, entries); err != nil {
		t.Fatal(err)
	}
	orig, _ := os.ReadFile(file)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, orig) {
		t.Errorf("rewritten index differs:\n got %q\nwant %q", got, orig)
	}
}

func TestWriteIndexFormat(t *testing.T) {
	tests := []struct {
		name  string
		entry certs.IndexEntry
		want  string
	}{
		{"valid", certs.IndexEntry{Status: 'V', Expiry: date("2030-01-02T03:04:05Z"), Serial: big.NewInt(0x0a1b), Subject: "/CN=app"},
			"V\t300102030405Z\t\t0A1B\tunknown\t/CN=app\n"},
		{"odd hex digits padded", certs.IndexEntry{Status: 'V', Expiry: date("2030-01-02T03:04:05Z"), Serial: big.NewInt(0xabc), Subject: "/CN=app"},
			"V\t300102030405Z\t\t0ABC\tunknown\t/CN=app\n"},
		{"expiry from 2050 has four-digit year", certs.IndexEntry{Status: 'V', Expiry: date("2051-06-07T08:09:10Z"), Serial: big.NewInt(1), Subject: "/CN=app"},
			"V\t20510607080910Z\t\t01\tunknown\t/CN=app\n"},
		{"local time written as UTC", certs.IndexEntry{Status: 'V', Expiry: date("2030-01-02T05:04:05+02:00"), Serial: big.NewInt(1)},
			"V\t300102030405Z\t\t01\tunknown\t\n"},
		{"revoked with reason", certs.IndexEntry{Status: 'R', Expiry: date("2030-01-02T03:04:05Z"), RevokedAt: date("2025-05-06T07:08:09Z"),
			Reason: 1, Serial: big.NewInt(0xff), Subject: "/CN=app"},
			"R\t300102030405Z\t250506070809Z,keyCompromise\tFF\tunknown\t/CN=app\n"},
		{"unspecified reason omitted", certs.IndexEntry{Status: 'R', Expiry: date("2030-01-02T03:04:05Z"), RevokedAt: date("2025-05-06T07:08:09Z"),
			Serial: big.NewInt(0xff), Subject: "/CN=app"},
			"R\t300102030405Z\t250506070809Z\tFF\tunknown\t/CN=app\n"},
		{"expired", certs.IndexEntry{Status: 'E', Expiry: date("2020-01-02T03:04:05Z"), Serial: big.NewInt(2), Subject: "/CN=old"},
			"E\t200102030405Z\t\t02\tunknown\t/CN=old\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "index.txt")
			if err := certs.WriteIndex(path, []certs.IndexEntry{tt.entry}); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			back, err := certs.ReadIndex(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(back) != 1 || back[0].Serial.Cmp(tt.entry.Serial) != 0 || !back[0].Expiry.Equal(tt.entry.Expiry) ||
				!back[0].RevokedAt.Equal(tt.entry.RevokedAt) || back[0].Reason != tt.entry.Reason || back[0].Status != tt.entry.Status {
				t.Errorf("read back %+v, want %+v", back, tt.entry)
			}
		})
	}
}

func TestWriteIndexFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.txt")
	if err := certs.WriteIndex(path, nil); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{path: "", path + ".attr": "unique_subject = no\n"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != want {
			t.Errorf("%s = %q, want %q", file, data, want)
		}
		if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", file, fi.Mode().Perm())
		}
	}
}

func TestReadIndexMissing(t *testing.T) {
	entries, err := certs.ReadIndex(filepath.Join(t.TempDir(), "index.txt"))
	if entries != nil || err != nil {
		t.Fatalf("ReadIndex(missing) = %v, %v; want nil, nil", entries, err)
	}
}

func TestReadIndexMalformed(t *testing.T) {
	tests := map[string]string{
		"five fields":            "V\t300101000000Z\t\t0A\t/CN=a\n",
		"bad status":             "X\t300101000000Z\t\t0A\tunknown\t/CN=a\n",
		"bad expiry":             "V\t3001010000Z\t\t0A\tunknown\t/CN=a\n",
		"bad serial":             "V\t300101000000Z\t\t0G\tunknown\t/CN=a\n",
		"zero serial":            "V\t300101000000Z\t\t00\tunknown\t/CN=a\n",
		"revoked without time":   "R\t300101000000Z\t\t0A\tunknown\t/CN=a\n",
		"valid with time":        "V\t300101000000Z\t250101000000Z\t0A\tunknown\t/CN=a\n",
		"unknown reason":         "R\t300101000000Z\t250101000000Z,stolen\t0A\tunknown\t/CN=a\n",
		"keyTime without date":   "R\t300101000000Z\t250101000000Z,keyTime\t0A\tunknown\t/CN=a\n",
		"reason with extra part": "R\t300101000000Z\t250101000000Z,superseded,x\t0A\tunknown\t/CN=a\n",
		"duplicate serial":       "V\t300101000000Z\t\t0A\tunknown\t/CN=a\nV\t300101000000Z\t\t0a\tunknown\t/CN=b\n",
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "index.txt")
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := certs.ReadIndex(path); !errors.Is(err, certs.ErrInvalidIndex) {
				t.Fatalf("ReadIndex = %v, want ErrInvalidIndex", err)
			}
		})
	}
}

func TestWriteIndexRejects(t *testing.T) {
	expiry := date("2030-01-01T00:00:00Z")
	tests := map[string][]certs.IndexEntry{
		"no serial":        {{Status: 'V', Expiry: expiry}},
		"no expiry":        {{Status: 'V', Serial: big.NewInt(1)}},
		"tab in subject":   {{Status: 'V', Expiry: expiry, Serial: big.NewInt(1), Subject: "/CN=a\tb"}},
		"duplicate serial": {{Status: 'V', Expiry: expiry, Serial: big.NewInt(1)}, {Status: 'V', Expiry: expiry, Serial: big.NewInt(1)}},
		"revoked in 2050":  {{Status: 'R', Expiry: expiry, Serial: big.NewInt(1), RevokedAt: date("2050-01-01T00:00:00Z")}},
		"reason code 7":    {{Status: 'R', Expiry: expiry, Serial: big.NewInt(1), RevokedAt: date("2025-01-01T00:00:00Z"), Reason: 7}},
	}
	for name, entries := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "index.txt")
			if err := certs.WriteIndex(path, entries); err == nil {
				t.Fatal("WriteIndex succeeded")
			}
			if _, err := os.Stat(path); !os.IsNotExist(err) {
				t.Errorf("index written despite the error: %v", err)
			}
		})
	}
}

func TestRecordIssuedAndRevoked(t *testing.T) {
	ca := certstest.New(t)
	a := ca.Client(t, "app").Leaf
	b := ca.Client(t, "other").Leaf
	path := filepath.Join(t.TempDir(), "index.txt")

	for range 2 { // the second call changes nothing
		if err := certs.RecordIssued(path, a); err != nil {
			t.Fatal(err)
		}
	}
	entries := readIndex(t, path, 1)
	if e := entries[0]; e.Status != 'V' || e.Serial.Cmp(a.SerialNumber) != 0 || e.Subject != "/CN=app" ||
		!e.Expiry.Equal(a.NotAfter) {
		t.Fatalf("entry %+v does not describe the certificate", e)
	}

	first := time.Now().Add(-time.Hour)
	if err := certs.RecordRevoked(path, a, 1, first); err != nil {
		t.Fatal(err)
	}
	// Revoking again keeps the first time and reason.
	if err := certs.RecordRevoked(path, a, 4, time.Now()); err != nil {
		t.Fatal(err)
	}
	e := readIndex(t, path, 1)[0]
	if e.Status != 'R' || e.Reason != 1 || !e.RevokedAt.Equal(first.UTC().Truncate(time.Second)) {
		t.Fatalf("revoked entry = %+v, want keyCompromise at %v", e, first)
	}

	// A certificate that was never recorded is added as revoked.
	if err := certs.RecordRevoked(path, b, 0, first); err != nil {
		t.Fatal(err)
	}
	if e := readIndex(t, path, 2)[1]; e.Status != 'R' || e.Serial.Cmp(b.SerialNumber) != 0 || e.Subject != "/CN=other" {
		t.Fatalf("added entry = %+v", e)
	}

	if err := certs.RecordRevoked(path, b, 7, first); !errors.Is(err, certs.ErrUnknownReason) {
		t.Errorf("RecordRevoked(reason 7) = %v, want ErrUnknownReason", err)
	}
}

func TestRecordIssuedSubjectDN(t *testing.T) {
	ca := certstest.New(t)
	c := ca.IssueTemplate(t, &x509.Certificate{
		Subject:  pkix.Name{Country: []string{"DE"}, Organization: []string{"Ex/ample"}, CommonName: "caf\u00e9"},
		NotAfter: time.Now().Add(time.Hour),
	}).Leaf
	path := filepath.Join(t.TempDir(), "index.txt")
	if err := certs.RecordIssued(path, c); err != nil {
		t.Fatal(err)
	}
	// As X509_NAME_oneline writes it: certificate order, non-ASCII bytes
	// escaped.
	if got, want := readIndex(t, path, 1)[0].Subject, `/C=DE/O=Ex/ample/CN=caf\xC3\xA9`; got != want {
		t.Errorf("subject %q, want %q", got, want)
	}
}

func readIndex(t *testing.T, path string, n int) []certs.IndexEntry {
	t.Helper()
	entries, err := certs.ReadIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("index has %d entries, want %d", len(entries), n)
	}
	return entries
}

func TestReasonCodeAndName(t *testing.T) {
	for code := 0; code <= 10; code++ {
		name := certs.ReasonName(code)
		if code == 7 {
			if name != "" {
				t.Errorf("ReasonName(7) = %q; 7 is unassigned", name)
			}
			continue
		}
		for _, n := range []string{name, strings.ToUpper(name)} {
			if got, err := certs.ReasonCode(n); err != nil || got != code {
				t.Errorf("ReasonCode(%q) = %d, %v; want %d", n, got, err, code)
			}
		}
	}
	if _, err := certs.ReasonCode("stolen"); !errors.Is(err, certs.ErrUnknownReason) || !strings.Contains(err.Error(), "keyCompromise") {
		t.Errorf("ReasonCode(stolen) = %v, want ErrUnknownReason listing the names", err)
	}
}

// TestIndexWithOpenSSLCA checks that "openssl ca" reads a written index:
// -gencrl lists the revoked certificates with their reasons, and -updatedb
// parses both expiry formats (it marks the 2020 certificate expired, not
// the 2051 one), and that the file it rewrites reads back.
func TestIndexWithOpenSSLCA(t *testing.T) {
	bin := certstest.NeedOpenSSL(t)
	dir := t.TempDir()
	ca, err := certs.NewCA("index test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "index.txt")
	revokedAt := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	entries := []certs.IndexEntry{
		{Status: 'V', Expiry: date("2020-01-01T00:00:00Z"), Serial: big.NewInt(0x0a), Subject: "/CN=old"},
		{Status: 'V', Expiry: date("2051-01-01T00:00:00Z"), Serial: big.NewInt(0x0b), Subject: "/CN=far"},
		{Status: 'R', Expiry: date("2030-01-01T00:00:00Z"), Serial: big.NewInt(0x0c), Subject: "/CN=c", RevokedAt: revokedAt},
		{Status: 'R', Expiry: date("2030-01-01T00:00:00Z"), Serial: big.NewInt(0x0d), Subject: "/CN=d", RevokedAt: revokedAt, Reason: 1},
		{Status: 'R', Expiry: date("2030-01-01T00:00:00Z"), Serial: big.NewInt(0x0e), Subject: "/CN=e", RevokedAt: revokedAt, Reason: 8},
	}
	if err := certs.WriteIndex(index, entries); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "ca.cnf")
	if err := os.WriteFile(conf, []byte(`[ca]
default_ca = CA_default
[CA_default]
database = index.txt
certificate = ca.crt
private_key = ca.key
default_md = sha256
default_crl_days = 1
`), 0o644); err != nil {
		t.Fatal(err)
	}
	openssl := func(args ...string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	openssl("ca", "-config", conf, "-gencrl", "-out", "crl.pem")
	data, err := os.ReadFile(filepath.Join(dir, "crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("openssl ca -gencrl wrote no PEM: %q", data)
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int64]int{}
	for _, e := range crl.RevokedCertificateEntries {
		got[e.SerialNumber.Int64()] = e.ReasonCode
		if !e.RevocationTime.Equal(revokedAt) {
			t.Errorf("serial %x revoked at %v, want %v", e.SerialNumber, e.RevocationTime, revokedAt)
		}
	}
	want := map[int64]int{0x0c: 0, 0x0d: 1, 0x0e: 8}
	if len(got) != len(want) || got[0x0c] != 0 || got[0x0d] != 1 || got[0x0e] != 8 {
		t.Errorf("CRL revokes %v, want serial:reason %v", got, want)
	}

	openssl("ca", "-config", conf, "-updatedb")
	back := readIndex(t, index, len(entries))
	if back[0].Status != 'E' || back[1].Status != 'V' {
		t.Errorf("after -updatedb statuses %c %c, want E V", back[0].Status, back[1].Status)
	}
}
