package tunnel

import (
	"cmp"
	"crypto/x509"
	"slices"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/prometheus/client_golang/prometheus"
)

// TLSState reads an agent's TLS material as it is in force now: its own
// certificate chain, the trusted CAs, the CRLs and its own OCSP staple.
// The status report and the metrics read it on every request, so a hot
// reload shows at once. It is also a prometheus.Collector.
type TLSState struct {
	Credentials func() *Credentials
	CRLs        func() *certs.CRLSet // nil: no CRLs
	Now         func() time.Time     // nil: time.Now
}

// Roles of the certificates in a report.
const (
	RoleOwn          = "own"          // the agent's own certificate
	RoleChain        = "chain"        // a CA certificate sent along with it
	RoleCA           = "ca"           // trusted to sign peers (the CA bundle)
	RoleIntermediate = "intermediate" // may complete peers' chains (--intermediates)
)

// CertInfo describes one loaded certificate.
type CertInfo struct {
	Role     string
	Subject  string // certs.Identity
	Serial   string
	NotAfter time.Time
}

// CRLInfo describes one CRL in force.
type CRLInfo struct {
	Issuer     string
	File       string
	ThisUpdate time.Time
	NextUpdate time.Time // zero if the CRL gives none
	Revoked    int
}

// StapleInfo describes the OCSP response the agent staples.
type StapleInfo struct {
	Status     string // good, revoked, unknown
	ThisUpdate time.Time
	NextUpdate time.Time
}

func (t *TLSState) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Certificates lists the own chain, then the CA bundle, then the extra
// intermediates, each certificate once per role.
func (t *TLSState) Certificates() []CertInfo {
	creds := t.Credentials()
	if creds == nil {
		return nil
	}
	var out []CertInfo
	add := func(role string, c *x509.Certificate) {
		info := CertInfo{Role: role, Subject: certs.Identity(c), Serial: certs.SerialString(c.SerialNumber), NotAfter: c.NotAfter}
		same := func(o CertInfo) bool { return o.Role == role && o.Serial == info.Serial && o.Subject == info.Subject }
		if !slices.ContainsFunc(out, same) { // a bundle may hold a certificate twice
			out = append(out, info)
		}
	}
	if leaf := creds.Certificate.Leaf; leaf != nil {
		add(RoleOwn, leaf)
	}
	for _, der := range creds.Certificate.Certificate[min(1, len(creds.Certificate.Certificate)):] {
		if c, err := x509.ParseCertificate(der); err == nil { // parsed once already, at load
			add(RoleChain, c)
		}
	}
	for _, c := range creds.CAs {
		add(RoleCA, c)
	}
	for _, c := range creds.Intermediates {
		add(RoleIntermediate, c)
	}
	return out
}

// CRLInfos lists the CRLs in force, by issuer.
func (t *TLSState) CRLInfos() []CRLInfo {
	if t.CRLs == nil {
		return nil
	}
	var out []CRLInfo
	for _, c := range t.CRLs().All() {
		out = append(out, CRLInfo{
			Issuer: certs.Identity(c.Issuer), File: c.File,
			ThisUpdate: c.List.ThisUpdate, NextUpdate: c.List.NextUpdate,
			Revoked: len(c.List.RevokedCertificateEntries),
		})
	}
	slices.SortFunc(out, func(a, b CRLInfo) int { return cmp.Or(cmp.Compare(a.Issuer, b.Issuer), cmp.Compare(a.File, b.File)) })
	return out
}

// Staple describes the OCSP response stapled to the own certificate, or
// returns nil when there is none.
func (t *TLSState) Staple() *StapleInfo {
	creds := t.Credentials()
	if creds == nil || len(creds.Certificate.OCSPStaple) == 0 {
		return nil
	}
	info, err := certs.DescribeOCSP(creds.Certificate.OCSPStaple)
	if err != nil {
		return nil // the stapler only installs responses it verified
	}
	return &StapleInfo{Status: info.Status.String(), ThisUpdate: info.ThisUpdate, NextUpdate: info.NextUpdate}
}

var (
	certExpiryDesc = prometheus.NewDesc("mtunnel_certificate_expiry_timestamp_seconds",
		"When a loaded certificate expires (Unix time), by role (own, chain, ca, intermediate), subject and serial.",
		[]string{"role", "subject", "serial"}, nil)
	crlAgeDesc = prometheus.NewDesc("mtunnel_crl_age_seconds",
		"Time since the thisUpdate of a CRL in force.", []string{"issuer", "file"}, nil)
	crlNextDesc = prometheus.NewDesc("mtunnel_crl_next_update_timestamp_seconds",
		"The nextUpdate of a CRL in force (Unix time).", []string{"issuer", "file"}, nil)
	stapleAgeDesc = prometheus.NewDesc("mtunnel_ocsp_staple_age_seconds",
		"Time since the thisUpdate of the OCSP response stapled to the own certificate.", nil, nil)
)

// Describe implements prometheus.Collector.
func (t *TLSState) Describe(ch chan<- *prometheus.Desc) {
	ch <- certExpiryDesc
	ch <- crlAgeDesc
	ch <- crlNextDesc
	ch <- stapleAgeDesc
}

// Collect implements prometheus.Collector.
func (t *TLSState) Collect(ch chan<- prometheus.Metric) {
	now := t.now()
	for _, c := range t.Certificates() {
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, unixSeconds(c.NotAfter), c.Role, c.Subject, c.Serial)
	}
	for _, c := range t.CRLInfos() {
		ch <- prometheus.MustNewConstMetric(crlAgeDesc, prometheus.GaugeValue, now.Sub(c.ThisUpdate).Seconds(), c.Issuer, c.File)
		if !c.NextUpdate.IsZero() {
			ch <- prometheus.MustNewConstMetric(crlNextDesc, prometheus.GaugeValue, unixSeconds(c.NextUpdate), c.Issuer, c.File)
		}
	}
	if s := t.Staple(); s != nil {
		ch <- prometheus.MustNewConstMetric(stapleAgeDesc, prometheus.GaugeValue, now.Sub(s.ThisUpdate).Seconds())
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1e3 }
