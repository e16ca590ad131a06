package certs

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Revocation files in a certificate directory, next to ca.crt and ca.key.
// The names are those of an OpenSSL "ca" directory, so that "openssl ocsp
// -index" can answer from the same index; crlnumber, though, holds
// decimal text here (OpenSSL's holds hexadecimal).
const (
	indexFileName     = "index.txt"
	crlFileName       = "ca.crl"
	crlNumberFileName = "crlnumber"
)

// IndexFile returns the path of the certificate index (see ReadIndex) in
// dir: every certificate issued from dir, and which of them are revoked.
func IndexFile(dir string) string { return filepath.Join(dir, indexFileName) }

// CRLFile returns the path of the CA's certificate revocation list in dir.
func CRLFile(dir string) string { return filepath.Join(dir, crlFileName) }

// CRLNumberFile returns the path of the file in dir that holds the number
// of the last CRL NextCRLNumber handed out.
func CRLNumberFile(dir string) string { return filepath.Join(dir, crlNumberFileName) }

// RevocationFiles are where one CA's revocations live: its index of
// revoked certificates, its CRL and its CRL number.
type RevocationFiles struct {
	Index, CRL, Number string
}

// RootRevocation is the root CA's in dir: index.txt (which also lists
// every certificate issued from dir), ca.crl and crlnumber.
func RootRevocation(dir string) RevocationFiles {
	return RevocationFiles{IndexFile(dir), CRLFile(dir), CRLNumberFile(dir)}
}

// IntermediateRevocation is the intermediate CA name's in dir (name.crt):
// name.index.txt (its revoked certificates only; dir/index.txt keeps the
// record of issue), name.crl and name.crlnumber.
func IntermediateRevocation(dir, name string) RevocationFiles {
	f := func(suffix string) string { return filepath.Join(dir, name+"."+suffix) }
	return RevocationFiles{f(indexFileName), f("crl"), f(crlNumberFileName)}
}

// CreateCRL returns a DER-encoded CRL signed by ca listing revoked, valid
// from thisUpdate until nextUpdate, when relying parties expect a newer
// one. number is the CRL number (RFC 5280 5.2.3), which must grow with
// every CRL ca issues: agents refuse a CRL whose number is lower than the
// one they hold (ErrCRLRollback), so a replayed old list cannot un-revoke
// a certificate. NextCRLNumber provides such numbers.
func (ca *CA) CreateCRL(revoked []x509.RevocationListEntry, number *big.Int, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	if err := ca.check(); err != nil {
		return nil, fmt.Errorf("create CRL: %w", err)
	}
	id := Identity(ca.Cert)
	switch {
	case number == nil || number.Sign() <= 0:
		return nil, fmt.Errorf("create CRL of %q: CRL number must be positive", id)
	case !nextUpdate.After(thisUpdate):
		return nil, fmt.Errorf("create CRL of %q: next update %s is not after this update %s",
			id, nextUpdate.UTC().Format(time.RFC3339), thisUpdate.UTC().Format(time.RFC3339))
	case ca.Cert.KeyUsage&x509.KeyUsageCRLSign == 0:
		// x509.CreateRevocationList refuses too, with a less specific error.
		return nil, fmt.Errorf("create CRL of %q: the CA certificate lacks the cRLSign key usage", id)
	}
	tmpl := &x509.RevocationList{
		RevokedCertificateEntries: revoked,
		Number:                    number,
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("create CRL of %q: %w", id, err)
	}
	return der, nil
}

// RevocationEntries returns the revoked entries of an index as CRL entries,
// in index order. Entries with reason removeFromCRL are left out: that
// reason only has a meaning in delta CRLs (RFC 5280 5.3.1), and a full CRL
// lists what is revoked.
func RevocationEntries(index []IndexEntry) []x509.RevocationListEntry {
	var out []x509.RevocationListEntry
	for _, e := range index {
		if e.Status != IndexRevoked || e.Reason == reasonRemoveFromCRL {
			continue
		}
		out = append(out, x509.RevocationListEntry{
			SerialNumber:   new(big.Int).Set(e.Serial),
			RevocationTime: e.RevokedAt,
			// Zero, unspecified, is left out of the CRL, as RFC 5280
			// 5.3.1 asks.
			ReasonCode: e.Reason,
		})
	}
	return out
}

// reasonRemoveFromCRL is the RFC 5280 CRLReason removeFromCRL.
const reasonRemoveFromCRL = 8

// WriteCRL writes the DER-encoded CRL der to dir/ca.crl as a PEM "X509
// CRL" block, atomically and with mode 0644: agents reload the file when
// it changes, and must never read half of it.
func WriteCRL(dir string, der []byte) error { return RootRevocation(dir).WriteCRL(der) }

// WriteCRL writes the DER CRL der, PEM-encoded, to f.CRL.
func (f RevocationFiles) WriteCRL(der []byte) error {
	data := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	if err := writeFileAtomic(f.CRL, data, certFileMode, true); err != nil {
		return fmt.Errorf("write CRL: %w", err)
	}
	return nil
}

// NextCRLNumber returns the number for the next CRL of the CA in dir and
// records it in dir/crlnumber (decimal text) before returning, so that a
// crash after it returns skips a number rather than reusing one. The first
// number is 1. It never returns a number at or below that of an existing
// dir/ca.crl, so deleting crlnumber cannot make agents refuse the next CRL
// as a rollback.
//
// Concurrent callers are serialised by the lock file dir/crlnumber.lock,
// created exclusively; a second caller fails (wrapping fs.ErrExist) rather
// than waiting. A lock left by a crashed process must be removed by hand,
// and the error says so.
func NextCRLNumber(dir string) (*big.Int, error) { return RootRevocation(dir).NextCRLNumber() }

// NextCRLNumber is the package's NextCRLNumber for the CA whose files f
// are: f.Number holds the last number, f.CRL is the existing CRL.
func (f RevocationFiles) NextCRLNumber() (*big.Int, error) {
	file := f.Number
	unlock, err := lockFile(file + ".lock")
	if err != nil {
		return nil, fmt.Errorf("next CRL number: %w", err)
	}
	defer unlock()
	last, err := readCRLNumber(file)
	if err != nil {
		return nil, fmt.Errorf("next CRL number: %w", err)
	}
	if n := existingCRLNumber(f.CRL); n != nil && n.Cmp(last) > 0 {
		last = n
	}
	next := new(big.Int).Add(last, big.NewInt(1))
	if err := writeFileAtomic(file, []byte(next.String()+"\n"), certFileMode, true); err != nil {
		return nil, fmt.Errorf("next CRL number: %w", err)
	}
	return next, nil
}

// readCRLNumber reads the last CRL number from file; a missing file is 0.
func readCRLNumber(file string) (*big.Int, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return new(big.Int), nil
	}
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(data))
	n, ok := new(big.Int).SetString(s, 10)
	if !ok || n.Sign() < 0 {
		return nil, fmt.Errorf("%s: %q is not a non-negative decimal number; fix it by hand (the number of the last CRL issued)", file, s)
	}
	return n, nil
}

// existingCRLNumber returns the CRL number of the CRL in file, or nil when
// there is no readable CRL or it has no number: the CRL is about to be
// replaced, so a broken one must not stop that.
func existingCRLNumber(file string) *big.Int {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	l, err := ParseCRL(data)
	if err != nil {
		return nil
	}
	return l.Number
}

// lockFile creates path exclusively and returns a function that removes
// it.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%s: %w: another process is issuing a CRL; if none is, remove the file", path, fs.ErrExist)
	}
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("lock: %w", err)
	}
	return func() { _ = os.Remove(path) }, nil
}
