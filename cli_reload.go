package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/tunnel"
)

// Hot reload of an agent's certificate, key, CA bundle, intermediates and
// CRLs (issue 5). The files' folders are watched with fsnotify rather than
// the files: editors and tools replace a file by renaming a new one over it,
// and Kubernetes swaps a "..data" symlink next to the files; both leave a
// watch on the old file's inode blind. SIGHUP re-reads everything. Nothing
// is swapped in unless it passes the checks of a start, so a broken,
// half-written or mismatched file keeps the material in force.

// A certificate and its key are two files written one after the other, and
// one write can arrive as several events. A reload waits until the folders
// have been quiet for reloadSettle, so that both files are read as a pair,
// but never more than reloadMaxDelay after the first event, so that a folder
// that is never quiet (a log file next to the certificates) cannot hold a
// reload off.
const (
	reloadSettle   = 250 * time.Millisecond
	reloadMaxDelay = 2 * time.Second
)

// reloader decides when to read the files again: after a burst of file
// events has settled, on SIGHUP (everything, changed or not), or every poll
// interval when fsnotify cannot be started.
type reloader struct {
	creds *credReloader
	crls  *crlWatcher // nil without --crl
	// poll is how often the files are read when they cannot be watched.
	poll time.Duration
	// settle and maxDelay default to reloadSettle and reloadMaxDelay.
	settle, maxDelay time.Duration
	// onCRL runs after the CRLs in force changed: open sessions are judged
	// by them at once.
	onCRL func()
	// onCreds, if set, runs after new credentials were stored.
	onCreds func()
	log     *slog.Logger
	// newWatcher is fsnotify.NewWatcher unless a test replaces it.
	newWatcher func() (*fsnotify.Watcher, error)
}

// changeSource is how a reloader learns that files may have changed:
// fsnotify events, or a ticker when fsnotify cannot be started.
type changeSource struct {
	w    *fsnotify.Watcher
	tick *time.Ticker
}

// open starts watching the files' folders, or polling them (logged) when
// fsnotify cannot be started. Changes made after it returns are seen.
func (r *reloader) open() changeSource {
	w, err := r.watch()
	if err != nil {
		r.logger().Warn("cannot watch certificate and CRL files for changes; polling them instead",
			"interval", r.poll, "err", err)
		return changeSource{tick: time.NewTicker(max(r.poll, 100*time.Millisecond))}
	}
	r.logger().Info("watching certificate and CRL files for changes", "dirs", strings.Join(w.WatchList(), ", "))
	return changeSource{w: w}
}

// run reloads on changes from src until ctx is done, and then closes src.
// A value on hup forces a reload of everything.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal, src changeSource) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	var tick <-chan time.Time
	if src.w != nil {
		defer src.w.Close()
		events, errs = src.w.Events, src.w.Errors
	}
	if src.tick != nil {
		defer src.tick.Stop()
		tick = src.tick.C
	}
	settled := time.NewTimer(time.Hour)
	settled.Stop()
	defer settled.Stop()
	var burst time.Time // first event not yet acted on; zero when none
	changed := func() {
		if burst.IsZero() {
			burst = time.Now()
		}
		settled.Reset(r.delay(burst))
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.check(true)
		case <-tick:
			r.check(false)
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			changed()
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// An overflowed event queue lost events: read the files.
			r.logger().Warn("file watcher error; reading certificate and CRL files again", "err", err)
			changed()
		case <-settled.C:
			burst = time.Time{}
			r.check(false)
			r.watchMore(src.w)
		}
	}
}

// delay is how long to wait for more events of a burst that began at first.
func (r *reloader) delay(first time.Time) time.Duration {
	settle, most := r.settle, r.maxDelay
	if settle <= 0 {
		settle = reloadSettle
	}
	if most <= 0 {
		most = reloadMaxDelay
	}
	return max(min(settle, time.Until(first.Add(most))), 0)
}

// check reloads what changed, or everything when force.
func (r *reloader) check(force bool) {
	if cas, ok := r.creds.reload(force); ok {
		if r.onCreds != nil {
			r.onCreds()
		}
		// CRL signatures are checked against the CA certificates: keep
		// them in step with the bundle, and read the CRLs again under a
		// new bundle, since one refused for its unknown issuer may load
		// now.
		if r.crls != nil && !slices.EqualFunc(r.crls.cas, cas, sameCert) {
			r.crls.cas = cas
			force = true
		}
	}
	if r.crls != nil && r.crls.reload(force) && r.onCRL != nil {
		r.onCRL()
	}
}

func sameCert(a, b *x509.Certificate) bool { return bytes.Equal(a.Raw, b.Raw) }

// files lists every file the agent reads its TLS material from.
func (r *reloader) files() []string {
	files := r.creds.files()
	if r.crls != nil {
		files = append(files, r.crls.files...)
	}
	return files
}

