package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// PEM block types.
const (
	blockCertificate = "CERTIFICATE"
	blockPKCS8       = "PRIVATE KEY"
	blockEC          = "EC PRIVATE KEY"
	blockRSA         = "RSA PRIVATE KEY"
	blockEncrypted   = "ENCRYPTED PRIVATE KEY"
)

// EncodeCertPEM returns certs as consecutive PEM CERTIFICATE blocks, in order
// (a leaf followed by its intermediates, or a bundle of roots).
func EncodeCertPEM(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		// pem.Encode writes to a bytes.Buffer, which cannot fail.
		_ = pem.Encode(&buf, &pem.Block{Type: blockCertificate, Bytes: c.Raw})
	}
	return buf.Bytes()
}

// EncodeKeyPEM returns key as a PKCS#8 "PRIVATE KEY" PEM block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: blockPKCS8, Bytes: der}), nil
}

// ParseCertificatesPEM parses every CERTIFICATE block in data, in order,
// skipping blocks of other types. It fails with ErrNoCertificate when there
// is none, and says so when data holds a private key instead, the usual sign
// of certificate and key files given the wrong way round. It fails with
// ErrCorruptPEM when a block is cut short or damaged: pem.Decode skips such
// a block silently, and a bundle or chain read while it is being written
// must not pass for a shorter one.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	var other []string
	block, rest := pem.Decode(data)
	for ; block != nil; block, rest = pem.Decode(rest) {
		if block.Type != blockCertificate {
			other = append(other, block.Type)
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate #%d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if err := checkComplete(data, rest, len(certs)+len(other)); err != nil {
		return nil, err
	}
	if len(certs) > 0 {
		return certs, nil
	}
	for _, t := range other {
		if isKeyBlock(t) {
			return nil, fmt.Errorf("%w: found a %s block instead: is it a key file? inputs may have been switched", ErrNoCertificate, t)
		}
	}
	if len(other) > 0 {
		return nil, fmt.Errorf("%w: found only %q blocks", ErrNoCertificate, other)
	}
	return nil, fmt.Errorf("%w: input is empty or not PEM", ErrNoCertificate)
}

// ParsePrivateKeyPEM parses the first private key block in data: PKCS#8
// "PRIVATE KEY", SEC 1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY". It
// fails with ErrNoKey when there is none (and says so when data holds a
// certificate instead), and with ErrInvalidKey when the key is malformed,
// encrypted, or cannot sign.
func ParsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	sawCert := false
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == blockCertificate {
			sawCert = true
			continue
		}
		if !isKeyBlock(block.Type) {
			continue
		}
		return parseKeyBlock(block)
	}
	if sawCert {
		return nil, fmt.Errorf("%w: found a CERTIFICATE block instead: is it a certificate file? inputs may have been switched", ErrNoKey)
	}
	if bytes.Contains(data, []byte(pemBegin)) {
		return nil, fmt.Errorf("%w: %w", ErrNoKey, ErrCorruptPEM)
	}
	return nil, fmt.Errorf("%w: input is empty or not PEM", ErrNoKey)
}

func parseKeyBlock(block *pem.Block) (crypto.Signer, error) {
	// Legacy OpenSSL encryption marks the block with a Proc-Type header.
	if block.Type == blockEncrypted || block.Headers["Proc-Type"] != "" {
		return nil, fmt.Errorf("%w: %s block is encrypted; decrypt it first (openssl pkey -in KEY -out KEY.plain)", ErrInvalidKey, block.Type)
	}
	var key any
	var err error
	switch block.Type {
	case blockPKCS8:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case blockEC:
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case blockRSA:
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: parse %s block: %w", ErrInvalidKey, block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %s block holds a %T, which cannot sign", ErrInvalidKey, block.Type, key)
	}
	return signer, nil
}

func isKeyBlock(blockType string) bool {
	switch blockType {
	case blockPKCS8, blockEC, blockRSA, blockEncrypted:
		return true
	}
	return false
}

const pemBegin = "-----BEGIN"

// checkComplete reports ErrCorruptPEM when data holds more block openings
// than the n blocks pem.Decode found in it (a damaged block, which Decode
// skips), or when what is left after the last block, rest, is the start of
// another one, even cut inside its BEGIN line.
func checkComplete(data, rest []byte, n int) error {
	if found := bytes.Count(data, []byte(pemBegin)); found > n {
		return fmt.Errorf("%w: %d blocks begin, %d are whole", ErrCorruptPEM, found, n)
	}
	tail := bytes.TrimSpace(rest)
	if bytes.Contains(tail, []byte("-----")) || (len(tail) > 0 && bytes.HasPrefix([]byte(pemBegin), tail)) {
		return fmt.Errorf("%w: the data ends inside a block", ErrCorruptPEM)
	}
	return nil
}
