package tunnel

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Rule matches one attribute of a verified client certificate. Exactly one
// field is set.
//
//   - CN, DNS: the subject common name / any DNS SAN, compared per
//     dot-separated label, ignoring ASCII case and a final dot; a label "*"
//     matches exactly one label ("*.db.example" matches "a.db.example", not
//     "a.b.db.example").
//   - OU: any organizational unit of the subject, exactly.
//   - URI: any URI SAN without user, query or fragment. Scheme and host
//     compare ignoring ASCII case; path segments exactly as written
//     (percent-encoding included), "*" matching exactly one segment and a
//     final "**" any number (so "spiffe://example.org/**" is the whole trust
//     domain).
//
// Case is folded in ASCII only, as DNS does (RFC 4343) and as crypto/x509
// does for names: Unicode folding would make look-alikes equal (the Kelvin
// sign and "k"), and strings.ToLower turns every invalid UTF-8 byte into
// U+FFFD, so distinct names compared equal (found by FuzzRule).
type Rule struct {
	CN  string `yaml:"cn,omitempty"`
	OU  string `yaml:"ou,omitempty"`
	DNS string `yaml:"dns,omitempty"`
	URI string `yaml:"uri,omitempty"`
}

// ErrBadRule reports a rule that cannot match anything sensible.
var ErrBadRule = errors.New("invalid identity rule")

// Validate checks that exactly one field is set and that it is well formed:
// a rule that validates matches at least the name it spells.
func (r Rule) Validate() error {
	set := 0
	for _, v := range []string{r.CN, r.OU, r.DNS, r.URI} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%w: set exactly one of cn, ou, dns, uri (got %d)", ErrBadRule, set)
	}
	for _, name := range []string{r.CN, r.DNS} {
		if name != "" && slices.Contains(labels(name), "") {
			return fmt.Errorf("%w: %s has an empty label (a leading or doubled dot)", ErrBadRule, r)
		}
	}
	if r.URI != "" {
		return validURI(r.URI)
	}
	return nil
}

// validURI refuses what no identity URI can match: matchURI refuses
// identities with a user, a query or a fragment, and an empty path segment
// matches nothing (nor may a SPIFFE ID have one: SPIFFE-ID.md, section 2.2).
func validURI(pattern string) error {
	u, err := url.Parse(pattern)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("%w: uri %q needs a scheme and a host, like spiffe://example.org/ns/prod/sa/api", ErrBadRule, pattern)
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return fmt.Errorf("%w: uri %q: identities carry no user, query or fragment", ErrBadRule, pattern)
	}
	if slices.Contains(segments(u.EscapedPath()), "") {
		return fmt.Errorf("%w: uri %q has an empty path segment (a doubled or final slash)", ErrBadRule, pattern)
	}
	return nil
}

func (r Rule) String() string {
	switch {
	case r.CN != "":
		return "cn=" + r.CN
	case r.OU != "":
		return "ou=" + r.OU
	case r.DNS != "":
		return "dns=" + r.DNS
	}
	return "uri=" + r.URI
}

// Match reports whether c satisfies the rule.
func (r Rule) Match(c *x509.Certificate) bool {
	switch {
	case r.CN != "":
		return matchLabels(r.CN, c.Subject.CommonName)
	case r.OU != "":
		for _, ou := range c.Subject.OrganizationalUnit {
			if ou == r.OU {
				return true
			}
		}
	case r.DNS != "":
		for _, name := range c.DNSNames {
			if matchLabels(r.DNS, name) {
				return true
			}
		}
	case r.URI != "":
		for _, u := range c.URIs {
			if matchURI(r.URI, u) {
				return true
			}
		}
	}
	return false
}

func matchLabels(pattern, name string) bool {
	p, n := labels(pattern), labels(name)
	if len(p) != len(n) {
		return false
	}
	for i := range p {
		if n[i] == "" || (p[i] != "*" && !equalFoldASCII(p[i], n[i])) {
			return false
		}
	}
	return true
}

// labels splits a name into its labels; a final dot (a fully qualified DNS
// name) adds none.
func labels(name string) []string {
	return strings.Split(strings.TrimSuffix(name, "."), ".")
}

func matchURI(pattern string, u *url.URL) bool {
	pu, err := url.Parse(pattern)
	if err != nil || !equalFoldASCII(pu.Scheme, u.Scheme) || !equalFoldASCII(pu.Host, u.Host) {
		return false
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.User != nil {
		return false // identities carry none of these; refuse look-alikes
	}
	// Escaped paths: "a%2Fb" is one segment, not "a" and "b" (RFC 3986
	// section 2.2), or an identity could spell its way into another's rule.
	ps := segments(pu.EscapedPath())
	us := segments(u.EscapedPath())
	for i, seg := range ps {
		if seg == "**" && i == len(ps)-1 {
			return true
		}
		if i >= len(us) || (seg != "*" && seg != us[i]) || us[i] == "" {
			return false
		}
	}
	return len(ps) == len(us)
}

func segments(path string) []string {
	path = strings.TrimPrefix(path, "/")
	if path == "" {
		return nil
	}
	return strings.Split(path, "/")
}

// equalFoldASCII reports whether a and b are equal ignoring ASCII case;
// other bytes must be equal (see Rule on why not Unicode folding).
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lowerASCII(a[i]) != lowerASCII(b[i]) {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// ACL is the identity policy of one route: deny unless AllowAll or a rule
// matches. Rules are OR'd.
type ACL struct {
	AllowAll bool
	Rules    []Rule
}

// Validate rejects an ACL with a malformed rule. An empty ACL is valid: it
// denies everyone.
func (a ACL) Validate() error {
	for i, r := range a.Rules {
		if err := r.Validate(); err != nil {
			return fmt.Errorf("rule %d: %w", i+1, err)
		}
	}
	return nil
}

// Allows reports whether c may use the route, and the rule that let it in.
func (a ACL) Allows(c *x509.Certificate) (bool, string) {
	if a.AllowAll {
		return true, "allow_all"
	}
	for _, r := range a.Rules {
		if r.Match(c) {
			return true, r.String()
		}
	}
	return false, ""
}
