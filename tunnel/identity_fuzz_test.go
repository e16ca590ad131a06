package tunnel

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// FuzzRule holds identity rules to these properties, whatever the rule and
// the certificate:
//
//   - Validate, String, Match and ACL.Allows never panic;
//   - a rule Validate refuses makes every ACL holding it refuse to
//     validate, so no route can use it (server.Config.Validate runs
//     ACL.Validate);
//   - a valid rule matches a certificate that carries the rule's own text:
//     no rule that validates is unable to match anything;
//   - a valid rule's Match agrees with refMatch, a matcher written from the
//     Rule documentation alone;
//   - an ACL of that one rule allows what the rule matches, naming it.
//
// field picks the rule's attribute: 0 cn, 1 ou, 2 dns, 3 uri; 4 to 7 set
// two attributes, which Validate must refuse. name is the certificate's
// common name, organizational unit, DNS SAN and (when it parses) URI SAN.
// Seeds: f.Add below and testdata/fuzz/FuzzRule/.
func FuzzRule(f *testing.F) {
	for _, s := range []struct {
		field         uint8
		pattern, name string
	}{
		{0, "app", "app"},
		{0, "App", "aPP"},
		{0, "*", "app"},
		{0, "*", ""},
		{0, "app.", "app"},
		{0, "a..b", "a..b"},
		{1, "payments", "payments"},
		{1, "Payments", "payments"},
		{2, "*.db.example", "a.db.example"},
		{2, "*.db.example", "a.b.db.example"},
		{2, "api.*.example.com", "api.prod.example.com."},
		{2, "*.cache-clients.example.org", "redis-1.cache-clients.example.org"},
		{2, "example.com.", "example.com."},
		{0, "\u212a", "k"},    // Kelvin sign
		{0, "\xff", "\xfe"},   // invalid UTF-8
		{0, "\ufffd", "\xff"}, // the replacement character
		{3, "spiffe://example.org/ns/prod/sa/api", "spiffe://example.org/ns/prod/sa/api"},
		{3, "spiffe://example.org/ns/prod/sa/*", "spiffe://example.org/ns/prod/sa/api"},
		{3, "spiffe://example.org/ns/prod/sa/*", "spiffe://example.org/ns/prod/sa/"},
		{3, "spiffe://example.org/**", "spiffe://example.org"},
		{3, "spiffe://example.org/**", "spiffe://example.org.evil.com/x"},
		{3, "spiffe://example.org/**", "spiffe://user@example.org/x"},
		{3, "spiffe://example.org/ns/**/api", "spiffe://example.org/ns/x/api"},
		{3, "SPIFFE://Example.ORG/a", "spiffe://example.org/a"},
		{3, "spiffe://example.org/a/b", "spiffe://example.org/a%2Fb"},
		{3, "spiffe://example.org/a?x=1", "spiffe://example.org/a?x=1"},
		{3, "spiffe://example.org/a/", "spiffe://example.org/a/"},
		{3, "spiffe:///nohost", "spiffe:///nohost"},
		{3, "not a uri", "not a uri"},
		{4, "app", "app"},
		{7, "spiffe://example.org/a", "spiffe://example.org/a"},
	} {
		f.Add(s.field, s.pattern, s.name)
	}
	f.Fuzz(func(t *testing.T, field uint8, pattern, name string) {
		r := fuzzRule(field, pattern)
		c := certNamed(name)
		got := r.Match(c)
		_ = r.String()
		if err := r.Validate(); err != nil {
			if !errors.Is(err, ErrBadRule) {
				t.Fatalf("%#v.Validate() = %v, want ErrBadRule", r, err)
			}
			ok := Rule{CN: "app"}
			for _, acl := range []ACL{{Rules: []Rule{r}}, {Rules: []Rule{ok, r}}, {AllowAll: true, Rules: []Rule{r, ok}}} {
				if err := acl.Validate(); !errors.Is(err, ErrBadRule) {
					t.Fatalf("ACL %+v with a bad rule: Validate() = %v, want ErrBadRule", acl, err)
				}
			}
			return
		}
		if !r.Match(certNamed(pattern)) {
			t.Fatalf("valid rule %v does not match a certificate named %q", r, pattern)
		}
		if want := refMatch(r, name); got != want {
			t.Fatalf("%v.Match(%q) = %v, want %v", r, name, got, want)
		}
		if ok, by := (ACL{Rules: []Rule{r}}).Allows(c); ok != got || (ok && by != r.String()) {
			t.Fatalf("ACL of %v allows %q: %v by %q; the rule matches: %v", r, name, ok, by, got)
		}
	})
}

func fuzzRule(field uint8, pattern string) Rule {
	var r Rule
	fields := []*string{&r.CN, &r.OU, &r.DNS, &r.URI}
	*fields[field%4] = pattern
	if field%8 >= 4 {
		*fields[(field+1)%4] = pattern
	}
	return r
}

// certNamed returns a certificate that carries name in every attribute a
// rule can look at. x509 would refuse to parse some of these certificates;
// Match must cope with them all the same.
func certNamed(name string) *x509.Certificate {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: name, OrganizationalUnit: []string{name}}, DNSNames: []string{name}}
	if u, err := url.Parse(name); err == nil {
		c.URIs = []*url.URL{u}
	}
	return c
}

// refMatch is Rule.Match written from the Rule documentation alone, for a
// rule that validates and an identity name.
func refMatch(r Rule, name string) bool {
	switch {
	case r.CN != "":
		return refLabels(r.CN, name)
	case r.OU != "":
		return r.OU == name
	case r.DNS != "":
		return refLabels(r.DNS, name)
	}
	return refURI(r.URI, name)
}

// refLabels: a name of non-empty labels matches a pattern when the
// pattern, each "*" label replaced by the name's label in its place, is
// the name up to ASCII case, final dots aside.
func refLabels(pattern, name string) bool {
	pattern, name = strings.TrimSuffix(pattern, "."), strings.TrimSuffix(name, ".")
	nl, pl := strings.Split(name, "."), strings.Split(pattern, ".")
	if len(nl) != len(pl) || slices.Contains(nl, "") {
		return false
	}
	for i := range pl {
		if pl[i] == "*" {
			pl[i] = nl[i]
		}
	}
	return asciiLower(strings.Join(pl, ".")) == asciiLower(name)
}

// refURI: an identity URI without user, query or fragment matches when
// scheme and host agree up to ASCII case and the path, as written, is the
// pattern's with each "*" replaced by one non-empty segment and a final
// "**" by any rest.
func refURI(pattern, name string) bool {
	p, err := url.Parse(pattern)
	if err != nil {
		return false
	}
	id, err := url.Parse(name)
	if err != nil || id.User != nil || id.RawQuery != "" || id.ForceQuery || id.Fragment != "" {
		return false
	}
	if asciiLower(p.Scheme) != asciiLower(id.Scheme) || asciiLower(p.Host) != asciiLower(id.Host) {
		return false
	}
	ps, is := pathSegments(p.EscapedPath()), pathSegments(id.EscapedPath())
	if n := len(ps); n > 0 && ps[n-1] == "**" {
		if len(is) < n-1 {
			return false
		}
		ps, is = ps[:n-1], is[:n-1]
	}
	if len(ps) != len(is) {
		return false
	}
	for i := range ps {
		if ps[i] == "*" && is[i] != "" {
			ps[i] = is[i]
		}
	}
	return strings.Join(ps, "/") == strings.Join(is, "/")
}

func pathSegments(path string) []string {
	if path == "" || path == "/" {
		return nil
	}
	return strings.Split(strings.TrimPrefix(path, "/"), "/")
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
