package tunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mtunnel/mtunnel/certs"
)

// OCSPMode says what to do when OCSP cannot give an answer.
type OCSPMode int

const (
	// OCSPOff skips OCSP entirely (stapled responses are ignored too).
	OCSPOff OCSPMode = iota
	// OCSPSoft allows a peer whose status cannot be learnt (responder
	// down, no responder named, an unusable or "unknown" answer) and logs a
	// warning. A "revoked" answer still rejects.
	OCSPSoft
	// OCSPHard rejects a peer unless a valid "good" answer is at hand.
	OCSPHard
)

// ParseOCSPMode parses "off", "soft" or "hard".
func ParseOCSPMode(s string) (OCSPMode, error) {
	switch s {
	case "", "off":
		return OCSPOff, nil
	case "soft":
		return OCSPSoft, nil
	case "hard":
		return OCSPHard, nil
	}
	return OCSPOff, fmt.Errorf("ocsp mode %q: want off, soft or hard", s)
}

// Revocation checks chains against CRLs and OCSP. It implements
// RevocationChecker.
type Revocation struct {
	// CRLs returns the current CRL set (nil: none). Called per check, so a
	// reload takes effect at once.
	CRLs func() *certs.CRLSet
	// CRLStaleWarn allows certificates under a CRL past its NextUpdate
	// (plus CRLGrace) with a warning; by default they are rejected.
	CRLStaleWarn bool
	// CRLGrace is how long past NextUpdate a CRL is still used without
	// complaint, for publishers that run late. Default 1 hour.
	CRLGrace time.Duration

	OCSP       OCSPMode
	OCSPClient *certs.OCSPClient // nil: a default client, made on first use
	ClockSkew  time.Duration     // allowed on OCSP times; default 1 minute

	Logger *slog.Logger
	Now    func() time.Time

	warned     sync.Map // *certs.CRL -> struct{}: one stale warning per CRL
	clientOnce sync.Once
}

func (r *Revocation) ocspClient() *certs.OCSPClient {
	r.clientOnce.Do(func() {
		if r.OCSPClient == nil {
			r.OCSPClient = &certs.OCSPClient{}
		}
	})
	return r.OCSPClient
}

func (r *Revocation) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Revocation) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}

// Check looks up every certificate of chain but the root in its issuer's
// CRL, then asks OCSP about the leaf: the stapled response when there is a
// valid one, else the responder the leaf names (cached until NextUpdate).
func (r *Revocation) Check(chain []*x509.Certificate, staple []byte) error {
	now := r.now()
	for i := 0; i+1 < len(chain); i++ {
		if err := r.checkCRL(chain[i], chain[i+1], now); err != nil {
			return err
		}
	}
	if r.OCSP == OCSPOff || len(chain) < 2 {
		return nil
	}
	return r.checkOCSP(chain[0], chain[1], staple, now)
}

func (r *Revocation) checkCRL(c, issuer *x509.Certificate, now time.Time) error {
	if r.CRLs == nil {
		return nil
	}
	crl := r.CRLs().For(issuer)
	if crl == nil {
		return nil // no CRL is configured for this issuer
	}
	if e, revoked := crl.Revoked(c.SerialNumber); revoked {
		return refuse(ReasonRevoked, "%s (serial %s) was revoked at %s, reason %s, per CRL %s",
			subject(c), c.SerialNumber, e.RevocationTime.UTC().Format(time.RFC3339), certs.ReasonName(e.ReasonCode), crl.File)
	}
	grace := r.CRLGrace
	if grace == 0 {
		grace = time.Hour
	}
	if crl.Stale(now, 0) {
		stale := crl.Stale(now, grace)
		if stale && !r.CRLStaleWarn {
			return refuse(ReasonCRLStale, "CRL %s of %s is past its next update (%s); refusing %s (--crl-stale fail)",
				crl.File, subject(issuer), crl.List.NextUpdate.UTC().Format(time.RFC3339), subject(c))
		}
		if _, done := r.warned.LoadOrStore(crl, struct{}{}); !done {
			r.log().Warn("CRL is past its next update; still using it", "crl", crl.File,
				"next_update", crl.List.NextUpdate.UTC(), "within_grace", !stale)
		}
	}
	return nil
}

func (r *Revocation) checkOCSP(leaf, issuer *x509.Certificate, staple []byte, now time.Time) error {
	skew := r.ClockSkew
	if skew == 0 {
		skew = time.Minute
	}
	var res *certs.OCSPResult
	var err error
	if len(staple) > 0 {
		res, err = certs.VerifyOCSPResponse(staple, leaf, issuer, now, skew)
		if err != nil {
			r.log().Warn("stapled OCSP response unusable; asking the responder", "cert", subject(leaf), "err", err)
		}
	}
	if res == nil {
		ctx, cancel := context.WithTimeout(context.Background(), r.ocspTimeout())
		res, err = r.ocspClient().Check(ctx, leaf, issuer)
		cancel()
	}
	if err != nil {
		reason := ReasonOCSPUnavailable
		if errors.Is(err, certs.ErrOCSPInvalid) {
			reason = ReasonOCSPInvalid
		}
		return r.softFail(reason, leaf, err)
	}
	switch res.Status {
	case certs.OCSPGood:
		return nil
	case certs.OCSPRevoked:
		return refuse(ReasonRevoked, "%s (serial %s) was revoked at %s, reason %s, per OCSP",
			subject(leaf), leaf.SerialNumber, res.RevokedAt.UTC().Format(time.RFC3339), certs.ReasonName(res.Reason))
	}
	return r.softFail(ReasonOCSPUnavailable, leaf, errors.New("OCSP responder does not know the certificate (status unknown)"))
}

// softFail rejects under OCSPHard; under OCSPSoft it logs and allows.
func (r *Revocation) softFail(reason Reason, leaf *x509.Certificate, err error) error {
	if r.OCSP == OCSPHard {
		return &VerifyError{Reason: reason, Err: fmt.Errorf("%s: %w (--ocsp hard)", subject(leaf), err)}
	}
	r.log().Warn("OCSP status unknown; allowing (--ocsp soft)", "cert", subject(leaf), "reason", reason, "err", err)
	return nil
}

func (r *Revocation) ocspTimeout() time.Duration {
	if c := r.ocspClient(); c.Timeout > 0 {
		return c.Timeout
	}
	return 5 * time.Second
}
