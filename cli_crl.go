package main

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/mtunnel/mtunnel/certs"
)

// crlWatcher keeps the CRL files loaded: at start every file must load
// (a configuration error otherwise); afterwards a changed file that fails to
// load, or that would roll the CRL number back, is refused with an error in
// the log and the last good CRL stays in force. The agent's reloader
// (cli_reload.go) decides when to look.
type crlWatcher struct {
	files []string
	cas   []*x509.Certificate // where CRL issuers are looked up; the reloader updates it
	log   *slog.Logger

	set  atomic.Pointer[certs.CRLSet]
	seen map[string]fileSum // each file's contents when last read
}

func (w *crlWatcher) current() *certs.CRLSet { return w.set.Load() }

func (w *crlWatcher) loadAll() error {
	w.seen = map[string]fileSum{}
	set := &certs.CRLSet{}
	for _, f := range w.files {
		crl, err := certs.LoadCRL(f, w.cas)
		if err == nil {
			set, err = set.Update(crl)
		}
		if err != nil {
			return fmt.Errorf("--crl: %w", err)
		}
		w.seen[f] = sumFile(f)
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
		sum := sumFile(f)
		if !force && sum == w.seen[f] {
			continue
		}
		w.seen[f] = sum
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

func (w *crlWatcher) logger() *slog.Logger {
	if w.log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.log
}
