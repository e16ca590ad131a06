package certs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mtunnel/mtunnel/certs"
)

// needOpenSSL returns the path of the openssl command, or skips the test
// when there is none, unless MTUNNEL_REQUIRE_EXTERNAL=1 asks for every
// external tool to be present.
func needOpenSSL(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("MTUNNEL_REQUIRE_EXTERNAL") == "1" {
			t.Fatalf("openssl is not on PATH and MTUNNEL_REQUIRE_EXTERNAL=1; install the Debian package openssl: %v", err)
		}
		t.Skipf("openssl is not on PATH; install the Debian package openssl: %v", err)
	}
	return bin
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago, for
// an external program that cannot report the port it bound. Another
// process may take it in between; callers retry with a new port.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// opensslResponder runs "openssl ocsp" as an OCSP responder for the CA in
// dir (ca.crt, ca.key) answering from dir/index.txt.
type opensslResponder struct {
	bin, dir string
	probe    []byte // an OCSP request for the readiness probe
	port     int
	starts   int
	cmd      *exec.Cmd
	exited   chan struct{}
}

// start runs the responder and waits until it answers requests.
//
// OpenSSL 3.0's -port takes a number only and binds every interface;
// -ignore_err keeps it running after a bad request, and -nmin 5 sets nextUpdate.
func (r *opensslResponder) start() error {
	r.starts++
	logFile := filepath.Join(r.dir, fmt.Sprintf("ocsp-%d.log", r.starts))
	log, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer log.Close() // the child has its own descriptor
	cmd := exec.Command(r.bin, "ocsp", "-index", "index.txt", "-port", strconv.Itoa(r.port),
		"-CA", "ca.crt", "-rsigner", "ca.crt", "-rkey", "ca.key", "-nmin", "5", "-ignore_err")
	cmd.Dir, cmd.Stdout, cmd.Stderr = r.dir, log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	r.cmd, r.exited = cmd, exited

	url := fmt.Sprintf("http://127.0.0.1:%d", r.port)
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		select {
		case <-exited:
			out, _ := os.ReadFile(logFile)
			return fmt.Errorf("openssl ocsp on port %d exited: %s", r.port, out)
		case <-deadline.C:
			r.stop()
			return fmt.Errorf("openssl ocsp on port %d did not accept connections within 10s", r.port)
		case <-ticker.C:
			if r.answers(url) {
				return nil
			}
		}
	}
}

// answers reports whether an OCSP request to url gets an OCSP response.
// The probe must be a real request: OpenSSL 3.0.19's responder spins at
// full CPU, answering nothing more, after a client connects and closes
// without sending one, so a bare TCP connect cannot tell readiness.
func (r *opensslResponder) answers(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(r.probe))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "application/ocsp-response"
}

func (r *opensslResponder) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// TestOCSPWithOpenSSLResponder runs a stock "openssl ocsp" responder on an
// index written by this package and checks good, revoked and unknown
// answers with OCSPClient.
func TestOCSPWithOpenSSLResponder(t *testing.T) {
	bin := needOpenSSL(t)
	dir := t.TempDir()
	ca, err := certs.NewCA("openssl ocsp test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	index := filepath.Join(dir, "index.txt")

	// The leaves name the responder's URL, so a port lost to another
	// process means new leaves.
	var good, revoked, unknown *certs.Leaf
	probe, err := ocsp.CreateRequest(ca.Cert, ca.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp := &opensslResponder{bin: bin, dir: dir, probe: probe}
	t.Cleanup(resp.stop)
	for attempt := 1; ; attempt++ {
		resp.port = freePort(t)
		url := fmt.Sprintf("http://127.0.0.1:%d", resp.port)
		good, revoked, unknown = issueWithOCSP(t, ca, url, "good"), issueWithOCSP(t, ca, url, "revoked"), issueWithOCSP(t, ca, url, "unknown")
		if err := certs.WriteIndex(index, nil); err != nil {
			t.Fatal(err)
		}
		for _, l := range []*certs.Leaf{good, revoked} { // unknown stays out of the index
			if err := certs.RecordIssued(index, l.Cert); err != nil {
				t.Fatal(err)
			}
		}
		err := resp.start()
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
		t.Logf("retrying on another port: %v", err)
	}

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
	// openssl ocsp 3.0 reloads a changed index only when it is about to
	// wait for the next connection, so the first request after a change is
	// answered from the old one; a restart makes the test deterministic.
	resp.stop()
	if err := resp.start(); err != nil {
		t.Fatal(err)
	}

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
	resp.stop()
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
