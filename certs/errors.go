package certs

import "errors"

// Sentinel errors. Functions in this package wrap them with the operation and
// the file or certificate involved; test for them with errors.Is.
var (
	// ErrInvalidRequest reports a Request that cannot be issued: no role, a
	// malformed name, DNS name, IP or URI, or a negative validity.
	ErrInvalidRequest = errors.New("invalid certificate request")

	// ErrInvalidFileName reports a certificate name that is not safe to use
	// as a file name in a certificate directory.
	ErrInvalidFileName = errors.New("invalid file name")

	// ErrNoCertificate reports input that holds no PEM CERTIFICATE block.
	ErrNoCertificate = errors.New("no PEM CERTIFICATE block")

	// ErrCorruptPEM reports a PEM block that is cut short or damaged, most
	// often a file read while it was still being written.
	ErrCorruptPEM = errors.New("truncated or corrupt PEM block")

	// ErrNoKey reports input that holds no usable PEM private key block.
	ErrNoKey = errors.New("no PEM private key block")

	// ErrInvalidKey reports a private key block that cannot be parsed or
	// holds a key mtunnel cannot use (encrypted, or not a signing key).
	ErrInvalidKey = errors.New("unusable private key")

	// ErrKeyMismatch reports a private key whose public half is not the one
	// in the certificate it was paired with.
	ErrKeyMismatch = errors.New("private key does not match certificate")

	// ErrNotCA reports a certificate used as a CA (a trust bundle entry or
	// ca.crt) that lacks BasicConstraints CA:true.
	ErrNotCA = errors.New("certificate is not a CA")

	// ErrUntrusted reports a certificate that does not chain to any CA in
	// the trust bundle.
	ErrUntrusted = errors.New("not signed by any CA in the trust bundle")

	// ErrExpired reports a certificate (or one in its chain) used outside its
	// validity period: expired or not yet valid.
	ErrExpired = errors.New("outside its validity period")

	// ErrWrongUsage reports a certificate whose extended key usage does not
	// allow the role it is used for (for example a client certificate
	// presented by a server).
	ErrWrongUsage = errors.New("not valid for this role")
)
