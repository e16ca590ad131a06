package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP errors. A caller in "soft-fail" mode accepts a certificate when
// the check fails with ErrOCSPUnavailable, which an attacker who can block
// traffic can always cause anyway, and rejects it on ErrOCSPInvalid, which
// means a responder was reached and answered something that must not be
// trusted.
var (
	// ErrOCSPInvalid reports a response that was received but cannot be
	// used: malformed, badly signed, signed by an unauthorised responder,
	// about another certificate or issuer, stale or from the future, or a
	// refusal such as "unauthorized".
	ErrOCSPInvalid = errors.New("invalid OCSP response")

	// ErrOCSPUnavailable reports that no response could be obtained: no
	// responder URL, responder unreachable, timeout, an HTTP error, a body
	// that is not an OCSP response, or "tryLater" / "internalError".
	ErrOCSPUnavailable = errors.New("OCSP responder unavailable")
)

// OCSPStatus is a certificate status in an OCSP response.
type OCSPStatus int

// The zero OCSPStatus is not a status, so that an uninitialised result is
// never mistaken for a good one.
const (
	OCSPGood OCSPStatus = iota + 1
	OCSPRevoked
	OCSPUnknown // the responder does not know the certificate
)

func (s OCSPStatus) String() string {
	switch s {
	case OCSPGood:
		return "good"
	case OCSPRevoked:
		return "revoked"
	case OCSPUnknown:
		return "unknown"
	}
	return fmt.Sprintf("OCSPStatus(%d)", int(s))
}

// OCSPResult is a verified OCSP response for one certificate.
type OCSPResult struct {
	Status     OCSPStatus
	RevokedAt  time.Time // set when Status is OCSPRevoked
	Reason     int       // RFC 5280 CRLReason code when revoked; 0 when none was given
	ThisUpdate time.Time
	NextUpdate time.Time // zero if the responder gave none
	Raw        []byte    // the DER response, e.g. for tls.Certificate.OCSPStaple
}

// ocspMaxAgeWithoutNextUpdate is how long a response without nextUpdate is
// taken as fresh. RFC 6960 4.2.2.1 says such a responder "has newer
// information available all the time", which gives a client no bound at
// all: without one, a captured "good" response would stay usable forever
// after the certificate is revoked. A day is our choice, not the RFC's.
const ocspMaxAgeWithoutNextUpdate = 24 * time.Hour

// VerifyOCSPResponse parses the DER OCSP response der and checks that it is
// a trustworthy, current answer about cert, which issuer issued. On top of
// what ocsp.ParseResponseForCert checks (structure, that the serial number
// matches, the signature), it enforces:
//
//   - Responder authority (RFC 6960 4.2.2.2): a response is signed either by
//     issuer's key, or by a delegated responder certificate embedded in the
//     response that issuer signed, that carries the id-kp-OCSPSigning
//     extended key usage, and that is valid at now (give or take skew).
//     Without this check any leaf of the CA, say a client certificate,
//     could sign "good" for every revoked certificate.
//   - The CertID names issuer: its issuerNameHash and issuerKeyHash match
//     issuer's, computed with the response's hash algorithm.
//   - Freshness: thisUpdate is not after now+skew, and nextUpdate, when
//     present, is not before now-skew. A response without nextUpdate is
//     taken as fresh for 24 hours after thisUpdate.
//
// Failures wrap ErrOCSPInvalid, except responder error statuses "tryLater"
// and "internalError", which wrap ErrOCSPUnavailable. A cert that issuer
// did not sign is the caller's mistake, reported without either sentinel.
func VerifyOCSPResponse(der []byte, cert, issuer *x509.Certificate, now time.Time, skew time.Duration) (*OCSPResult, error) {
	if cert == nil || issuer == nil || cert.SerialNumber == nil {
		return nil, errors.New("verify OCSP response: certificate or issuer is missing")
	}
	id := Identity(cert)
	if err := checkIssued(cert, issuer); err != nil {
		return nil, fmt.Errorf("verify OCSP response for %q: %w", id, err)
	}
	resp, err := ocsp.ParseResponseForCert(der, cert, issuer)
	if err != nil {
		var re ocsp.ResponseError
		if errors.As(err, &re) && (re.Status == ocsp.TryLater || re.Status == ocsp.InternalError) {
			return nil, fmt.Errorf("OCSP response for %q: %w: responder says %q", id, ErrOCSPUnavailable, re.Status)
		}
		return nil, fmt.Errorf("OCSP response for %q: %w: %w", id, ErrOCSPInvalid, err)
	}
	if err := checkOCSPResponder(resp.Certificate, issuer, now, skew); err != nil {
		return nil, fmt.Errorf("OCSP response for %q: %w: %w", id, ErrOCSPInvalid, err)
	}
	if err := checkOCSPCertID(der, resp.IssuerHash, cert.SerialNumber, issuer); err != nil {
		return nil, fmt.Errorf("OCSP response for %q: %w: %w", id, ErrOCSPInvalid, err)
	}
	if err := checkOCSPFreshness(resp.ThisUpdate, resp.NextUpdate, now, skew); err != nil {
		return nil, fmt.Errorf("OCSP response for %q: %w: %w", id, ErrOCSPInvalid, err)
	}
	res := &OCSPResult{ThisUpdate: resp.ThisUpdate, NextUpdate: resp.NextUpdate, Raw: der}
	switch resp.Status {
	case ocsp.Good:
		res.Status = OCSPGood
	case ocsp.Revoked:
		res.Status, res.RevokedAt, res.Reason = OCSPRevoked, resp.RevokedAt, resp.RevocationReason
	default:
		res.Status = OCSPUnknown
	}
	return res, nil
}

