package certs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSPClient defaults.
const (
	DefaultOCSPTimeout   = 5 * time.Second
	DefaultOCSPCacheSize = 10000

	// maxOCSPResponse bounds a response body. A response for one
	// certificate is well under 10 KiB even with a responder chain.
	maxOCSPResponse = 1 << 20

	// ocspCacheWithoutNextUpdate is how long a response without nextUpdate
	// is cached: such a responder claims fresh data at every request
	// (RFC 6960 4.2.2.1), so ask again soon, but not on every handshake.
	ocspCacheWithoutNextUpdate = time.Hour
)

// OCSPClient asks OCSP responders about certificates over HTTP (RFC 6960
// appendix A), verifies the answers with VerifyOCSPResponse and caches them
// until their nextUpdate. The zero value is ready to use; an OCSPClient
// must not be copied after first use and is safe for concurrent use.
type OCSPClient struct {
	// HTTP sends the requests; nil means an http.Client with Timeout over
	// http.DefaultTransport (which honours HTTP_PROXY and NO_PROXY).
	HTTP *http.Client

	// Timeout bounds each request, from dial to the last byte of the
	// response; zero means DefaultOCSPTimeout.
	Timeout time.Duration

	// Skew is the clock difference tolerated between us and the responder
	// when checking thisUpdate, nextUpdate and the responder certificate's
	// validity; zero means none.
	Skew time.Duration

	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	// CacheSize bounds the number of cached responses; zero means
	// DefaultOCSPCacheSize and a negative value disables the cache.
	CacheSize int

	mu     sync.Mutex
	client *http.Client // the default client, made on first use
	cache  map[ocspKey]*OCSPResult
	calls  map[ocspKey]*ocspCall
}

// ocspKey identifies a certificate: its issuer (name and key, as the
// CertID does) and serial number.
type ocspKey struct {
	issuer [sha256.Size]byte
	serial string
}

// ocspCall is a request in flight that other Check calls for the same
// certificate wait for instead of sending their own.
type ocspCall struct {
	done    chan struct{}
	res     *OCSPResult
	err     error
	retry   bool // the first caller gave up; waiters should ask again
	waiters int  // for tests: callers waiting on done
}

// Validate reports settings that make no sense.
func (c *OCSPClient) Validate() error {
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("OCSP client: timeout %v is negative", c.Timeout)
	case c.Skew < 0:
		return fmt.Errorf("OCSP client: clock skew %v is negative", c.Skew)
	}
	return nil
}

// Check returns the status of cert, which issuer issued, from the cache or
// else from the first http(s) responder URL in cert (its Authority
// Information Access extension). Concurrent checks of one certificate send
// one request. Errors wrap ErrOCSPUnavailable (no responder URL, network
// failure, timeout, HTTP error, ctx done) or ErrOCSPInvalid (see
// VerifyOCSPResponse). The result is the caller's to keep.
func (c *OCSPClient) Check(ctx context.Context, cert, issuer *x509.Certificate) (*OCSPResult, error) {
	responder, key, err := c.prepare(cert, issuer)
	if err != nil {
		return nil, err
	}
	for {
		if res := c.cached(key); res != nil {
			return res, nil
		}
		call, first := c.join(key)
		if first {
			res, err := c.fetch(ctx, responder, cert, issuer)
			c.finish(key, call, res, err, ctx.Err() != nil)
			return res.clone(), err
		}
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("OCSP check of %q: %w: %w", Identity(cert), ErrOCSPUnavailable, ctx.Err())
		}
		if !call.retry {
			return call.res.clone(), call.err
		}
		// The request we waited for died with its caller's context, not
		// because of the responder: try again with ours.
	}
}

// Fetch is Check without reading the cache or waiting for other requests:
// it always asks the responder, for example to refresh a stapled response
// before it expires. A verified answer replaces the cached one.
func (c *OCSPClient) Fetch(ctx context.Context, cert, issuer *x509.Certificate) (*OCSPResult, error) {
	responder, key, err := c.prepare(cert, issuer)
	if err != nil {
		return nil, err
	}
	res, err := c.fetch(ctx, responder, cert, issuer)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.store(key, res)
	c.mu.Unlock()
	return res.clone(), nil
}

// prepare checks the arguments and finds the responder URL and cache key.
func (c *OCSPClient) prepare(cert, issuer *x509.Certificate) (string, ocspKey, error) {
	if err := c.Validate(); err != nil {
		return "", ocspKey{}, err
	}
	if cert == nil || issuer == nil || cert.SerialNumber == nil {
		return "", ocspKey{}, errors.New("OCSP check: certificate or issuer is missing")
	}
	if err := checkIssued(cert, issuer); err != nil {
		return "", ocspKey{}, fmt.Errorf("OCSP check of %q: %w", Identity(cert), err)
	}
	responder := ""
	for _, s := range cert.OCSPServer {
		if u, err := url.Parse(s); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
			responder = s
			break
		}
	}
	if responder == "" {
		return "", ocspKey{}, fmt.Errorf("OCSP check of %q: %w: no OCSP responder in certificate", Identity(cert), ErrOCSPUnavailable)
	}
	h := sha256.New()
	h.Write(issuer.RawSubject)
	h.Write(issuer.RawSubjectPublicKeyInfo)
	var key ocspKey
	h.Sum(key.issuer[:0])
	key.serial = string(cert.SerialNumber.Bytes())
	return responder, key, nil
}

