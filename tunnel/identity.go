package tunnel

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Rule matches one attribute of a verified client certificate. Exactly one
// field is set.
//
//   - CN, DNS: the subject common name / any DNS SAN, compared per
//     dot-separated label, case-insensitively; a label "*" matches exactly
//     one label ("*.db.example" matches "a.db.example", not "a.b.db.example").
//   - OU: any organizational unit of the subject, exactly.
//   - URI: any URI SAN. Scheme and host compare case-insensitively; path
//     segments exactly, "*" matching exactly one segment and a final "**"
//     any number (so "spiffe://example.org/**" is the whole trust domain).
type Rule struct {
	CN  string `yaml:"cn,omitempty"`
	OU  string `yaml:"ou,omitempty"`
	DNS string `yaml:"dns,omitempty"`
	URI string `yaml:"uri,omitempty"`
}

// ErrBadRule reports a rule that cannot match anything sensible.
var ErrBadRule = errors.New("invalid identity rule")

// Validate checks that exactly one field is set and that it is well formed.
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
	if r.URI != "" {
		u, err := url.Parse(r.URI)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return fmt.Errorf("%w: uri %q needs a scheme and a host, like spiffe://example.org/ns/prod/sa/api", ErrBadRule, r.URI)
		}
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
	if name == "" {
		return false
	}
	p := strings.Split(strings.ToLower(pattern), ".")
	n := strings.Split(strings.ToLower(strings.TrimSuffix(name, ".")), ".")
	if len(p) != len(n) {
		return false
	}
	for i := range p {
		if n[i] == "" || (p[i] != "*" && p[i] != n[i]) {
			return false
		}
	}
	return true
}

func matchURI(pattern string, u *url.URL) bool {
	pu, err := url.Parse(pattern)
	if err != nil || !strings.EqualFold(pu.Scheme, u.Scheme) || !strings.EqualFold(pu.Host, u.Host) {
		return false
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return false // identities carry none of these; refuse look-alikes
	}
	ps := segments(pu.Path)
	us := segments(u.Path)
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
