package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/mtunnel/mtunnel/certs"
)

// crlWatcher keeps the CRL files loaded: at start every file must load
// (a configuration error otherwise); afterwards a changed file that fails to
// load, or that would roll the CRL number back, is refused with an error in
// the log and the last good CRL stays in force.
type crlWatcher struct {
	files []string
	cas   []*x509.Certificate // where CRL issuers are looked up
	log   *slog.Logger

	set  atomic.Pointer[certs.CRLSet]
	seen map[string]fileStamp // what each file looked like when last read
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stamp(file string) fileStamp {
	fi, err := os.Stat(file)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}

func (w *crlWatcher) current() *certs.CRLSet { return w.set.Load() }

func (w *crlWatcher) loadAll() error {
	w.seen = map[string]fileStamp{}
	set := &certs.CRLSet{}
	for _, f := range w.files {
		crl, err := certs.LoadCRL(f, w.cas)
		if err == nil {
			set, err = set.Update(crl)
		}
		if err != nil {
			return fmt.Errorf("--crl: %w", err)
		}
		w.seen[f] = stamp(f)
	}
	w.set.Store(set)
	return nil
}

// reload reads the files that changed (all of them when force) and reports
// whether the set in force changed.
func (w *crlWatcher) reload(force bool) bool {
	set := w.set.Load()
	changed := false
	for _, f := range w.files {
		st := stamp(f)
		if !force && st == w.seen[f] {
			continue
		}
		w.seen[f] = st
		crl, err := certs.LoadCRL(f, w.cas)
		if err == nil {
			set, err = set.Update(crl)
		}
		if err != nil {
			w.logger().Error("CRL reload refused; keeping the last good CRL", "file", f, "err", err)
			continue
		}
		changed = true
		w.logger().Info("CRL loaded", "file", f, "issuer", certs.Identity(crl.Issuer), "number", crl.List.Number,
			"revoked", len(crl.List.RevokedCertificateEntries), "next_update", crl.List.NextUpdate.UTC())
	}
	if changed {
		w.set.Store(set)
	}
	return changed
}

// watch polls the files every interval and reloads all of them on SIGHUP,
// calling onChange after each change.
func (w *crlWatcher) watch(ctx context.Context, interval time.Duration, hup <-chan os.Signal, onChange func()) {
	t := time.NewTicker(max(interval, 100*time.Millisecond))
	defer t.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-hup:
			force = true
		}
		if w.reload(force) {
			onChange()
		}
	}
}

func (w *crlWatcher) logger() *slog.Logger {
	if w.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.log
}
