package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// LoadKeyPair reads a certificate chain and its private key from PEM files.
// The certificate file holds the leaf first, optionally followed by
// intermediates; the key file holds one private key. The returned
// certificate has its Leaf field set.
//
// Like crypto/tls.X509KeyPair, but every error names the file at fault and
// diagnoses the usual mistakes: a missing file (fs.ErrNotExist), the two
// paths switched (ErrNoCertificate / ErrNoKey with a hint), a key from
// another pair (ErrKeyMismatch), an encrypted or malformed key
// (ErrInvalidKey).
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	chain, err := readCertificates(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := readKey(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf := chain[0]
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return tls.Certificate{}, mismatchError(certFile, keyFile, chain, key)
	}
	pair := tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		pair.Certificate = append(pair.Certificate, c.Raw)
	}
	return pair, nil
}

func readCertificates(file string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	chain, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load certificate %q: %w", file, err)
	}
	return chain, nil
}

func readKey(file string) (crypto.Signer, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("load private key: %w", err)
	}
	key, err := ParsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load private key %q: %w", file, err)
	}
	return key, nil
}

// mismatchError explains an ErrKeyMismatch, pointing out the case where the
// key belongs to a later certificate of the chain: the leaf is not first.
func mismatchError(certFile, keyFile string, chain []*x509.Certificate, key crypto.Signer) error {
	for i, c := range chain[1:] {
		if publicKeysEqual(c.PublicKey, key.Public()) {
			return fmt.Errorf("%w: key %q belongs to certificate #%d %q in %q, not the first; put the leaf certificate first",
				ErrKeyMismatch, keyFile, i+2, Identity(c), certFile)
		}
	}
	return fmt.Errorf("%w: key %q, certificate %q in %q", ErrKeyMismatch, keyFile, Identity(chain[0]), certFile)
}

// LoadPool reads a PEM bundle of trusted CA certificates and returns them as
// a pool and as a list, in file order. It fails when the file is missing
// (fs.ErrNotExist), holds no certificate (ErrNoCertificate), or holds a
// certificate that is not a CA (ErrNotCA), which usually means a leaf
// certificate was given where the CA's ca.crt belongs.
func LoadPool(file string) (*x509.CertPool, []*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("load trust bundle: %w", err)
	}
	roots, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, nil, fmt.Errorf("load trust bundle %q: %w", file, err)
	}
	pool := x509.NewCertPool()
	for i, c := range roots {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, nil, fmt.Errorf("load trust bundle %q: certificate #%d %q: %w; is it a leaf? the bundle must hold CA certificates such as ca.crt",
				file, i+1, Identity(c), ErrNotCA)
		}
		pool.AddCert(c)
	}
	return pool, roots, nil
}
