package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"
)

// CRL errors, wrapped with the file and issuer involved.
var (
	// ErrCRLInvalid reports a file that is not a parseable CRL.
	ErrCRLInvalid = errors.New("invalid CRL")
	// ErrCRLNoIssuer reports a CRL whose issuer is none of the known CAs.
	ErrCRLNoIssuer = errors.New("CRL issuer is not a known CA")
	// ErrCRLSignature reports a CRL whose signature does not verify with
	// its issuer's key.
	ErrCRLSignature = errors.New("CRL signature does not verify")
	// ErrCRLRollback reports a CRL older (by CRL number) than the one
	// already loaded for the same issuer: a replayed or misordered file.
	ErrCRLRollback = errors.New("CRL number lower than the loaded CRL's")
)

// CRL is a certificate revocation list whose signature has been verified
// against its issuer.
type CRL struct {
	List    *x509.RevocationList
	Issuer  *x509.Certificate
	File    string
	revoked map[string]x509.RevocationListEntry // by serial, decimal
}

// ParseCRL parses a CRL in PEM ("X509 CRL") or DER form.
func ParseCRL(data []byte) (*x509.RevocationList, error) {
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("%w: PEM block %q, want \"X509 CRL\"", ErrCRLInvalid, block.Type)
		}
		data = block.Bytes
	} else if bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----")) {
		return nil, fmt.Errorf("%w: malformed PEM", ErrCRLInvalid)
	}
	l, err := x509.ParseRevocationList(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCRLInvalid, err)
	}
	return l, nil
}

// LoadCRL reads a CRL file, finds its issuer among cas and verifies the
// CRL's signature with the issuer's key. The issuer must be allowed to sign
// CRLs (key usage cRLSign, when the extension is present).
func LoadCRL(file string, cas []*x509.Certificate) (*CRL, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load CRL: %w", err)
	}
	list, err := ParseCRL(data)
	if err != nil {
		return nil, fmt.Errorf("load CRL %q: %w", file, err)
	}
	issuer := crlIssuer(list, cas)
	if issuer == nil {
		return nil, fmt.Errorf("load CRL %q: %w (issuer %s; an agent knows the CAs in its --ca and --intermediates files)", file, ErrCRLNoIssuer, list.Issuer)
	}
	if issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, fmt.Errorf("load CRL %q: %w: issuer %s may not sign CRLs (no cRLSign key usage)", file, ErrCRLSignature, Identity(issuer))
	}
	if err := list.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("load CRL %q: %w with the key of %s: %w", file, ErrCRLSignature, Identity(issuer), err)
	}
	c := &CRL{List: list, Issuer: issuer, File: file, revoked: map[string]x509.RevocationListEntry{}}
	for _, e := range list.RevokedCertificateEntries {
		c.revoked[e.SerialNumber.String()] = e
	}
	return c, nil
}

// crlIssuer finds the CA that issued list: by key identifier when the CRL
// names one, else by subject name.
func crlIssuer(list *x509.RevocationList, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if !bytes.Equal(ca.RawSubject, list.RawIssuer) {
			continue
		}
		if len(list.AuthorityKeyId) > 0 && len(ca.SubjectKeyId) > 0 && !bytes.Equal(list.AuthorityKeyId, ca.SubjectKeyId) {
			continue
		}
		return ca
	}
	return nil
}

// Revoked reports whether the certificate with serial is on the list.
func (c *CRL) Revoked(serial *big.Int) (x509.RevocationListEntry, bool) {
	e, ok := c.revoked[serial.String()]
	return e, ok
}

// Stale reports whether now is past the CRL's NextUpdate by more than
// grace. A CRL without NextUpdate is never stale.
func (c *CRL) Stale(now time.Time, grace time.Duration) bool {
	return !c.List.NextUpdate.IsZero() && now.After(c.List.NextUpdate.Add(grace))
}

// number returns the CRL number, zero when absent.
func (c *CRL) number() *big.Int {
	if c.List.Number == nil {
		return new(big.Int)
	}
	return c.List.Number
}

// CRLSet is an immutable set of CRLs, at most one per issuer: the one with
// the highest CRL number. Replace it whole with Update.
type CRLSet struct {
	byIssuer map[string]*CRL
}

func issuerKey(ca *x509.Certificate) string {
	return string(ca.RawSubject) + "\x00" + string(ca.SubjectKeyId)
}

// For returns the CRL of issuer, or nil when no CRL for it is loaded.
func (s *CRLSet) For(issuer *x509.Certificate) *CRL {
	if s == nil {
		return nil
	}
	return s.byIssuer[issuerKey(issuer)]
}

// All returns the CRLs in the set, in no particular order.
func (s *CRLSet) All() []*CRL {
	if s == nil {
		return nil
	}
	out := make([]*CRL, 0, len(s.byIssuer))
	for _, c := range s.byIssuer {
		out = append(out, c)
	}
	return out
}

// Update returns a new set with crl added. A CRL with a lower CRL number
// than the one in s for the same issuer is refused with ErrCRLRollback and s
// stays as it is.
func (s *CRLSet) Update(crl *CRL) (*CRLSet, error) {
	key := issuerKey(crl.Issuer)
	if old := s.For(crl.Issuer); old != nil && crl.number().Cmp(old.number()) < 0 {
		return s, fmt.Errorf("CRL %q: %w (%s < %s from %q)", crl.File, ErrCRLRollback, crl.number(), old.number(), old.File)
	}
	n := &CRLSet{byIssuer: map[string]*CRL{}}
	if s != nil {
		for k, v := range s.byIssuer {
			n.byIssuer[k] = v
		}
	}
	n.byIssuer[key] = crl
	return n, nil
}
