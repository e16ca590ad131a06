package certs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// ExpiryWarning is how close to its expiry Describe starts warning about a
// certificate: time enough to issue and roll out a new one.
const ExpiryWarning = 30 * 24 * time.Hour

// Describe returns a plain-text description of c as seen at time now, one
// "Field: value" line each, for people checking what a file holds:
// subject, issuer, serial, validity (with a WARNING line when c expires
// within ExpiryWarning), key, key usages, CA status, SANs, name
// constraints, revocation URLs and the SHA-256 fingerprint. It never
// includes key material.
func Describe(c *x509.Certificate, now time.Time) string {
	var b strings.Builder
	field := func(name, value string) { fmt.Fprintf(&b, "%-24s %s\n", name+":", value) }

	field("Subject", orNone(c.Subject.String()))
	issuer := orNone(c.Issuer.String())
	if signedBy(c, c) {
		issuer += " (self-signed)"
	}
	field("Issuer", issuer)
	field("Serial", SerialString(c.SerialNumber))
	status, warn := validityStatus(c, now)
	field("Validity", fmt.Sprintf("%s to %s, %s", formatTime(c.NotBefore), formatTime(c.NotAfter), status))
	if warn != "" {
		b.WriteString("WARNING: " + warn + "\n")
	}
	field("Key", describeKey(c.PublicKey))
	field("Signature", c.SignatureAlgorithm.String())
	field("Key usage", orNone(strings.Join(keyUsageNames(c.KeyUsage), ", ")))
	field("Extended key usage", describeExtKeyUsage(c))
	field("CA", describeCA(c))
	field("SANs", orNone(strings.Join(sanList(c), ", ")))
	if nc := nameConstraints(c); nc != "" {
		field("Name constraints", nc)
	}
	field("OCSP responders", orNone(strings.Join(c.OCSPServer, ", ")))
	field("CRL distribution points", orNone(strings.Join(c.CRLDistributionPoints, ", ")))
	field("SHA-256 fingerprint", Fingerprint(c))
	return b.String()
}

// SerialString formats a serial number as the certificate index does:
// upper-case hexadecimal with an even number of digits, so that a serial
// printed by mtunnel can be found in index.txt and in OpenSSL's output.
func SerialString(n *big.Int) string {
	if n == nil {
		return "none"
	}
	return serialHex(n)
}

// Fingerprint returns the SHA-256 hash of c's DER encoding as upper-case
// hexadecimal bytes separated by colons, as "openssl x509 -fingerprint
// -sha256" prints it.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	hexes := make([]string, len(sum))
	for i, v := range sum {
		hexes[i] = fmt.Sprintf("%02X", v)
	}
	return strings.Join(hexes, ":")
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// validityStatus says where now falls in c's validity period, and returns
// a warning when c expires within ExpiryWarning.
func validityStatus(c *x509.Certificate, now time.Time) (status, warning string) {
	switch {
	case now.Before(c.NotBefore):
		return "not valid yet (valid " + inDays(c.NotBefore.Sub(now)) + ")", ""
	case now.After(c.NotAfter):
		return "EXPIRED " + days(now.Sub(c.NotAfter)) + " ago", ""
	}
	left := c.NotAfter.Sub(now)
	status = "expires " + inDays(left)
	if left < ExpiryWarning {
		warning = "expires " + inDays(left) + "; issue a new certificate before then"
	}
	return status, warning
}

// days formats d in whole days, rounded down.
func days(d time.Duration) string {
	n := int(d / (24 * time.Hour))
	if n == 1 {
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

func inDays(d time.Duration) string {
	if d < 24*time.Hour {
		return "in less than a day"
	}
	return "in " + days(d)
}

func describeKey(pub any) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return fmt.Sprintf("ECDSA %s (%d bits)", k.Curve.Params().Name, k.Curve.Params().BitSize)
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d bits", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

// keyUsageNames lists the key usage bits set in u by their RFC 5280
// 4.2.1.3 names.
func keyUsageNames(u x509.KeyUsage) []string {
	names := []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
		"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var out []string
	for i, n := range names {
		if u&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

func describeExtKeyUsage(c *x509.Certificate) string {
	names := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageAny:             "any",
		x509.ExtKeyUsageServerAuth:      "serverAuth (TLS server)",
		x509.ExtKeyUsageClientAuth:      "clientAuth (TLS client)",
		x509.ExtKeyUsageCodeSigning:     "codeSigning",
		x509.ExtKeyUsageEmailProtection: "emailProtection",
		x509.ExtKeyUsageTimeStamping:    "timeStamping",
		x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
	}
	var out []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := names[u]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprintf("extended key usage #%d", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		out = append(out, oid.String())
	}
	if len(out) == 0 {
		return "none (not restricted)"
	}
	return strings.Join(out, ", ")
}

func describeCA(c *x509.Certificate) string {
	switch {
	case !c.BasicConstraintsValid || !c.IsCA:
		return "no"
	case c.MaxPathLen == 0 && c.MaxPathLenZero:
		return "yes, path length 0: may sign leaf certificates only"
	case c.MaxPathLen > 0:
		return fmt.Sprintf("yes, path length %d: at most %d intermediate CA(s) below it", c.MaxPathLen, c.MaxPathLen)
	}
	return "yes, path length unlimited"
}

func sanList(c *x509.Certificate) []string {
	var out []string
	for _, d := range c.DNSNames {
		out = append(out, "DNS:"+d)
	}
	for _, ip := range c.IPAddresses {
		out = append(out, "IP:"+ip.String())
	}
	for _, u := range c.URIs {
		out = append(out, "URI:"+u.String())
	}
	for _, e := range c.EmailAddresses {
		out = append(out, "email:"+e)
	}
	return out
}

// nameConstraints describes the names c, a CA, may certify below it, or
// returns "" when it is not constrained.
func nameConstraints(c *x509.Certificate) string {
	var parts []string
	add := func(kind string, values []string) {
		if len(values) > 0 {
			parts = append(parts, kind+" "+strings.Join(values, ", "))
		}
	}
	ranges := func(nets []*net.IPNet) []string {
		var out []string
		for _, n := range nets {
			out = append(out, n.String())
		}
		return out
	}
	add("permitted DNS", c.PermittedDNSDomains)
	add("excluded DNS", c.ExcludedDNSDomains)
	add("permitted IP", ranges(c.PermittedIPRanges))
	add("excluded IP", ranges(c.ExcludedIPRanges))
	add("permitted email", c.PermittedEmailAddresses)
	add("excluded email", c.ExcludedEmailAddresses)
	add("permitted URI domains", c.PermittedURIDomains)
	add("excluded URI domains", c.ExcludedURIDomains)
	if len(parts) == 0 {
		return ""
	}
	s := strings.Join(parts, "; ")
	if c.PermittedDNSDomainsCritical {
		s += " (critical)"
	}
	return s
}
