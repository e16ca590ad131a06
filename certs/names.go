package certs

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"unicode/utf8"
)

// checkDNSName reports why name cannot be a DNS SAN. Certificates carry
// names as IA5String (RFC 5280 4.2.1.6), so internationalised names must be
// given in their punycode (xn--) form. A wildcard is accepted only as the
// whole leftmost label, the only form Go's verifier matches.
func checkDNSName(name string, allowWildcard bool) error {
	switch {
	case name == "":
		return errors.New("is empty")
	case len(name) > 253:
		return fmt.Errorf("is %d bytes; a DNS name is at most 253", len(name))
	case strings.HasSuffix(name, "."):
		return errors.New("ends with a dot; drop the trailing dot")
	}
	labels := strings.Split(name, ".")
	if labels[0] == "*" {
		if !allowWildcard {
			return errors.New("is a wildcard, which is not allowed here")
		}
		if len(labels) < 2 {
			return errors.New("is a bare wildcard; use *.example.com")
		}
		labels = labels[1:]
	}
	for _, label := range labels {
		if err := checkLabel(label); err != nil {
			return err
		}
	}
	return nil
}

func checkLabel(label string) error {
	if label == "" {
		return errors.New("has an empty label (two dots in a row or a leading dot)")
	}
	if len(label) > 63 {
		return fmt.Errorf("label %q is %d bytes; a label is at most 63", label, len(label))
	}
	if label[0] == '-' || label[len(label)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with a hyphen", label)
	}
	for _, c := range label {
		switch {
		case c == '*':
			return errors.New("has a wildcard that is not the whole leftmost label")
		case c >= utf8.RuneSelf:
			return errors.New("contains non-ASCII characters; use the punycode (xn--) form")
		case c == '-', c == '_', // underscores appear in real names (SRV, DKIM); Go accepts them
			'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			return fmt.Errorf("label %q contains %q; use letters, digits and hyphens", label, c)
		}
	}
	return nil
}

// checkURI reports why u cannot be a URI SAN. A URI SAN must be absolute
// (RFC 5280 4.2.1.6), IA5String (ASCII), and Go's certificate parser rejects
// a URI whose host is not a valid domain, so such a certificate could not
// even be loaded back.
func checkURI(u *url.URL) error {
	if u == nil {
		return errors.New("is nil")
	}
	s := u.String()
	if u.Scheme == "" {
		return fmt.Errorf("%q has no scheme; use an absolute URI such as spiffe://trust-domain/workload", s)
	}
	for _, c := range s {
		if c >= utf8.RuneSelf {
			return fmt.Errorf("%q contains non-ASCII characters", s)
		}
	}
	if host := u.Hostname(); host != "" && net.ParseIP(host) == nil {
		if err := checkDNSName(host, false); err != nil {
			return fmt.Errorf("%q: host %v", s, err)
		}
	}
	return nil
}

// caBaseName is the base name of the CA files, ca.crt and ca.key. A leaf may
// not use it, or writing the leaf would replace the CA.
const caBaseName = "ca"

// ValidateFileName reports whether name can name the NAME.crt and NAME.key
// files of a leaf in a certificate directory: not empty, not starting with a
// dot (hidden, or "." and ".."), no path separators or control characters,
// and not "ca", which would overwrite the CA. The error wraps
// ErrInvalidFileName.
func ValidateFileName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: name is empty", ErrInvalidFileName)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%w: name %q starts with a dot", ErrInvalidFileName, name)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%w: name %q contains a path separator", ErrInvalidFileName, name)
	case strings.EqualFold(name, caBaseName): // EqualFold: case-insensitive file systems
		return fmt.Errorf("%w: name %q is reserved for the CA files", ErrInvalidFileName, name)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name %q is not valid UTF-8", ErrInvalidFileName, name)
	}
	for _, c := range name {
		if c < ' ' || c == 0x7f {
			return fmt.Errorf("%w: name %q contains a control character", ErrInvalidFileName, name)
		}
	}
	return nil
}
