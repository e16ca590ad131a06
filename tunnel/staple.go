package tunnel

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mtunnel/mtunnel/certs"
)

// Stapler keeps a fresh OCSP response for the agent's own certificate in
// its credentials, so that peers can check the certificate's status from
// the handshake without asking the responder themselves.
type Stapler struct {
	Store  *CredentialStore
	Client *certs.OCSPClient
	Logger *slog.Logger

	wakeOnce sync.Once
	wake     chan struct{} // Refresh asks Run for a refresh now
}

// Refresh makes Run fetch a staple now rather than at the next scheduled
// refresh. Call it after new credentials were stored: they come without a
// staple, and the next scheduled refresh may be hours away.
func (s *Stapler) Refresh() {
	select {
	case s.wakeChan() <- struct{}{}:
	default: // a refresh is already due
	}
}

func (s *Stapler) wakeChan() chan struct{} {
	s.wakeOnce.Do(func() { s.wake = make(chan struct{}, 1) })
	return s.wake
}

// Run refreshes the staple until ctx is done: halfway to the response's
// NextUpdate, after a minute when a fetch failed, and on Refresh.
func (s *Stapler) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wakeChan():
		}
		t.Reset(s.refresh(ctx))
	}
}

// refresh fetches and installs one response and returns when to refresh.
func (s *Stapler) refresh(ctx context.Context) time.Duration {
	creds := s.Store.Load()
	leaf, issuer := creds.Certificate.Leaf, creds.Issuer
	if leaf == nil || issuer == nil || len(leaf.OCSPServer) == 0 {
		s.log().Info("not stapling OCSP: own certificate names no OCSP responder (or its issuer is unknown)")
		return time.Hour // a reload may bring a certificate that names one
	}
	res, err := s.Client.Fetch(ctx, leaf, issuer)
	if err != nil {
		s.log().Warn("OCSP staple refresh failed", "responder", leaf.OCSPServer[0], "err", err)
		return time.Minute
	}
	switch res.Status {
	case certs.OCSPRevoked:
		s.log().Error("own certificate is REVOKED per OCSP: peers checking OCSP will refuse it",
			"revoked_at", res.RevokedAt, "reason", certs.ReasonName(res.Reason))
	case certs.OCSPUnknown:
		s.log().Warn("OCSP responder does not know own certificate; not stapling", "responder", leaf.OCSPServer[0])
		return time.Minute
	}
	next := *creds
	next.Certificate.OCSPStaple = res.Raw
	if !s.Store.Replace(creds, &next) {
		return 0 // credentials were reloaded meanwhile: staple the new ones
	}
	s.log().Info("OCSP staple refreshed", "status", res.Status, "next_update", res.NextUpdate)
	return refreshAfter(res, time.Now())
}

// refreshAfter is halfway to NextUpdate, between one minute and 12 hours.
func refreshAfter(res *certs.OCSPResult, now time.Time) time.Duration {
	if res.NextUpdate.IsZero() {
		return time.Hour
	}
	d := res.NextUpdate.Sub(now) / 2
	return min(max(d, time.Minute), 12*time.Hour)
}

func (s *Stapler) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}