// watch starts fsnotify on the folders of the files.
func (r *reloader) watch() (*fsnotify.Watcher, error) {
	newWatcher := r.newWatcher
	if newWatcher == nil {
		newWatcher = fsnotify.NewWatcher
	}
	w, err := newWatcher()
	if err != nil {
		return nil, err
	}
	for _, dir := range watchDirs(r.files()) {
		if err := w.Add(dir); err != nil {
			w.Close()
			return nil, err
		}
	}
	return w, nil
}

// watchMore adds the folders that symlinks point into now, which a swap may
// have changed. A folder fsnotify cannot add is left to SIGHUP.
func (r *reloader) watchMore(w *fsnotify.Watcher) {
	if w == nil {
		return
	}
	have := w.WatchList()
	for _, dir := range watchDirs(r.files()) {
		if slices.Contains(have, dir) {
			continue
		}
		if err := w.Add(dir); err != nil {
			r.logger().Debug("cannot watch folder; SIGHUP reloads its files", "dir", dir, "err", err)
		}
	}
}

// watchDirs is the folder of each file and, when the file is a symlink,
// the folder of its target (a file rewritten in place elsewhere changes
// only there).
func watchDirs(files []string) []string {
	var dirs []string
	add := func(file string) {
		if dir := filepath.Clean(filepath.Dir(file)); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	for _, f := range files {
		add(f)
		if target, err := filepath.EvalSymlinks(f); err == nil {
			add(target)
		}
	}
	return dirs
}

func (r *reloader) logger() *slog.Logger {
	if r.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.log
}

// credReloader reads the agent's certificate, key, CA bundle and
// intermediates with the loader of a start (tlsSettings.credentials), so a
// reload passes the same checks: the certificate and key parse and match,
// the certificate chains to the bundle, is valid now and allows the
// agent's role. Only then is the store swapped: new handshakes use the new
// credentials, open sessions keep theirs.
type credReloader struct {
	settings tlsSettings
	usage    x509.ExtKeyUsage // our own role
	store    *tunnel.CredentialStore
	log      *slog.Logger
	seen     map[string]fileSum // the files' contents at the last attempt
}

func (r *credReloader) files() []string {
	files := []string{r.settings.cert.value, r.settings.key.value, r.settings.ca.value}
	if f := r.settings.intermediates.value; f != "" {
		files = append(files, f)
	}
	return files
}

// load is the first load, at start; its error is a configuration error.
func (r *credReloader) load() (*tunnel.Credentials, uint16, []*x509.Certificate, error) {
	r.seen = sumFiles(r.files())
	return r.settings.credentials(r.usage)
}

// reload loads the files if one changed since the last attempt, or always
// when force, and stores credentials that pass. It returns every CA
// certificate they hold, and whether it stored them.
func (r *credReloader) reload(force bool) ([]*x509.Certificate, bool) {
	// The sums are taken before the files are read: should a file change
	// in between, the next event finds a sum that differs and reads again.
	sums := sumFiles(r.files())
	if !force && maps.Equal(sums, r.seen) {
		return nil, false
	}
	r.seen = sums
	creds, _, cas, err := r.settings.credentials(r.usage)
	if err != nil {
		r.refused(err)
		return nil, false
	}
	leaf := creds.Certificate.Leaf
	if old := r.store.Load(); old != nil && sameCert(old.Certificate.Leaf, leaf) {
		creds.Certificate.OCSPStaple = old.Certificate.OCSPStaple // still about this certificate
	}
	r.store.Store(creds)
	r.logger().Info("certificates reloaded", "cert", certs.Identity(leaf),
		"serial", certs.SerialString(leaf.SerialNumber), "not_after", leaf.NotAfter.UTC(),
		"issuer", certs.Identity(creds.Issuer))
	return cas, true
}

// refused logs why new files were not taken. A key that does not match its
// certificate is most often the second file of a pair not written yet (the
// next event brings it), hence a warning.
func (r *credReloader) refused(err error) {
	var fe *fileError
	file := ""
	if errors.As(err, &fe) {
		file = fe.file
	}
	if errors.Is(err, certs.ErrKeyMismatch) {
		r.logger().Warn("certificate and key do not match (yet); keeping the current certificates until both are written",
			"file", file, "err", err)
		return
	}
	r.logger().Error("certificate reload refused; keeping the current certificates", "file", file, "err", err)
}

func (r *credReloader) logger() *slog.Logger {
	if r.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.log
}

// fileSum is the SHA-256 of a file's contents, zero for a file that cannot
// be read. Reloads compare contents, not modification times: two writes
// within one clock tick may leave the same time and size.
type fileSum [sha256.Size]byte

func sumFile(name string) fileSum {
	data, err := os.ReadFile(name)
	if err != nil {
		return fileSum{}
	}
	return sha256.Sum256(data)
}

func sumFiles(names []string) map[string]fileSum {
	sums := make(map[string]fileSum, len(names))
	for _, n := range names {
		sums[n] = sumFile(n)
	}
	return sums
}
