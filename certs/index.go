package certs

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"strings"
	"time"
)

// The certificate index is the text database that OpenSSL's "ca" command
// keeps (index.txt) and that "openssl ocsp -index" answers from. Keeping
// mtunnel's revocation records in that format lets an operator run a stock
// OpenSSL responder against the CA directory, while mtunnel reads the same
// file to build CRLs.
//
// Each line has six tab-separated fields (OpenSSL apps/ca.c, DB_type ..
// DB_name):
//
//	status  expiry         revocation                  serial  file     subject
//	V       261230055122Z                              4165E9  unknown  /CN=one
//	R       261230055122Z  261130055122Z,superseded    70EE66  unknown  /CN=two
//
// testdata/openssl-ca-index.txt is a file written by "openssl ca" 3.0.

// Index entry statuses.
const (
	IndexValid   byte = 'V'
	IndexRevoked byte = 'R'
	IndexExpired byte = 'E' // written by "openssl ca -updatedb"
)

// ErrInvalidIndex reports a certificate index (index.txt) line or entry that
// OpenSSL could not read either.
var ErrInvalidIndex = errors.New("invalid certificate index")

// ErrUnknownReason reports a revocation reason name or code that is not an
// RFC 5280 CRLReason.
var ErrUnknownReason = errors.New("unknown revocation reason")

// indexAttr is the content of index.txt.attr. With the OpenSSL default,
// unique_subject = yes, "openssl ca" refuses to issue a renewal while the
// old certificate with the same subject is still valid, and a database
// holding two such entries fails to load.
const indexAttr = "unique_subject = no\n"

// IndexEntry is one certificate in the index.
type IndexEntry struct {
	Status    byte      // IndexValid, IndexRevoked or IndexExpired
	Expiry    time.Time // the certificate's NotAfter
	RevokedAt time.Time // zero unless Status is IndexRevoked
	Reason    int       // RFC 5280 CRLReason code; 0, unspecified, is written as no reason
	Serial    *big.Int
	Subject   string // OpenSSL one-line DN, e.g. "/O=Example/CN=app"

	// rev is the revocation field as read. OpenSSL writes extra data there
	// (keyTime,INVALIDITY-DATE; holdInstruction,OID) that this type does
	// not model; it is written back unchanged while RevokedAt and Reason
	// still say the same, so that rewriting the file loses nothing.
	rev string
}

// ReadIndex reads the index at path. A missing file is an empty index.
// Malformed lines, and serial numbers that occur twice (which OpenSSL
// rejects as well), fail with an error wrapping ErrInvalidIndex.
func ReadIndex(path string) ([]IndexEntry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate index: %w", err)
	}
	entries, err := parseIndex(data)
	if err != nil {
		return nil, fmt.Errorf("read certificate index %s: %w", path, err)
	}
	return entries, nil
}

func parseIndex(data []byte) ([]IndexEntry, error) {
	var entries []IndexEntry
	seen := make(map[string]int)
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		e, err := parseIndexLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		key := e.Serial.String()
		if prev, ok := seen[key]; ok {
			return nil, fmt.Errorf("line %d: %w: serial %s already on line %d", i+1, ErrInvalidIndex, serialHex(e.Serial), prev)
		}
		seen[key] = i + 1
		entries = append(entries, e)
	}
	return entries, nil
}

func parseIndexLine(line string) (IndexEntry, error) {
	f := strings.Split(line, "\t")
	if len(f) != 6 {
		return IndexEntry{}, fmt.Errorf("%w: %d tab-separated fields, want 6", ErrInvalidIndex, len(f))
	}
	var e IndexEntry
	var err error
	if len(f[0]) != 1 {
		return IndexEntry{}, fmt.Errorf("%w: status %q is not V, R or E", ErrInvalidIndex, f[0])
	}
	e.Status = f[0][0]
	if e.Expiry, err = parseIndexTime(f[1]); err != nil {
		return IndexEntry{}, fmt.Errorf("%w: expiry: %v", ErrInvalidIndex, err)
	}
	if f[2] != "" {
		if e.RevokedAt, e.Reason, err = parseRevocation(f[2]); err != nil {
			return IndexEntry{}, err
		}
		e.rev = f[2]
	}
	serial, ok := new(big.Int).SetString(f[3], 16)
	if !ok {
		return IndexEntry{}, fmt.Errorf("%w: serial %q is not hexadecimal", ErrInvalidIndex, f[3])
	}
	e.Serial, e.Subject = serial, f[5]
	if err := e.validate(); err != nil {
		return IndexEntry{}, err
	}
	return e, nil
}

