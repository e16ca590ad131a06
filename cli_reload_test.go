package main

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/tunnel"
)

// logRecorder is a slog.Handler that keeps every record, so tests can wait
// for the reloader to report what it did instead of sleeping.
type logRecorder struct {
	mu      sync.Mutex
	recs    []logRec
	changed chan struct{} // closed and replaced on every record
}

type logRec struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r logRec) String() string { return fmt.Sprintf("%s %q %v", r.level, r.msg, r.attrs) }

func newLogRecorder() *logRecorder { return &logRecorder{changed: make(chan struct{})} }

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRec{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, rec)
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}

// mark is the number of records so far: waitFrom(mark(), ...) waits for a
// record logged after this point.
func (l *logRecorder) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// waitFrom waits (10 s at most) for the first record from index from on
// whose message starts with msg, and returns it with the records before it.
func (l *logRecorder) waitFrom(t *testing.T, from int, msg string) (logRec, []logRec) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for i := from; i < len(l.recs); i++ {
			if strings.HasPrefix(l.recs[i].msg, msg) {
				r, before := l.recs[i], append([]logRec(nil), l.recs[from:i]...)
				l.mu.Unlock()
				return r, before
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log record %q within 10s; records:\n%s", msg, l.dump())
		}
	}
}

func (l *logRecorder) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for _, r := range l.recs {
		fmt.Fprintln(&b, r)
	}
	return b.String()
}

// Log messages the tests wait for (prefixes).
const (
	msgReloaded = "certificates reloaded"
	msgRefused  = "certificate reload refused"
	msgMismatch = "certificate and key do not match"
	msgPolling  = "cannot watch certificate and CRL files"
)

// reloadEnv is a server agent's TLS files in a folder, loaded as at start,
// and a running reloader watching them.
type reloadEnv struct {
	dir                       string
	ca                        *certstest.CA
	certFile, keyFile, caFile string
	store                     *tunnel.CredentialStore
	logs                      *logRecorder
	hup                       chan os.Signal
	r                         *reloader
}

// reloadOpts changes the reloader before it starts.
type reloadOpts func(*reloadEnv)

func newReloadEnv(t *testing.T, opts ...reloadOpts) *reloadEnv {
	t.Helper()
	e := &reloadEnv{dir: t.TempDir(), ca: certstest.New(t), logs: newLogRecorder(), hup: make(chan os.Signal, 1)}
	e.caFile = e.ca.WriteFiles(t, e.dir)
	e.certFile, e.keyFile = certstest.WriteKeyPair(t, e.dir, "server", e.ca.Server(t, "server"))
	log := slog.New(e.logs)
	settings := tlsSettings{
		cert: setting{e.certFile, "--cert"}, key: setting{e.keyFile, "--key"}, ca: setting{e.caFile, "--ca"},
		minVersion: setting{"", "--tls-min"},
	}
	cr := &credReloader{settings: settings, usage: x509.ExtKeyUsageServerAuth, log: log}
	creds, _, _, err := cr.load()
	if err != nil {
		t.Fatal(err)
	}
	e.store = tunnel.NewCredentialStore(creds)
	cr.store = e.store
	// A settle time well above the microseconds between a test's two
	// writes: they must be read as a pair.
	e.r = &reloader{creds: cr, poll: time.Hour, settle: 500 * time.Millisecond, log: log}
	for _, o := range opts {
		o(e)
	}
	e.start(t)
	return e
}

func (e *reloadEnv) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	src := e.r.open()
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.r.run(ctx, e.hup, src)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// serial is the serial number of the certificate in force.
func (e *reloadEnv) serial() string {
	return certs.SerialString(e.store.Load().Certificate.Leaf.SerialNumber)
}