// fetch sends one request to responder and verifies the answer.
func (c *OCSPClient) fetch(ctx context.Context, responder string, cert, issuer *x509.Certificate) (*OCSPResult, error) {
	id := Identity(cert)
	reqDER, err := ocsp.CreateRequest(cert, issuer, nil) // SHA-1 CertID, which every responder understands (RFC 5019 2.1.1)
	if err != nil {
		return nil, fmt.Errorf("OCSP check of %q: create request: %w", id, err)
	}
	body, err := c.post(ctx, responder, reqDER)
	if err != nil {
		return nil, fmt.Errorf("OCSP check of %q at %s: %w: %w", id, responder, ErrOCSPUnavailable, err)
	}
	res, err := VerifyOCSPResponse(body, cert, issuer, c.now(), c.Skew)
	if err != nil {
		return nil, fmt.Errorf("OCSP check at %s: %w", responder, err)
	}
	return res, nil
}

// post sends an OCSP request with POST (RFC 6960 A.1) and returns the
// response body, refusing anything that is not an OCSP response.
func (c *OCSPClient) post(ctx context.Context, responder string, reqDER []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, responder, bytes.NewReader(reqDER))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	req.Header.Set("Accept", "application/ocsp-response")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	// A captive portal or proxy error page arrives as 200 text/html.
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/ocsp-response" {
			return nil, fmt.Errorf("content type %q is not application/ocsp-response", ct)
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if len(body) > maxOCSPResponse {
		return nil, fmt.Errorf("response is larger than %d bytes", maxOCSPResponse)
	}
	return body, nil
}

func (c *OCSPClient) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *OCSPClient) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultOCSPTimeout
}

func (c *OCSPClient) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		c.client = &http.Client{Timeout: c.timeout()}
	}
	return c.client
}

// cached returns a copy of the unexpired cached result for key, or nil.
func (c *OCSPClient) cached(key ocspKey) *OCSPResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	res, ok := c.cache[key]
	if !ok {
		return nil
	}
	if !c.now().Before(cacheExpiry(res)) {
		delete(c.cache, key)
		return nil
	}
	return res.clone()
}

// join returns the call in flight for key, or registers a new one that the
// caller must make and finish (first is true).
func (c *OCSPClient) join(key ocspKey) (call *ocspCall, first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if call, ok := c.calls[key]; ok {
		call.waiters++
		return call, false
	}
	if c.calls == nil {
		c.calls = make(map[ocspKey]*ocspCall)
	}
	call = &ocspCall{done: make(chan struct{})}
	c.calls[key] = call
	return call, true
}

// finish publishes the outcome of call to its waiters and caches a result.
// canceled says the caller's context ended, in which case waiters retry
// rather than inherit an error that is not theirs.
func (c *OCSPClient) finish(key ocspKey, call *ocspCall, res *OCSPResult, err error, canceled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.calls, key)
	call.res, call.err, call.retry = res, err, err != nil && canceled
	if err == nil {
		c.store(key, res)
	}
	close(call.done)
}

// store caches res until its nextUpdate. When the cache is full it drops
// expired entries, then arbitrary ones (Go randomises map order). Called
// with c.mu held.
func (c *OCSPClient) store(key ocspKey, res *OCSPResult) {
	size := c.CacheSize
	if size == 0 {
		size = DefaultOCSPCacheSize
	}
	now := c.now()
	if size < 0 || !now.Before(cacheExpiry(res)) {
		return
	}
	if c.cache == nil {
		c.cache = make(map[ocspKey]*OCSPResult)
	}
	if _, ok := c.cache[key]; !ok && len(c.cache) >= size {
		for k, r := range c.cache {
			if !now.Before(cacheExpiry(r)) {
				delete(c.cache, k)
			}
		}
		for k := range c.cache {
			if len(c.cache) < size {
				break
			}
			delete(c.cache, k)
		}
	}
	c.cache[key] = res.clone()
}

// cacheExpiry is when a cached result must be asked for again.
func cacheExpiry(res *OCSPResult) time.Time {
	if !res.NextUpdate.IsZero() {
		return res.NextUpdate
	}
	return res.ThisUpdate.Add(ocspCacheWithoutNextUpdate)
}

// clone copies r so that a caller cannot change the cache's copy.
func (r *OCSPResult) clone() *OCSPResult {
	if r == nil {
		return nil
	}
	c := *r
	c.Raw = bytes.Clone(r.Raw)
	return &c
}
