// Package certs creates, stores, loads and verifies the X.509 material that
// mtunnel agents use for mutual TLS: a private certificate authority (CA),
// leaf certificates issued from it for the server and client roles, and PEM
// trust bundles.
//
// The package knows about x509 and PEM only. It sets no TLS policy (that
// lives in package tunnel), reads no flags or environment variables, and
// keeps no package-level state.
//
// Invariants:
//
//   - Every key it generates is ECDSA on curve P-256: small, fast, and
//     accepted by every TLS 1.2 and 1.3 stack mtunnel talks to.
//   - Private keys are PKCS#8 "PRIVATE KEY" PEM files with mode 0600. The
//     file is created 0600 from the start (never chmod-ed afterwards), so
//     there is no moment at which another user could open it.
//     Certificates are written with mode 0644.
//   - Every file is written atomically: the data goes to a temporary file in
//     the same directory, is synced, and is renamed over the destination, so
//     a reader (for example an agent reloading its certificate) sees either
//     the old file or the new one, never a partial one. A certificate and
//     its key are two files, so a reader may briefly see a new certificate
//     with an old key; LoadKeyPair and LoadCA report that as ErrKeyMismatch
//     rather than using a mismatched pair.
//   - An existing CA is never replaced unless the caller asks for it.
//   - A leaf never outlives its CA: its NotAfter is capped at the CA's,
//     since the chain stops verifying when the CA expires anyway.
//   - Issued leaves carry the role-specific extended key usages (ServerAuth,
//     ClientAuth) and, for servers, at least one DNS or IP SAN, because Go
//     ignores the Subject common name for hostname verification since Go
//     1.15.
//   - Errors are lowercase, name the operation and the file or certificate
//     involved, and wrap a sentinel (ErrNoCertificate, ErrKeyMismatch, ...)
//     that callers can test with errors.Is. Messages never contain key
//     material.
//
// Revocation data lives here too, as data: intermediate CAs with name
// constraints (intermediate.go), the openssl-compatible index.txt of issued
// and revoked certificates (index.go), CRLs it generates (crlgen.go) and
// CRLs it loads and verifies against their issuer, refusing rollbacks by
// CRL number (crl.go), and OCSP: request, fetch with a cache keyed by issuer
// and serial, and verification of responses including what
// x/crypto/ocsp leaves out, responder authority and the CertID's issuer
// hashes (ocsp.go, ocsp_client.go). OCSP fetching is the one place the
// package uses the network (net/http). The policy that uses all this is in
// package tunnel.
package certs