// OCSPInfo describes an OCSP response for reports (status, metrics).
type OCSPInfo struct {
	Status     OCSPStatus
	ProducedAt time.Time
	ThisUpdate time.Time
	NextUpdate time.Time // zero if the responder gave none
}

// DescribeOCSP reads the status and times of the DER OCSP response der
// for a report. It checks neither the signer nor the freshness: only
// VerifyOCSPResponse decides whether a response can be trusted.
func DescribeOCSP(der []byte) (OCSPInfo, error) {
	resp, err := ocsp.ParseResponse(der, nil)
	if err != nil {
		return OCSPInfo{}, fmt.Errorf("parse OCSP response: %w", err)
	}
	info := OCSPInfo{Status: OCSPUnknown, ProducedAt: resp.ProducedAt, ThisUpdate: resp.ThisUpdate, NextUpdate: resp.NextUpdate}
	switch resp.Status {
	case ocsp.Good:
		info.Status = OCSPGood
	case ocsp.Revoked:
		info.Status = OCSPRevoked
	}
	return info, nil
}

// checkIssued reports whether issuer issued cert. Without it a valid
// response about another CA's certificate with the same serial number, and
// possibly the same CA name, would pass as an answer about cert.
func checkIssued(cert, issuer *x509.Certificate) error {
	if err := cert.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("certificate was not issued by %q: %w", Identity(issuer), err)
	}
	return nil
}

