package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/urfave/cli/v2"
)

// verifyFlags are the certificate verification settings of both agents.
func verifyFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "intermediates", Usage: "extra intermediate CA certificates (PEM) `FILE` to complete peers' chains", EnvVars: env("INTERMEDIATES")},
		&cli.StringSliceFlag{Name: "crl", Usage: "CRL `FILE` (PEM or DER), repeatable; reloaded when it changes and on SIGHUP", EnvVars: env("CRL")},
		&cli.StringFlag{Name: "crl-stale", Value: "fail", Usage: "a CRL past its next update (plus --crl-grace): fail or warn", EnvVars: env("CRL_STALE")},
		&cli.DurationFlag{Name: "crl-grace", Value: time.Hour, Usage: "how long past its next update a CRL is still accepted", EnvVars: env("CRL_GRACE")},
		&cli.DurationFlag{Name: "crl-reload-interval", Value: 10 * time.Second, Usage: "how often certificate, key, CA and CRL files are read for changes when they cannot be watched (fsnotify)", EnvVars: env("CRL_RELOAD_INTERVAL")},
		&cli.StringFlag{Name: "ocsp", Value: "off", Usage: "OCSP checking: off, soft (allow when the responder cannot answer) or hard", EnvVars: env("OCSP")},
		&cli.DurationFlag{Name: "ocsp-timeout", Value: 5 * time.Second, Usage: "bound on one OCSP request", EnvVars: env("OCSP_TIMEOUT")},
		&cli.DurationFlag{Name: "clock-skew", Value: time.Minute, Usage: "allowed clock difference on certificate validity", EnvVars: env("CLOCK_SKEW")},
		&cli.DurationFlag{Name: "recheck-interval", Value: 30 * time.Second, Usage: "how often open sessions' peers are verified again (revocation, expiry)", EnvVars: env("RECHECK_INTERVAL")},
	}
}

// agentTLS is the TLS side of an agent as the CLI assembled it: the policy
// and the background jobs that keep its inputs fresh.
type agentTLS struct {
	policy  tunnel.TLSPolicy
	store   *tunnel.CredentialStore
	creds   *credReloader
	revoke  *tunnel.Revocation
	crls    *crlWatcher     // nil without --crl
	stapler *tunnel.Stapler // nil unless a server staples OCSP
}

// buildTLS loads credentials and assembles the verification policy.
func buildTLS(c *cli.Context, f fileTLS, file string, own x509.ExtKeyUsage) (*agentTLS, error) {
	reload := &credReloader{settings: pickTLS(c, f, file), usage: own}
	creds, minVersion, cas, err := reload.load()
	if err != nil {
		return nil, err
	}
	a := &agentTLS{store: tunnel.NewCredentialStore(creds), creds: reload}
	reload.store = a.store
	a.policy = tunnel.TLSPolicy{
		Credentials: a.store.Load,
		MinVersion:  minVersion,
		ClockSkew:   c.Duration("clock-skew"),
	}
	mode, err := tunnel.ParseOCSPMode(pick(c, "ocsp", f.OCSP, file, "tls.ocsp").value)
	if err != nil {
		return nil, configErr(err)
	}
	stale := pick(c, "crl-stale", f.CRLStale, file, "tls.crl_stale")
	if stale.value != "" && stale.value != "fail" && stale.value != "warn" {
		return nil, configErrorf("%s %q: want fail or warn", stale.source, stale.value)
	}
	crlFiles := c.StringSlice("crl")
	if !c.IsSet("crl") {
		crlFiles = f.CRL
	}
	if len(crlFiles) > 0 {
		a.crls = &crlWatcher{files: crlFiles, cas: cas}
		if err := a.crls.loadAll(); err != nil {
			return nil, configErr(err)
		}
	}
	if mode != tunnel.OCSPOff || a.crls != nil {
		a.revoke = &tunnel.Revocation{
			CRLStaleWarn: stale.value == "warn",
			CRLGrace:     c.Duration("crl-grace"),
			OCSP:         mode,
			OCSPClient:   &certs.OCSPClient{Timeout: c.Duration("ocsp-timeout"), Skew: c.Duration("clock-skew")},
			ClockSkew:    c.Duration("clock-skew"),
		}
		if a.crls != nil {
			a.revoke.CRLs = a.crls.current
		}
		a.policy.Revocation = a.revoke
	}
	if mode != tunnel.OCSPOff && own == x509.ExtKeyUsageServerAuth {
		a.stapler = &tunnel.Stapler{Store: a.store, Client: a.revoke.OCSPClient}
	}
	return a, nil
}

// state reads the TLS material in force, for the admin endpoint.
func (a *agentTLS) state() *tunnel.TLSState {
	s := &tunnel.TLSState{Credentials: a.store.Load}
	if a.crls != nil {
		s.CRLs = a.crls.current
	}
	return s
}

// setLogger points every part at the agent's logger.
func (a *agentTLS) setLogger(log *slog.Logger) {
	a.policy.Logger = log
	a.creds.log = log
	if a.revoke != nil {
		a.revoke.Logger = log
	}
	if a.crls != nil {
		a.crls.log = log
	}
	if a.stapler != nil {
		a.stapler.Logger = log
	}
}

// start runs the background jobs until ctx is done: the reloader of the
// certificate, key, CA and CRL files (SIGHUP forces a reload) and the OCSP
// stapler. recheck is called after a CRL change so open sessions are judged
// by it at once. The returned func waits for the jobs to end.
func (a *agentTLS) start(ctx context.Context, c *cli.Context, recheck func()) (wait func()) {
	var wg sync.WaitGroup
	r := &reloader{creds: a.creds, crls: a.crls, poll: c.Duration("crl-reload-interval"), onCRL: recheck, log: a.policy.Logger}
	if a.stapler != nil {
		r.onCreds = a.stapler.Refresh // new credentials come without a staple
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	src := r.open()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer signal.Stop(hup)
		r.run(ctx, hup, src)
	}()
	if a.stapler != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.stapler.Run(ctx)
		}()
	}
	return wg.Wait
}

// ownIssuer finds the CA certificate that signed leaf, among the chain
// the leaf came with and the CA bundle.
func ownIssuer(leaf *x509.Certificate, candidates []*x509.Certificate) *x509.Certificate {
	for _, c := range candidates {
		if bytes.Equal(c.RawSubject, leaf.RawIssuer) && leaf.CheckSignatureFrom(c) == nil {
			return c
		}
	}
	return nil
}