// pairPEM returns a certificate's and its key's PEM.
func pairPEM(t *testing.T, c tls.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	keyPEM, err := certs.EncodeKeyPEM(c.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	return certs.EncodeCertPEM(c.Leaf), keyPEM
}

// writeInPlace writes data to name in place (truncate, then write), as
// "cp" and many scripts do.
func writeInPlace(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// renameIntoPlace writes data to a temporary file in name's folder and
// renames it over name, as editors and careful tools do.
func renameIntoPlace(t *testing.T, name string, data []byte) {
	t.Helper()
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// expectReload waits for the next "certificates reloaded" and checks that
// it names want and that nothing was refused or warned about before it.
func (e *reloadEnv) expectReload(t *testing.T, from int, want tls.Certificate) {
	t.Helper()
	rec, before := e.logs.waitFrom(t, from, msgReloaded)
	for _, b := range before {
		if b.level >= slog.LevelWarn {
			t.Errorf("before the reload: %v", b)
		}
	}
	wantSerial := certs.SerialString(want.Leaf.SerialNumber)
	if rec.attrs["serial"] != wantSerial || e.serial() != wantSerial {
		t.Fatalf("reloaded serial %s (log) / %s (in force), want %s", rec.attrs["serial"], e.serial(), wantSerial)
	}
	if rec.attrs["cert"] != certs.Identity(want.Leaf) || rec.attrs["not_after"] == "" {
		t.Errorf("reload log %v does not name the certificate and its expiry", rec)
	}
}

// TestReloadRenameIntoPlace: a new pair renamed over the old files, the
// certificate first, is read as a pair once the writes settle.
func TestReloadRenameIntoPlace(t *testing.T) {
	e := newReloadEnv(t)
	next := e.ca.Server(t, "server")
	certPEM, keyPEM := pairPEM(t, next)
	m := e.logs.mark()
	renameIntoPlace(t, e.certFile, certPEM)
	renameIntoPlace(t, e.keyFile, keyPEM)
	e.expectReload(t, m, next)
}

// TestReloadWriteInPlace: the same with the files rewritten in place.
func TestReloadWriteInPlace(t *testing.T) {
	e := newReloadEnv(t)
	next := e.ca.Server(t, "server")
	certPEM, keyPEM := pairPEM(t, next)
	m := e.logs.mark()
	writeInPlace(t, e.certFile, certPEM)
	writeInPlace(t, e.keyFile, keyPEM)
	e.expectReload(t, m, next)
}

// TestReloadHalfWrittenKeepsOld: a certificate file cut short (a reader
// racing its writer) is refused with the file named, and the old pair
// stays in force until the whole file lands.
func TestReloadHalfWrittenKeepsOld(t *testing.T) {
	e := newReloadEnv(t)
	old := e.serial()
	next := e.ca.Server(t, "server")
	certPEM, keyPEM := pairPEM(t, next)
	m := e.logs.mark()
	writeInPlace(t, e.keyFile, keyPEM)
	writeInPlace(t, e.certFile, certPEM[:len(certPEM)/2])
	rec, _ := e.logs.waitFrom(t, m, msgRefused)
	if rec.level != slog.LevelError || rec.attrs["file"] != e.certFile || !strings.Contains(rec.attrs["err"], "truncated") {
		t.Errorf("refusal %v: want an error naming %s and the truncation", rec, e.certFile)
	}
	if e.serial() != old {
		t.Fatalf("a half-written certificate replaced the one in force")
	}
	m = e.logs.mark()
	writeInPlace(t, e.certFile, certPEM)
	e.expectReload(t, m, next)
}

// TestReloadMismatchedKeyWaits: a new certificate whose key has not been
// written yet keeps the old pair (with a warning); the matching key
// completes the pair.
func TestReloadMismatchedKeyWaits(t *testing.T) {
	e := newReloadEnv(t)
	old := e.serial()
	next := e.ca.Server(t, "server")
	certPEM, keyPEM := pairPEM(t, next)
	m := e.logs.mark()
	renameIntoPlace(t, e.certFile, certPEM)
	rec, _ := e.logs.waitFrom(t, m, msgMismatch)
	if rec.level != slog.LevelWarn || rec.attrs["file"] != e.certFile+" + "+e.keyFile {
		t.Errorf("mismatch %v: want a warning naming both files", rec)
	}
	if strings.Contains(rec.String(), "PRIVATE KEY") {
		t.Errorf("the log shows key material: %v", rec)
	}
	if e.serial() != old {
		t.Fatalf("a certificate without its key replaced the pair in force")
	}
	m = e.logs.mark()
	renameIntoPlace(t, e.keyFile, keyPEM)
	e.expectReload(t, m, next)
}

// TestReloadUnreadableKeepsOld: a key file that cannot be read (replaced
// by a folder: tests run as root, which chmod 000 does not stop) is refused
// with the file named; once readable again, the pair loads.
func TestReloadUnreadableKeepsOld(t *testing.T) {
	e := newReloadEnv(t)
	current := e.store.Load().Certificate
	keyPEM, err := os.ReadFile(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	m := e.logs.mark()
	if err := os.Remove(e.keyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(e.keyFile, 0o700); err != nil {
		t.Fatal(err)
	}
	rec, _ := e.logs.waitFrom(t, m, msgRefused)
	if rec.attrs["file"] != e.keyFile {
		t.Errorf("refusal %v: want file %s", rec, e.keyFile)
	}
	if e.store.Load().Certificate.Leaf != current.Leaf {
		t.Fatal("an unreadable key changed the credentials in force")
	}
	m = e.logs.mark()
	if err := os.Remove(e.keyFile); err != nil {
		t.Fatal(err)
	}
	writeInPlace(t, e.keyFile, keyPEM)
	e.expectReload(t, m, current)
}

// TestReloadSIGHUP: without file events (fsnotify unavailable, polling
// hourly), SIGHUP reloads at once, and reloads again when nothing changed.
func TestReloadSIGHUP(t *testing.T) {
	e := newReloadEnv(t, func(e *reloadEnv) {
		e.r.newWatcher = func() (*fsnotify.Watcher, error) { return nil, errors.New("inotify unavailable") }
	})
	rec, _ := e.logs.waitFrom(t, 0, msgPolling)
	if rec.level != slog.LevelWarn || rec.attrs["interval"] != "1h0m0s" {
		t.Errorf("fallback %v: want a warning with the poll interval", rec)
	}
	next := e.ca.Server(t, "server")
	certPEM, keyPEM := pairPEM(t, next)
	writeInPlace(t, e.certFile, certPEM)
	writeInPlace(t, e.keyFile, keyPEM)
	m := e.logs.mark()
	e.hup <- os.Interrupt // any value; the agent sends SIGHUP
	e.expectReload(t, m, next)
	m = e.logs.mark()
	e.hup <- os.Interrupt
	e.expectReload(t, m, next)
}

// TestReloadPollingFallback: when fsnotify cannot start, changed files are
// found by polling.
func TestReloadPollingFallback(t *testing.T) {
	e := newReloadEnv(t, func(e *reloadEnv) {
		e.r.newWatcher = func() (*fsnotify.Watcher, error) { return nil, errors.New("inotify unavailable") }
		e.r.poll = 100 * time.Millisecond
	})
	e.logs.waitFrom(t, 0, msgPolling)
	next := e.ca.Server(t, "server")
	certPEM, keyPEM := pairPEM(t, next)
	m := e.logs.mark()
	// A poll may fall between the two writes: the log may warn of a
	// mismatch first, and the reload follows.
	writeInPlace(t, e.keyFile, keyPEM)
	writeInPlace(t, e.certFile, certPEM)
	rec, _ := e.logs.waitFrom(t, m, msgReloaded)
	if rec.attrs["serial"] != certs.SerialString(next.Leaf.SerialNumber) {
		t.Fatalf("polling reloaded %v, want serial %s", rec, certs.SerialString(next.Leaf.SerialNumber))
	}
}

// TestReloadKubernetesSecret: the layout of a mounted Kubernetes secret,
// where each file is a symlink through "..data" into a versioned folder,
// and an update swaps "..data" by renaming a new symlink over it.
func TestReloadKubernetesSecret(t *testing.T) {
	var next tls.Certificate
	var version func(name string, c tls.Certificate)
	e := newReloadEnv(t, func(e *reloadEnv) {
		version = func(name string, c tls.Certificate) {
			dir := filepath.Join(e.dir, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			certPEM, keyPEM := pairPEM(t, c)
			writeInPlace(t, filepath.Join(dir, "tls.crt"), certPEM)
			writeInPlace(t, filepath.Join(dir, "tls.key"), keyPEM)
			writeInPlace(t, filepath.Join(dir, "ca.crt"), certs.EncodeCertPEM(e.ca.Cert))
		}
		first := e.store.Load().Certificate
		version("..2026_01", first)
		must(t, os.Symlink("..2026_01", filepath.Join(e.dir, "..data")))
		for _, f := range []string{"tls.crt", "tls.key", "ca.crt"} {
			must(t, os.Symlink(filepath.Join("..data", f), filepath.Join(e.dir, "k8s-"+f)))
		}
		e.r.creds.settings.cert.value = filepath.Join(e.dir, "k8s-tls.crt")
		e.r.creds.settings.key.value = filepath.Join(e.dir, "k8s-tls.key")
		e.r.creds.settings.ca.value = filepath.Join(e.dir, "k8s-ca.crt")
		e.r.creds.seen = sumFiles(e.r.creds.files())
	})
	next = e.ca.Server(t, "server")
	version("..2026_02", next)
	m := e.logs.mark()
	must(t, os.Symlink("..2026_02", filepath.Join(e.dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(e.dir, "..data_tmp"), filepath.Join(e.dir, "..data")))
	must(t, os.RemoveAll(filepath.Join(e.dir, "..2026_01")))
	e.expectReload(t, m, next)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestReloadCABundle: a bundle that gains a second CA is used at once to
// verify peers, and for the signatures of CRLs: a CRL of the new CA loads
// (and open sessions are rechecked). A bundle cut short is refused and
// the bundle in force stays.
func TestReloadCABundle(t *testing.T) {
	newCA := certstest.New(t)
	crlFile := ""
	rechecked := make(chan struct{}, 10)
	e := newReloadEnv(t, func(e *reloadEnv) {
		crlFile = filepath.Join(e.dir, "ca.crl")
		writeInPlace(t, crlFile, crlPEM(t, e.ca, 1))
		e.r.crls = &crlWatcher{files: []string{crlFile}, cas: []*x509.Certificate{e.ca.Cert}, log: e.r.log}
		must(t, e.r.crls.loadAll())
		e.r.onCRL = func() { rechecked <- struct{}{} }
	})
	trusts := func(ca *certstest.CA) bool {
		_, err := ca.Client(t, "peer").Leaf.Verify(x509.VerifyOptions{
			Roots: e.store.Load().Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err == nil
	}
	if !trusts(e.ca) || trusts(newCA) {
		t.Fatal("the test's starting bundle is not the old CA alone")
	}

	m := e.logs.mark()
	renameIntoPlace(t, e.caFile, certs.EncodeCertPEM(e.ca.Cert, newCA.Cert))
	e.logs.waitFrom(t, m, msgReloaded)
	if !trusts(e.ca) || !trusts(newCA) {
		t.Fatal("the new bundle is not used to verify peers")
	}

	m = e.logs.mark()
	renameIntoPlace(t, crlFile, crlPEM(t, newCA, 1))
	rec, _ := e.logs.waitFrom(t, m, "CRL")
	if rec.msg != "CRL loaded" {
		t.Fatalf("a CRL of the CA added to the bundle: %v", rec)
	}
	<-rechecked

	m = e.logs.mark()
	bundle := certs.EncodeCertPEM(newCA.Cert, e.ca.Cert)
	writeInPlace(t, e.caFile, bundle[:len(bundle)*3/4])
	rec, _ = e.logs.waitFrom(t, m, msgRefused)
	if rec.attrs["file"] != e.caFile {
		t.Errorf("refusal %v: want file %s", rec, e.caFile)
	}
	if !trusts(e.ca) || !trusts(newCA) {
		t.Fatal("a bundle cut short replaced the one in force")
	}
}

// TestReloadDelay: a burst of events waits for quiet, but not for ever.
func TestReloadDelay(t *testing.T) {
	r := &reloader{settle: time.Second, maxDelay: 5 * time.Second}
	for _, tt := range []struct {
		name      string
		burstAge  time.Duration
		low, high time.Duration
	}{
		{"new burst", 0, 900 * time.Millisecond, time.Second},
		{"long burst", 4500 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond},
		{"endless burst", time.Minute, 0, 0},
	} {
		if d := r.delay(time.Now().Add(-tt.burstAge)); d < tt.low || d > tt.high {
			t.Errorf("%s: delay %v, want %v..%v", tt.name, d, tt.low, tt.high)
		}
	}
}