// parseRevocation parses "TIME[,REASON[,EXTRA]]". Besides the CRLReason
// names, OpenSSL writes three pseudo-reasons (apps/ca.c, crl_reasons):
// holdInstruction (certificateHold with a hold instruction), keyTime and
// CAkeyTime (keyCompromise and CACompromise with an invalidity date).
func parseRevocation(s string) (time.Time, int, error) {
	parts := strings.Split(s, ",")
	at, err := parseIndexTime(parts[0])
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("%w: revocation time: %v", ErrInvalidIndex, err)
	}
	if len(parts) == 1 {
		return at, 0, nil
	}
	reason, err := ReasonCode(parts[1])
	extra := false
	switch {
	case strings.EqualFold(parts[1], "holdInstruction"):
		reason, err, extra = 6, nil, true
	case strings.EqualFold(parts[1], "keyTime"):
		reason, err, extra = 1, nil, true
	case strings.EqualFold(parts[1], "CAkeyTime"):
		reason, err, extra = 2, nil, true
	}
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("%w: revocation field %q: %w", ErrInvalidIndex, s, err)
	}
	if extra != (len(parts) == 3) || len(parts) > 3 {
		return time.Time{}, 0, fmt.Errorf("%w: revocation field %q has the wrong number of parts", ErrInvalidIndex, s)
	}
	return at, reason, nil
}

func (e *IndexEntry) validate() error {
	switch {
	case e.Status != IndexValid && e.Status != IndexRevoked && e.Status != IndexExpired:
		return fmt.Errorf("%w: status %q is not V, R or E", ErrInvalidIndex, e.Status)
	case e.Serial == nil || e.Serial.Sign() <= 0:
		return fmt.Errorf("%w: serial number is missing or not positive", ErrInvalidIndex)
	case e.Expiry.IsZero():
		return fmt.Errorf("%w: serial %s: expiry is missing", ErrInvalidIndex, serialHex(e.Serial))
	case e.Status == IndexRevoked && e.RevokedAt.IsZero():
		return fmt.Errorf("%w: serial %s: revoked without a revocation time", ErrInvalidIndex, serialHex(e.Serial))
	case e.Status != IndexRevoked && !e.RevokedAt.IsZero():
		return fmt.Errorf("%w: serial %s: status %c but a revocation time is set", ErrInvalidIndex, serialHex(e.Serial), e.Status)
	case strings.ContainsAny(e.Subject, "\t\r\n"):
		return fmt.Errorf("%w: serial %s: subject contains a tab or line break", ErrInvalidIndex, serialHex(e.Serial))
	}
	if e.Status == IndexRevoked && ReasonName(e.Reason) == "" {
		return fmt.Errorf("serial %s: %w: code %d", serialHex(e.Serial), ErrUnknownReason, e.Reason)
	}
	return nil
}

// WriteIndex replaces the index at path with entries, atomically and with
// mode 0644, and writes path+".attr" with "unique_subject = no", which
// OpenSSL reads next to the index: renewals reuse subjects. The directory
// must exist. Entries are checked first; an entry OpenSSL could not read
// (no serial or expiry, a duplicate serial, a subject with a tab) fails
// with ErrInvalidIndex and nothing is written.
func WriteIndex(path string, entries []IndexEntry) error {
	data, err := formatIndex(entries)
	if err != nil {
		return fmt.Errorf("write certificate index %s: %w", path, err)
	}
	if err := writeFileAtomic(path+".attr", []byte(indexAttr), certFileMode, true); err != nil {
		return fmt.Errorf("write certificate index: %w", err)
	}
	if err := writeFileAtomic(path, data, certFileMode, true); err != nil {
		return fmt.Errorf("write certificate index: %w", err)
	}
	return nil
}

func formatIndex(entries []IndexEntry) ([]byte, error) {
	var buf bytes.Buffer
	seen := make(map[string]bool, len(entries))
	for i := range entries {
		e := &entries[i]
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("entry #%d: %w", i+1, err)
		}
		if seen[e.Serial.String()] {
			return nil, fmt.Errorf("entry #%d: %w: serial %s occurs twice", i+1, ErrInvalidIndex, serialHex(e.Serial))
		}
		seen[e.Serial.String()] = true
		rev, err := e.revocationField()
		if err != nil {
			return nil, fmt.Errorf("entry #%d: %w", i+1, err)
		}
		// "unknown" is what "openssl ca" writes in the file field.
		fmt.Fprintf(&buf, "%c\t%s\t%s\t%s\tunknown\t%s\n", e.Status, formatIndexTime(e.Expiry), rev, serialHex(e.Serial), e.Subject)
	}
	return buf.Bytes(), nil
}