// checkOCSPResponder enforces RFC 6960 4.2.2.2 on the certificate embedded
// in a response (responder). ocsp.ParseResponseForCert has verified that
// responder signed the response and that issuer's key signed responder,
// and, without an embedded certificate, that issuer's key signed the
// response; it checks nothing else about the responder.
func checkOCSPResponder(responder, issuer *x509.Certificate, now time.Time, skew time.Duration) error {
	if responder == nil {
		return nil // signed by issuer's key, checked by the parser
	}
	// The CA itself. Comparing keys rather than bytes also accepts a
	// re-issued copy of the CA certificate: the signature is by the CA's
	// key either way.
	if bytes.Equal(responder.Raw, issuer.Raw) || publicKeysEqual(responder.PublicKey, issuer.PublicKey) {
		return nil
	}
	name := Identity(responder)
	if err := responder.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("responder certificate %q is not issued by %q: %w", name, Identity(issuer), err)
	}
	if !hasExtKeyUsage(responder, x509.ExtKeyUsageOCSPSigning) {
		return fmt.Errorf("responder certificate %q lacks the OCSP signing extended key usage, so it is not authorised to sign responses (RFC 6960 4.2.2.2)", name)
	}
	if now.Add(skew).Before(responder.NotBefore) || now.Add(-skew).After(responder.NotAfter) {
		return fmt.Errorf("responder certificate %q is outside its validity period %s to %s", name,
			responder.NotBefore.UTC().Format(time.RFC3339), responder.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func hasExtKeyUsage(c *x509.Certificate, usage x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == usage {
			return true
		}
	}
	return false
}

// checkOCSPFreshness checks a response's validity interval against now.
func checkOCSPFreshness(thisUpdate, nextUpdate, now time.Time, skew time.Duration) error {
	const layout = time.RFC3339
	switch {
	case thisUpdate.After(now.Add(skew)):
		return fmt.Errorf("thisUpdate %s is in the future (now %s)", thisUpdate.UTC().Format(layout), now.UTC().Format(layout))
	case nextUpdate.IsZero() && now.Add(-skew).After(thisUpdate.Add(ocspMaxAgeWithoutNextUpdate)):
		return fmt.Errorf("stale: no nextUpdate and thisUpdate %s is more than %v old", thisUpdate.UTC().Format(layout), ocspMaxAgeWithoutNextUpdate)
	case nextUpdate.IsZero():
		return nil
	case nextUpdate.Before(thisUpdate):
		return fmt.Errorf("nextUpdate %s is before thisUpdate %s", nextUpdate.UTC().Format(layout), thisUpdate.UTC().Format(layout))
	case nextUpdate.Before(now.Add(-skew)):
		return fmt.Errorf("stale: nextUpdate %s has passed (now %s)", nextUpdate.UTC().Format(layout), now.UTC().Format(layout))
	}
	return nil
}

// checkOCSPCertID checks that the single response ocsp.ParseResponseForCert
// used, the first one with the certificate's serial number, names issuer.
// x/crypto/ocsp matches responses by serial number alone and does not
// expose the CertID hashes, so the response is decoded a second time here.
func checkOCSPCertID(der []byte, hash crypto.Hash, serial *big.Int, issuer *x509.Certificate) error {
	id, err := findOCSPCertID(der, serial)
	if err != nil {
		return err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return fmt.Errorf("parse issuer public key: %w", err)
	}
	if !hash.Available() {
		return fmt.Errorf("CertID hash %v is not available", hash)
	}
	h := hash.New()
	h.Write(issuer.RawSubject)
	nameHash := h.Sum(nil)
	h.Reset()
	h.Write(spki.PublicKey.RightAlign())
	keyHash := h.Sum(nil)
	if !bytes.Equal(id.IssuerNameHash, nameHash) || !bytes.Equal(id.IssuerKeyHash, keyHash) {
		return fmt.Errorf("CertID issuer hashes do not match issuer %q: the response is about another CA's certificate with the same serial number", Identity(issuer))
	}
	return nil
}

// The ASN.1 of a basic OCSP response, RFC 6960 4.2.1, as far as needed to
// reach the CertIDs.
type (
	ocspResponseASN1 struct {
		Status asn1.Enumerated
		Bytes  struct {
			Type     asn1.ObjectIdentifier
			Response []byte
		} `asn1:"explicit,tag:0,optional"`
	}
	ocspBasicResponseASN1 struct {
		TBS struct {
			Version     int `asn1:"optional,default:0,explicit,tag:0"`
			ResponderID asn1.RawValue
			ProducedAt  time.Time `asn1:"generalized"`
			Responses   []ocspSingleResponseASN1
			Extensions  []pkix.Extension `asn1:"explicit,tag:1,optional"`
		}
		SignatureAlgorithm pkix.AlgorithmIdentifier
		Signature          asn1.BitString
		Certs              []asn1.RawValue `asn1:"explicit,tag:0,optional"`
	}
	ocspSingleResponseASN1 struct {
		CertID  ocspCertIDASN1
		Good    asn1.Flag `asn1:"tag:0,optional"`
		Revoked struct {
			RevocationTime time.Time       `asn1:"generalized"`
			Reason         asn1.Enumerated `asn1:"explicit,tag:0,optional"`
		} `asn1:"tag:1,optional"`
		Unknown    asn1.Flag        `asn1:"tag:2,optional"`
		ThisUpdate time.Time        `asn1:"generalized"`
		NextUpdate time.Time        `asn1:"generalized,explicit,tag:0,optional"`
		Extensions []pkix.Extension `asn1:"explicit,tag:1,optional"`
	}
	ocspCertIDASN1 struct {
		HashAlgorithm  pkix.AlgorithmIdentifier
		IssuerNameHash []byte
		IssuerKeyHash  []byte
		SerialNumber   *big.Int
	}
)

func findOCSPCertID(der []byte, serial *big.Int) (*ocspCertIDASN1, error) {
	var resp ocspResponseASN1
	if _, err := asn1.Unmarshal(der, &resp); err != nil {
		return nil, fmt.Errorf("decode response: %w", err)
	}
	var basic ocspBasicResponseASN1
	if _, err := asn1.Unmarshal(resp.Bytes.Response, &basic); err != nil {
		return nil, fmt.Errorf("decode basic response: %w", err)
	}
	for _, r := range basic.TBS.Responses {
		if r.CertID.SerialNumber != nil && r.CertID.SerialNumber.Cmp(serial) == 0 {
			return &r.CertID, nil
		}
	}
	return nil, errors.New("no single response for the certificate's serial number")
}
