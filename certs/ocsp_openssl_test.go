package certs_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

// TestOCSPWithOpenSSLResponder runs a stock "openssl ocsp" responder on an
// index written by this package and checks good, revoked and unknown
// answers with OCSPClient.
func TestOCSPWithOpenSSLResponder(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("openssl ocsp test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "index.txt")

	// The responder comes first: the leaves name its URL.
	resp := certstest.StartOpenSSLResponder(t, dir)
	url := resp.URL()
	good, revoked, unknown := issueWithOCSP(t, ca, url, "good"), issueWithOCSP(t, ca, url, "revoked"), issueWithOCSP(t, ca, url, "unknown")
	for _, l := range []*certs.Leaf{good, revoked} { // unknown stays out of the index
		if err := certs.RecordIssued(index, l.Cert); err != nil {
			t.Fatal(err)
		}
	}
	resp.Restart(t)

	ctx := context.Background()
	client := &certs.OCSPClient{Timeout: 10 * time.Second, Skew: time.Minute}
	check := func(l *certs.Leaf, fetch bool) *certs.OCSPResult {
		t.Helper()
		f := client.Check
		if fetch {
			f = client.Fetch
		}
		res, err := f(ctx, l.Cert, ca.Cert)
		if err != nil {
			t.Fatalf("%s: %v", l.Cert.Subject.CommonName, err)
		}
		return res
	}

	res := check(good, false)
	if res.Status != certs.OCSPGood {
		t.Errorf("good certificate: status %v", res.Status)
	}
	// -nmin 5: nextUpdate five minutes after thisUpdate (OpenSSL reads
	// the clock twice, so a second may tick in between).
	if d := res.NextUpdate.Sub(res.ThisUpdate); d < 5*time.Minute || d > 5*time.Minute+2*time.Second {
		t.Errorf("nextUpdate - thisUpdate = %v, want 5m", d)
	}
	if len(res.Raw) == 0 {
		t.Error("result has no raw response")
	}
	if res := check(revoked, false); res.Status != certs.OCSPGood {
		t.Errorf("certificate not yet revoked: status %v", res.Status)
	}
	if res := check(unknown, false); res.Status != certs.OCSPUnknown {
		t.Errorf("certificate missing from the index: status %v, want unknown", res.Status)
	}

	revokedAt := time.Now().Add(-time.Minute)
	if err := certs.RecordRevoked(index, revoked.Cert, 1, revokedAt); err != nil {
		t.Fatal(err)
	}
	resp.Restart(t) // the responder would answer the next request from the old index

	// Check answers from the cache until nextUpdate; Fetch asks again and
	// refreshes the cache.
	if res := check(revoked, false); res.Status != certs.OCSPGood {
		t.Errorf("cached answer: status %v, want the cached good", res.Status)
	}
	res = check(revoked, true)
	if res.Status != certs.OCSPRevoked || res.Reason != 1 || !res.RevokedAt.Equal(revokedAt.UTC().Truncate(time.Second)) {
		t.Errorf("revoked certificate: %v reason %d at %v; want revoked, keyCompromise (1) at %v",
			res.Status, res.Reason, res.RevokedAt, revokedAt.UTC().Truncate(time.Second))
	}
	if res := check(revoked, false); res.Status != certs.OCSPRevoked {
		t.Errorf("after Fetch the cache says %v, want revoked", res.Status)
	}
	if res := check(good, true); res.Status != certs.OCSPGood {
		t.Errorf("good certificate after the revocation of another: %v", res.Status)
	}

	// A responder that is gone is unavailable, not invalid.
	resp.Stop()
	if _, err := client.Fetch(ctx, good.Cert, ca.Cert); !errors.Is(err, certs.ErrOCSPUnavailable) {
		t.Errorf("responder stopped: %v, want ErrOCSPUnavailable", err)
	}
}

func issueWithOCSP(t *testing.T, ca *certs.CA, url, name string) *certs.Leaf {
	t.Helper()
	l, err := ca.Issue(certs.Request{Name: name, Client: true, OCSPServer: []string{url}})
	if err != nil {
		t.Fatal(err)
	}
	return l
}
