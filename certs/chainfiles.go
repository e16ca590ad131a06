package certs

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// WriteLeafChain writes l followed by chain to dir/NAME.crt (0644) and l's
// key to dir/NAME.key (0600), like WriteLeaf. chain is the intermediate
// CAs from the one that issued l upwards, without the root: a peer trusts
// only the root, so an agent must present every intermediate between its
// leaf and the root, in that order (RFC 8446 4.4.2). Without chain it
// writes what WriteLeaf writes. A chain out of order is refused.
func WriteLeafChain(dir, name string, l *Leaf, chain ...*x509.Certificate) error {
	if err := ValidateFileName(name); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	if l == nil || l.Cert == nil || l.Key == nil {
		return fmt.Errorf("write certificate %q: certificate or key is missing", name)
	}
	full := append([]*x509.Certificate{l.Cert}, chain...)
	if err := checkChainOrder(full); err != nil {
		return fmt.Errorf("write certificate %q: %w", name, err)
	}
	if err := writeChainPair(dir, name, full, l.Key); err != nil {
		return fmt.Errorf("write certificate %q: %w", name, err)
	}
	return nil
}

// WriteIntermediate writes the intermediate CA ca, followed by chain (the
// CAs above it, without the root, when ca was issued by another
// intermediate), to dir/NAME.crt (0644) and its key to dir/NAME.key (0600).
// Like WriteLeaf it replaces an existing pair of that name: certificates
// the old intermediate issued keep working, since their files carry it.
func WriteIntermediate(dir, name string, ca *CA, chain ...*x509.Certificate) error {
	if err := ValidateFileName(name); err != nil {
		return fmt.Errorf("write intermediate CA: %w", err)
	}
	if err := ca.check(); err != nil {
		return fmt.Errorf("write intermediate CA %q: %w", name, err)
	}
	full := append([]*x509.Certificate{ca.Cert}, chain...)
	if err := checkChainOrder(full); err != nil {
		return fmt.Errorf("write intermediate CA %q: %w", name, err)
	}
	if err := writeChainPair(dir, name, full, ca.Key); err != nil {
		return fmt.Errorf("write intermediate CA %q: %w", name, err)
	}
	return nil
}

// LoadIntermediate reads the intermediate CA dir/NAME.crt and dir/NAME.key
// written by WriteIntermediate. It returns the CA and the certificate
// file's whole chain, the CA first: what leaves it issues must carry
// after themselves (WriteLeafChain).
func LoadIntermediate(dir, name string) (*CA, []*x509.Certificate, error) {
	if err := ValidateFileName(name); err != nil {
		return nil, nil, fmt.Errorf("load intermediate CA: %w", err)
	}
	certFile, keyFile := LeafFiles(dir, name)
	pair, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("load intermediate CA: %w", err)
	}
	if !pair.Leaf.BasicConstraintsValid || !pair.Leaf.IsCA {
		return nil, nil, fmt.Errorf("load intermediate CA: certificate %q in %q: %w; is it a leaf?", Identity(pair.Leaf), certFile, ErrNotCA)
	}
	chain := make([]*x509.Certificate, 0, len(pair.Certificate))
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der) // parsed once already by LoadKeyPair
		if err != nil {
			return nil, nil, fmt.Errorf("load intermediate CA %q: %w", certFile, err)
		}
		chain = append(chain, c)
	}
	if err := checkChainOrder(chain); err != nil {
		return nil, nil, fmt.Errorf("load intermediate CA %q: %w", certFile, err)
	}
	// LoadKeyPair only returns keys that are crypto.Signers.
	return &CA{Cert: pair.Leaf, Key: pair.PrivateKey.(crypto.Signer)}, chain, nil
}

// errChainOrder reports a certificate chain in which some certificate is
// not signed by the next one.
var errChainOrder = errors.New("certificate chain out of order")

// checkChainOrder reports whether every certificate in chain is signed by
// the one after it, the order TLS peers expect.
func checkChainOrder(chain []*x509.Certificate) error {
	for i := 0; i+1 < len(chain); i++ {
		if err := chain[i].CheckSignatureFrom(chain[i+1]); err != nil {
			return fmt.Errorf("%w: certificate #%d %q is not signed by #%d %q: %w",
				errChainOrder, i+1, Identity(chain[i]), i+2, Identity(chain[i+1]), err)
		}
	}
	return nil
}

// writeChainPair is writePair for a chain: the key first, then the
// certificates, each atomically, replacing existing files.
func writeChainPair(dir, name string, chain []*x509.Certificate, key crypto.Signer) error {
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	certFile, keyFile := LeafFiles(dir, name)
	if err := writeFileAtomic(keyFile, keyPEM, keyFileMode, true); err != nil {
		return err
	}
	return writeFileAtomic(certFile, EncodeCertPEM(chain...), certFileMode, true)
}
