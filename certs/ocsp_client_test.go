package certs_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

// testResponder is an OCSP responder on 127.0.0.1 that answers "good" for
// every request, signed by ca, and counts the requests. Its settings are
// fixed before the server starts, so handlers never race with the test.
type testResponder struct {
	ca       *certstest.CA
	opts     responderOptions
	requests atomic.Int32
	srv      *httptest.Server
}

type responderOptions struct {
	// now is the responder's clock; nil means time.Now. A test that gives
	// the client a fake clock must give the responder the same one, or the
	// answers are stale or from the future by the client's reckoning.
	now func() time.Time
	// before, when set, runs first for each request, with its number (from
	// 1); it may write a reply itself and return false. If it blocks, it
	// must also return when r.Context() is done, which happens when the
	// client goes away or the test ends.
	before func(n int32, w http.ResponseWriter, r *http.Request) bool
}

func newTestResponder(t *testing.T, ca *certstest.CA, opts responderOptions) *testResponder {
	t.Helper()
	tr := &testResponder{ca: ca, opts: opts}
	tr.srv = httptest.NewUnstartedServer(http.HandlerFunc(tr.serve))
	// Request contexts derive from the test's, which is canceled before
	// cleanups run: a handler blocked on r.Context() is released when the
	// test ends even if its client never hangs up, so Close below cannot
	// wait for ever (httptest.Server.Close waits for active requests).
	ctx := t.Context()
	tr.srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	tr.srv.Start()
	t.Cleanup(func() {
		tr.srv.CloseClientConnections() // do not wait for clients to hang up
		tr.srv.Close()
	})
	return tr
}

func (tr *testResponder) serve(w http.ResponseWriter, r *http.Request) {
	n := tr.requests.Add(1)
	// Read the body first: only then does the server watch the connection
	// and cancel r.Context() when the client goes away.
	body, err := io.ReadAll(r.Body)
	if tr.opts.before != nil && !tr.opts.before(n, w, r) {
		return
	}
	if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/ocsp-request" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	req, err := ocsp.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	if tr.opts.now != nil {
		now = tr.opts.now()
	}
	der, err := ocsp.CreateResponse(tr.ca.Cert, tr.ca.Cert, ocsp.Response{
		Status: ocsp.Good, SerialNumber: req.SerialNumber, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
	}, tr.ca.Key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	_, _ = w.Write(der)
}

// fakeClock is a clock that moves only when the test sets it.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(at time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(at)
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Set(at time.Time)        { c.ns.Store(at.UnixNano()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// receive returns the next value from ch, failing the test instead of
// hanging when none comes: a bound on a broken test, not a sleep.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("no %s within 10s", what)
		panic("unreachable")
	}
}

// leafFor issues a client certificate that names url as its OCSP responder.
func leafFor(t *testing.T, ca *certstest.CA, url string) *x509.Certificate {
	t.Helper()
	return ca.Issue(t, certs.Request{Name: "app", Client: true, OCSPServer: []string{url}}).Leaf
}

func TestOCSPClientCache(t *testing.T) {
	ca := certstest.New(t)
	// Half a second past a whole second: OCSP times have one-second
	// precision (RFC 6960 uses GeneralizedTime), so the responder's
	// nextUpdate of now+1h is encoded half a second early, and the cache
	// must go by the encoded time.
	start := time.Unix(time.Now().Unix(), 500*int64(time.Millisecond))
	nextUpdate := start.Truncate(time.Second).Add(time.Hour)
	clock := newFakeClock(start)
	tr := newTestResponder(t, ca, responderOptions{now: clock.Now})
	leaf := leafFor(t, ca, tr.srv.URL)
	client := &certs.OCSPClient{Now: clock.Now}
	ctx := context.Background()

	check := func(f func(context.Context, *x509.Certificate, *x509.Certificate) (*certs.OCSPResult, error), wantRequests int32) *certs.OCSPResult {
		t.Helper()
		res, err := f(ctx, leaf, ca.Cert)
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != certs.OCSPGood {
			t.Fatalf("status %v", res.Status)
		}
		if n := tr.requests.Load(); n != wantRequests {
			t.Fatalf("responder saw %d requests, want %d", n, wantRequests)
		}
		// Whatever Check hands out, from the cache or not, must be a
		// response that a peer checking it now would accept.
		if _, err := certs.VerifyOCSPResponse(res.Raw, leaf, ca.Cert, clock.Now(), 0); err != nil {
			t.Fatalf("result does not verify at %v: %v", clock.Now(), err)
		}
		return res
	}
	res := check(client.Check, 1)
	if !res.NextUpdate.Equal(nextUpdate) {
		t.Fatalf("nextUpdate %v, want %v", res.NextUpdate, nextUpdate)
	}
	res.Raw[0] ^= 0xff // the caller's copy; the cache must not change
	check(client.Check, 1)
	if res := check(client.Check, 1); res.Raw[0] == 0x30^0xff {
		t.Error("modifying a result changed the cached response")
	}
	check(client.Fetch, 2) // bypasses the cache
	check(client.Check, 2)

	// The cached answer serves until its nextUpdate, as encoded, and not
	// a moment longer.
	clock.Set(nextUpdate.Add(-time.Nanosecond))
	check(client.Check, 2)
	clock.Set(nextUpdate)
	if res := check(client.Check, 3); !res.NextUpdate.Equal(nextUpdate.Add(time.Hour)) {
		t.Errorf("refreshed nextUpdate %v, want %v", res.NextUpdate, nextUpdate.Add(time.Hour))
	}

	// A disabled cache asks every time.
	uncached := &certs.OCSPClient{CacheSize: -1, Now: clock.Now}
	check(uncached.Check, 4)
	check(uncached.Check, 5)
}

