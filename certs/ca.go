package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// clockSkew backdates NotBefore so that a certificate issued on one machine is
// already valid on a peer whose clock runs a little behind.
const clockSkew = time.Minute

// CA is a certificate authority able to issue leaves.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed CA with a fresh ECDSA P-256 key, valid from one
// minute ago for validFor.
func NewCA(commonName string, validFor time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("create CA: common name is empty")
	}
	if validFor <= 0 {
		return nil, fmt.Errorf("create CA %q: validity %v is not positive", commonName, validFor)
	}
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", commonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", commonName, err)
	}
	skid, err := subjectKeyID(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", commonName, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(validFor),
		// A CA signs certificates and, should revocation lists be added
		// later, CRLs; it never terminates TLS itself (RFC 5280 4.2.1.3).
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// MaxPathLen 0 with MaxPathLenZero false means "no limit", so an
		// operator may later add an intermediate CA under this root.
		SubjectKeyId: skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: sign certificate: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: parse signed certificate: %w", commonName, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// check reports whether ca is usable for issuing: both halves present, a CA
// certificate, and a key that matches it.
func (ca *CA) check() error {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return errors.New("CA certificate or key is missing")
	}
	if !ca.Cert.BasicConstraintsValid || !ca.Cert.IsCA {
		return fmt.Errorf("certificate %q: %w", Identity(ca.Cert), ErrNotCA)
	}
	if !publicKeysEqual(ca.Cert.PublicKey, ca.Key.Public()) {
		return fmt.Errorf("CA %q: %w", Identity(ca.Cert), ErrKeyMismatch)
	}
	return nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	return key, nil
}

// newSerial returns a random positive 128-bit serial number. RFC 5280 4.1.2.2
// allows up to 20 octets; 128 random bits make collisions between
// certificates from the same CA practically impossible.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		serial, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if serial.Sign() > 0 { // zero is not a valid serial number
			return serial, nil
		}
	}
}

// subjectKeyID derives the key identifier from the public key as in RFC 7093
// section 2 method 1: the leftmost 160 bits of the SHA-256 hash of the
// subjectPublicKey bit string. Leaves inherit it as their AuthorityKeyId,
// which lets verifiers pick the right CA when several share a name.
func subjectKeyID(pub *ecdsa.PublicKey) ([]byte, error) {
	ecdhPub, err := pub.ECDH()
	if err != nil {
		return nil, fmt.Errorf("compute subject key id: %w", err)
	}
	sum := sha256.Sum256(ecdhPub.Bytes())
	return sum[:20], nil
}

// publicKeysEqual reports whether a and b are the same public key.
func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}