func (e *IndexEntry) revocationField() (string, error) {
	if e.Status != IndexRevoked {
		return "", nil
	}
	if e.rev != "" {
		if at, reason, err := parseRevocation(e.rev); err == nil && at.Equal(e.RevokedAt.Truncate(time.Second)) && reason == e.Reason {
			return e.rev, nil
		}
	}
	// OpenSSL parses the revocation time as an ASN.1 UTCTime only
	// (apps/ca.c, unpack_revinfo), so years outside 1950-2049 cannot be
	// written; "openssl ca -gencrl" rejects the whole file.
	if y := e.RevokedAt.UTC().Year(); y < 1950 || y > 2049 {
		return "", fmt.Errorf("%w: serial %s: revocation time %s is outside 1950-2049, which OpenSSL cannot read",
			ErrInvalidIndex, serialHex(e.Serial), e.RevokedAt.UTC().Format(time.RFC3339))
	}
	s := formatIndexTime(e.RevokedAt)
	// RFC 5280 5.3.1: the reason code unspecified (0) SHOULD be absent
	// rather than present; "openssl ca -revoke" without -crl_reason also
	// writes the time alone.
	if e.Reason != 0 {
		s += "," + ReasonName(e.Reason)
	}
	return s, nil
}

// RecordIssued adds c to the index at path as valid. Recording a serial
// that is already in the index, whatever its status, changes nothing.
//
// The update is a read-modify-write of the whole file: each write is
// atomic, but two processes recording at the same moment can lose one
// update, so callers serialise writers (mtunnel's CLI runs one command at
// a time).
func RecordIssued(path string, c *x509.Certificate) error {
	if c == nil || c.SerialNumber == nil {
		return errors.New("record issued certificate: certificate is missing")
	}
	entries, err := ReadIndex(path)
	if err != nil {
		return err
	}
	if indexOf(entries, c.SerialNumber) >= 0 {
		return nil
	}
	entries = append(entries, IndexEntry{
		Status:  IndexValid,
		Expiry:  c.NotAfter,
		Serial:  c.SerialNumber,
		Subject: oneLineDN(c.RawSubject),
	})
	if err := WriteIndex(path, entries); err != nil {
		return fmt.Errorf("record certificate %q: %w", Identity(c), err)
	}
	return nil
}

// RecordRevoked marks c as revoked at time at for reason (an RFC 5280
// CRLReason code, 0 for unspecified), adding it to the index if it is not
// there. It is idempotent: a certificate already revoked keeps its first
// revocation time and reason, so that a repeated command cannot move the
// date a relying party has already seen in a CRL.
//
// Reasons privilegeWithdrawn (9) and AACompromise (10) are recorded, but
// OpenSSL 3.0 does not know their names: "openssl ocsp" then answers
// "revoked" without a reason, and "openssl ca -gencrl" fails. Like
// RecordIssued, RecordRevoked expects callers to serialise writers.
func RecordRevoked(path string, c *x509.Certificate, reason int, at time.Time) error {
	if c == nil || c.SerialNumber == nil {
		return errors.New("record revoked certificate: certificate is missing")
	}
	if ReasonName(reason) == "" {
		return fmt.Errorf("revoke certificate %q: %w: code %d", Identity(c), ErrUnknownReason, reason)
	}
	if at.IsZero() {
		return fmt.Errorf("revoke certificate %q: revocation time is missing", Identity(c))
	}
	entries, err := ReadIndex(path)
	if err != nil {
		return err
	}
	i := indexOf(entries, c.SerialNumber)
	switch {
	case i < 0:
		entries = append(entries, IndexEntry{Expiry: c.NotAfter, Serial: c.SerialNumber, Subject: oneLineDN(c.RawSubject)})
		i = len(entries) - 1
	case entries[i].Status == IndexRevoked:
		return nil
	}
	entries[i].Status, entries[i].RevokedAt, entries[i].Reason = IndexRevoked, at.UTC().Truncate(time.Second), reason
	if err := WriteIndex(path, entries); err != nil {
		return fmt.Errorf("revoke certificate %q: %w", Identity(c), err)
	}
	return nil
}

func indexOf(entries []IndexEntry, serial *big.Int) int {
	for i := range entries {
		if entries[i].Serial.Cmp(serial) == 0 {
			return i
		}
	}
	return -1
}

