package tunnel

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"testing"
)

func cert(cn string, ous, dns []string, uris ...string) *x509.Certificate {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ous}, DNSNames: dns}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			panic(err)
		}
		c.URIs = append(c.URIs, u)
	}
	return c
}

func TestRuleMatch(t *testing.T) {
	api := cert("api", []string{"payments"}, []string{"api.prod.example.com"}, "spiffe://example.org/ns/prod/sa/api")
	tests := []struct {
		rule Rule
		c    *x509.Certificate
		want bool
	}{
		{Rule{CN: "api"}, api, true},
		{Rule{CN: "API"}, api, true},
		{Rule{CN: "ap"}, api, false},
		{Rule{CN: "*"}, api, true},
		{Rule{CN: "*"}, cert("", nil, nil), false},
		{Rule{OU: "payments"}, api, true},
		{Rule{OU: "Payments"}, api, false},
		{Rule{DNS: "api.prod.example.com"}, api, true},
		{Rule{DNS: "*.prod.example.com"}, api, true},
		{Rule{DNS: "*.example.com"}, api, false}, // * is exactly one label
		{Rule{DNS: "api.*.example.com"}, api, true},
		{Rule{DNS: "*.*.example.com"}, api, true},
		{Rule{URI: "spiffe://example.org/ns/prod/sa/api"}, api, true},
		{Rule{URI: "spiffe://example.org/ns/*/sa/api"}, api, true},
		{Rule{URI: "spiffe://example.org/ns/*/api"}, api, false},
		{Rule{URI: "spiffe://example.org/**"}, api, true},
		{Rule{URI: "spiffe://example.org/ns/prod/**"}, api, true},
		{Rule{URI: "spiffe://example.org/ns/dev/**"}, api, false},
		{Rule{URI: "spiffe://other.org/**"}, api, false},
		{Rule{URI: "spiffe://example.org/ns/prod/sa"}, api, false},
		{Rule{URI: "spiffe://example.org/ns/prod/sa/api/extra"}, api, false},
		{Rule{URI: "spiffe://example.org/ns/prod/sa/*"}, cert("x", nil, nil, "spiffe://example.org/ns/prod/sa/"), false},
		{Rule{URI: "spiffe://example.org/**"}, cert("x", nil, nil, "spiffe://example.org.evil.com/x"), false},
		{Rule{URI: "spiffe://example.org/ns/prod/sa/api"}, cert("x", nil, nil, "spiffe://example.org/ns/prod/sa/api?x=1"), false},
		// Found by FuzzRule (see Rule on case folding and escaped paths).
		{Rule{CN: "\ufffd"}, cert("\xff", nil, nil), false},
		{Rule{CN: "\xfe"}, cert("\xff", nil, nil), false},
		{Rule{CN: "kafka"}, cert("\u212aafka", nil, nil), false}, // Kelvin sign
		{Rule{CN: "ACME Inc."}, cert("ACME Inc.", nil, nil), true},
		{Rule{DNS: "api.prod.example.com."}, api, true},
		{Rule{URI: "spiffe://example.org/a/b"}, cert("x", nil, nil, "spiffe://example.org/a%2Fb"), false},
		{Rule{URI: "spiffe://example.org/*/b"}, cert("x", nil, nil, "spiffe://example.org/a%2Fb"), false},
		{Rule{URI: "spiffe://example.org/a%2Fb"}, cert("x", nil, nil, "spiffe://example.org/a%2Fb"), true},
		{Rule{URI: "spiffe://example.org/a"}, cert("x", nil, nil, "spiffe://example.org/a?"), false},
	}
	for _, tt := range tests {
		if got := tt.rule.Match(tt.c); got != tt.want {
			t.Errorf("%v.Match(%s) = %v, want %v", tt.rule, tt.c.Subject.CommonName, got, tt.want)
		}
	}
}

func TestRuleValidate(t *testing.T) {
	bad := []Rule{{}, {CN: "a", DNS: "b"}, {URI: "not a uri"}, {URI: "spiffe:///nohost"},
		// Found by FuzzRule: each validated but could match nothing,
		// not even a certificate carrying the rule's own text.
		{DNS: "."}, {CN: "a..b"}, {DNS: ".example.com"},
		{URI: "spiffe://example.org/a?x=1"}, {URI: "spiffe://example.org/a?"}, {URI: "spiffe://example.org/a#f"},
		{URI: "spiffe://u@example.org/a"}, {URI: "spiffe://example.org/a/"}, {URI: "spiffe://example.org//a"},
	}
	for _, r := range bad {
		if err := r.Validate(); !errors.Is(err, ErrBadRule) {
			t.Errorf("Validate(%+v) = %v, want ErrBadRule", r, err)
		}
	}
	for _, r := range []Rule{{URI: "spiffe://example.org/**"}, {URI: "spiffe://example.org"}, {CN: "ACME Inc."}, {DNS: "example.com."}} {
		if err := r.Validate(); err != nil {
			t.Errorf("valid rule refused: %v", err)
		}
	}
}

func TestACL(t *testing.T) {
	c := cert("api", nil, nil)
	if ok, _ := (ACL{}).Allows(c); ok {
		t.Error("empty ACL must deny")
	}
	if ok, by := (ACL{AllowAll: true}).Allows(c); !ok || by != "allow_all" {
		t.Error("allow_all must allow")
	}
	acl := ACL{Rules: []Rule{{CN: "web"}, {CN: "api"}}}
	if ok, by := acl.Allows(c); !ok || by != "cn=api" {
		t.Errorf("rules are OR'd: got %v %q", ok, by)
	}
}