// A full cache makes room by dropping expired responses first.
func TestOCSPClientCacheBound(t *testing.T) {
	ca := certstest.New(t)
	clock := newFakeClock(time.Unix(time.Now().Unix(), 0))
	tr := newTestResponder(t, ca, responderOptions{now: clock.Now}) // answers valid for an hour
	client := &certs.OCSPClient{CacheSize: 2, Now: clock.Now}
	ctx := context.Background()
	a, b, c := leafFor(t, ca, tr.srv.URL), leafFor(t, ca, tr.srv.URL), leafFor(t, ca, tr.srv.URL)
	check := func(l *x509.Certificate, wantRequests int32) {
		t.Helper()
		if _, err := client.Check(ctx, l, ca.Cert); err != nil {
			t.Fatal(err)
		}
		if n := tr.requests.Load(); n != wantRequests {
			t.Fatalf("responder saw %d requests, want %d", n, wantRequests)
		}
	}
	check(a, 1)
	clock.Advance(30 * time.Minute)
	check(b, 2)
	clock.Advance(45 * time.Minute) // a has expired, b has not
	check(c, 3)
	if n := certs.OCSPCacheLen(client); n != 2 {
		t.Errorf("cache holds %d responses, want 2", n)
	}
	check(b, 3) // still cached: a made room for c
	check(c, 3)

	// Full of fresh responses, the cache drops one to stay at its bound.
	check(a, 4)
	if n := certs.OCSPCacheLen(client); n != 2 {
		t.Errorf("cache holds %d responses, want 2", n)
	}
	check(a, 4)
}

func TestOCSPClientNoResponder(t *testing.T) {
	ca := certstest.New(t)
	leaf := ca.Client(t, "app").Leaf
	_, err := (&certs.OCSPClient{}).Check(context.Background(), leaf, ca.Cert)
	if !errors.Is(err, certs.ErrOCSPUnavailable) {
		t.Fatalf("err = %v, want ErrOCSPUnavailable", err)
	}
}

func TestOCSPClientResponderDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	if err := ln.Close(); err != nil { // nothing listens there now
		t.Fatal(err)
	}
	ca := certstest.New(t)
	client := &certs.OCSPClient{Timeout: 30 * time.Second}
	start := time.Now()
	_, err = client.Check(context.Background(), leafFor(t, ca, url), ca.Cert)
	if !errors.Is(err, certs.ErrOCSPUnavailable) {
		t.Fatalf("err = %v, want ErrOCSPUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a refused connection took %v to report", d)
	}
}

func TestOCSPClientTimeout(t *testing.T) {
	ca := certstest.New(t)
	tr := newTestResponder(t, ca, responderOptions{
		before: func(_ int32, _ http.ResponseWriter, r *http.Request) bool {
			<-r.Context().Done() // never answer; return once the client gives up
			return false
		},
	})
	leaf := leafFor(t, ca, tr.srv.URL)
	for _, client := range []*certs.OCSPClient{
		{Timeout: 100 * time.Millisecond},
		{Timeout: 100 * time.Millisecond, HTTP: &http.Client{}}, // a client without a timeout of its own
	} {
		start := time.Now()
		_, err := client.Check(context.Background(), leaf, ca.Cert)
		if !errors.Is(err, certs.ErrOCSPUnavailable) {
			t.Fatalf("err = %v, want ErrOCSPUnavailable", err)
		}
		var netErr net.Error
		if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &netErr) && netErr.Timeout()) {
			t.Errorf("err = %v, want a timeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("a 100ms timeout took %v", d)
		}
	}
}