// serialHex formats a serial number as OpenSSL's index does (BN_bn2hex):
// upper-case hexadecimal with an even number of digits. "openssl ocsp"
// looks serials up by exact string, so "a1b" would never match "0A1B".
func serialHex(n *big.Int) string {
	s := strings.ToUpper(n.Text(16))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

// Index times are ASN.1 UTCTime strings (YYMMDDHHMMSSZ) for the years
// 1950-2049 and GeneralizedTime (YYYYMMDDHHMMSSZ) otherwise, the choice
// OpenSSL's ASN1_TIME_adj makes (RFC 5280 4.1.2.5).
const (
	utcTimeLayout         = "060102150405Z"
	generalizedTimeLayout = "20060102150405Z"
)

func formatIndexTime(t time.Time) string {
	t = t.UTC()
	if y := t.Year(); y >= 1950 && y <= 2049 {
		return t.Format(utcTimeLayout)
	}
	return t.Format(generalizedTimeLayout)
}

func parseIndexTime(s string) (time.Time, error) {
	switch len(s) {
	case len(utcTimeLayout):
		// Go's two-digit years pivot at 69; RFC 5280's pivot is 50.
		century := "20"
		if s[0] >= '5' {
			century = "19"
		}
		s = century + s
	case len(generalizedTimeLayout):
	default:
		return time.Time{}, fmt.Errorf("%q is not YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ", s)
	}
	t, err := time.Parse(generalizedTimeLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ", s)
	}
	return t, nil
}

// ReasonName returns the OpenSSL name of an RFC 5280 CRLReason code
// ("keyCompromise" for 1), or "" if code is not one (7 is unassigned).
func ReasonName(code int) string {
	switch code {
	case 0:
		return "unspecified"
	case 1:
		return "keyCompromise"
	case 2:
		return "CACompromise"
	case 3:
		return "affiliationChanged"
	case 4:
		return "superseded"
	case 5:
		return "cessationOfOperation"
	case 6:
		return "certificateHold"
	case 8:
		return "removeFromCRL"
	case 9:
		return "privilegeWithdrawn"
	case 10:
		return "AACompromise"
	}
	return ""
}

// ReasonCode returns the RFC 5280 CRLReason code for name, one of the names
// ReasonName returns, compared case-insensitively as OpenSSL does. An
// unknown name fails with ErrUnknownReason and the list of valid names.
func ReasonCode(name string) (int, error) {
	var names []string
	for code := 0; code <= 10; code++ {
		n := ReasonName(code)
		if n == "" {
			continue
		}
		if strings.EqualFold(name, n) {
			return code, nil
		}
		names = append(names, n)
	}
	return 0, fmt.Errorf("%w %q; use one of %s", ErrUnknownReason, name, strings.Join(names, ", "))
}

// oneLineDN formats a DER-encoded distinguished name (a certificate's
// RawSubject) the way OpenSSL's X509_NAME_oneline does, as the index
// stores it: "/C=DE/O=Example/CN=app", attributes in certificate order,
// bytes outside printable ASCII escaped as \xHH. Undecodable input gives
// "".
func oneLineDN(der []byte) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &rdns); err != nil || len(rest) > 0 {
		return ""
	}
	var b strings.Builder
	for _, rdn := range rdns {
		for _, atv := range rdn {
			b.WriteString("/")
			b.WriteString(attributeShortName(atv.Type))
			b.WriteString("=")
			for _, c := range []byte(fmt.Sprint(atv.Value)) {
				if c < ' ' || c > '~' {
					fmt.Fprintf(&b, "\\x%02X", c)
				} else {
					b.WriteByte(c)
				}
			}
		}
	}
	return b.String()
}

// attributeShortName returns OpenSSL's short name for the common
// distinguished name attributes, and the dotted OID for others, as
// X509_NAME_oneline does.
func attributeShortName(oid asn1.ObjectIdentifier) string {
	names := []struct {
		oid  asn1.ObjectIdentifier
		name string
	}{
		{asn1.ObjectIdentifier{2, 5, 4, 3}, "CN"},
		{asn1.ObjectIdentifier{2, 5, 4, 4}, "SN"},
		{asn1.ObjectIdentifier{2, 5, 4, 5}, "serialNumber"},
		{asn1.ObjectIdentifier{2, 5, 4, 6}, "C"},
		{asn1.ObjectIdentifier{2, 5, 4, 7}, "L"},
		{asn1.ObjectIdentifier{2, 5, 4, 8}, "ST"},
		{asn1.ObjectIdentifier{2, 5, 4, 9}, "street"},
		{asn1.ObjectIdentifier{2, 5, 4, 10}, "O"},
		{asn1.ObjectIdentifier{2, 5, 4, 11}, "OU"},
		{asn1.ObjectIdentifier{2, 5, 4, 12}, "title"},
		{asn1.ObjectIdentifier{2, 5, 4, 17}, "postalCode"},
		{asn1.ObjectIdentifier{2, 5, 4, 42}, "GN"},
		{asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}, "UID"},
		{asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, "DC"},
		{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, "emailAddress"},
	}
	for _, n := range names {
		if oid.Equal(n.oid) {
			return n.name
		}
	}
	return oid.String()
}