func TestOCSPClientBadAnswers(t *testing.T) {
	ca := certstest.New(t)
	reply := func(status int, contentType string, body []byte) func(int32, http.ResponseWriter, *http.Request) bool {
		return func(_ int32, w http.ResponseWriter, _ *http.Request) bool {
			w.Header().Set("Content-Type", contentType)
			w.WriteHeader(status)
			_, _ = w.Write(body)
			return false
		}
	}
	const ocspType = "application/ocsp-response"
	tests := []struct {
		name  string
		reply func(int32, http.ResponseWriter, *http.Request) bool
		want  error
	}{
		{"HTTP 500", reply(http.StatusInternalServerError, "text/plain", []byte("oops")), certs.ErrOCSPUnavailable},
		{"HTML page", reply(http.StatusOK, "text/html", []byte("<html>login</html>")), certs.ErrOCSPUnavailable},
		{"over 1 MiB", reply(http.StatusOK, ocspType, make([]byte, 1<<20+1)), certs.ErrOCSPUnavailable},
		{"tryLater", reply(http.StatusOK, ocspType, ocsp.TryLaterErrorResponse), certs.ErrOCSPUnavailable},
		{"unauthorized", reply(http.StatusOK, ocspType, ocsp.UnauthorizedErrorResponse), certs.ErrOCSPInvalid},
		{"garbage", reply(http.StatusOK, ocspType, []byte("garbage")), certs.ErrOCSPInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTestResponder(t, ca, responderOptions{before: tt.reply})
			_, err := (&certs.OCSPClient{}).Check(context.Background(), leafFor(t, ca, tr.srv.URL), ca.Cert)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// waitWaiters waits until n Check calls wait for a request in flight.
func waitWaiters(t *testing.T, client *certs.OCSPClient, n int) {
	t.Helper()
	ticker := time.NewTicker(time.Millisecond)
	defer ticker.Stop()
	deadline := time.After(10 * time.Second)
	for certs.OCSPWaiters(client) != n {
		select {
		case <-ticker.C:
		case <-deadline:
			t.Fatalf("%d callers waiting, want %d", certs.OCSPWaiters(client), n)
		}
	}
}

func TestOCSPClientCoalesces(t *testing.T) {
	ca := certstest.New(t)
	entered, release := make(chan struct{}), make(chan struct{})
	tr := newTestResponder(t, ca, responderOptions{
		before: func(n int32, _ http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				close(entered)
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return true
		},
	})
	leaf := leafFor(t, ca, tr.srv.URL)
	// Without a cache, only coalescing can save requests.
	client := &certs.OCSPClient{CacheSize: -1}

	const callers = 8
	errs := make(chan error, callers)
	for range callers {
		go func() {
			res, err := client.Check(context.Background(), leaf, ca.Cert)
			if err == nil && res.Status != certs.OCSPGood {
				err = errors.New("status " + res.Status.String())
			}
			errs <- err
		}()
	}
	receive(t, entered, "request at the responder")
	waitWaiters(t, client, callers-1)
	close(release)
	for range callers {
		if err := receive(t, errs, "result of a coalesced check"); err != nil {
			t.Error(err)
		}
	}
	if n := tr.requests.Load(); n != 1 {
		t.Errorf("responder saw %d requests for %d concurrent checks, want 1", n, callers)
	}
}

// When the caller whose request others wait for gives up, they ask again
// rather than fail with its cancellation.
func TestOCSPClientCoalescedCallerCancels(t *testing.T) {
	ca := certstest.New(t)
	entered := make(chan struct{})
	tr := newTestResponder(t, ca, responderOptions{
		before: func(n int32, _ http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				close(entered)
				<-r.Context().Done() // the first caller gives up
				return false
			}
			return true
		},
	})
	leaf := leafFor(t, ca, tr.srv.URL)
	client := &certs.OCSPClient{}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	firstErr := make(chan error, 1)
	go func() {
		_, err := client.Check(ctx, leaf, ca.Cert)
		firstErr <- err
	}()
	receive(t, entered, "request at the responder")
	second := make(chan error, 1)
	go func() {
		res, err := client.Check(context.Background(), leaf, ca.Cert)
		if err == nil && res.Status != certs.OCSPGood {
			err = errors.New("status " + res.Status.String())
		}
		second <- err
	}()
	waitWaiters(t, client, 1)
	cancel()
	if err := receive(t, firstErr, "result of the canceled check"); !errors.Is(err, certs.ErrOCSPUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled caller: err = %v, want ErrOCSPUnavailable and context.Canceled", err)
	}
	if err := receive(t, second, "result of the waiting check"); err != nil {
		t.Errorf("waiting caller: %v", err)
	}
	if n := tr.requests.Load(); n != 2 {
		t.Errorf("responder saw %d requests, want 2", n)
	}
}
