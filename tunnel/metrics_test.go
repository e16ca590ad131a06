package tunnel

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A nil Metrics and a nil RouteMeter record nothing and do not panic:
// agents built without metrics call them all the same.
func TestMetricsNil(t *testing.T) {
	var m *Metrics
	m.HandshakeFailed(ReasonExpired)
	m.SessionUp(time.Millisecond)
	m.SessionDown("closed")
	m.Reconnect()
	r := m.Route("default")
	if r != nil {
		t.Fatalf("nil metrics gave a meter %v", r)
	}
	r.Opened(time.Millisecond)
	r.Up(1)
	r.Down(1)
	r.Ended(ResultOK)
	r.Refused(ResultNoSession)
	if got := m.Routes(); got != nil {
		t.Errorf("nil metrics has routes %v", got)
	}
}

func TestRouteMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	db := m.Route("db")
	m.Route("idle") // declared: reported with zeros
	db.Opened(2 * time.Millisecond)
	db.Up(100)
	db.Down(40)
	db.Ended(ResultOK)
	db.Opened(3 * time.Millisecond)
	db.Up(5)
	db.Ended(ResultReset)
	db.Refused("forbidden")
	db.Opened(time.Millisecond) // still open
	if m.Route("db") != db {
		t.Fatal("Route made a second meter for the same route")
	}
	want := `
# HELP mtunnel_stream_bytes_total Bytes carried by streams, by route and direction (up: app to target; down: target to app).
# TYPE mtunnel_stream_bytes_total counter
mtunnel_stream_bytes_total{direction="down",route="db"} 40
mtunnel_stream_bytes_total{direction="down",route="idle"} 0
mtunnel_stream_bytes_total{direction="up",route="db"} 105
mtunnel_stream_bytes_total{direction="up",route="idle"} 0
# HELP mtunnel_streams_open Streams open now, by route.
# TYPE mtunnel_streams_open gauge
mtunnel_streams_open{route="db"} 1
mtunnel_streams_open{route="idle"} 0
# HELP mtunnel_streams_total Streams ended or refused, by route and result (ok, reset, error, no_session, or the server's refusal: forbidden, unknown_route, target_unreachable, bad_request, unavailable).
# TYPE mtunnel_streams_total counter
mtunnel_streams_total{result="forbidden",route="db"} 1
mtunnel_streams_total{result="ok",route="db"} 1
mtunnel_streams_total{result="reset",route="db"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"mtunnel_stream_bytes_total", "mtunnel_streams_open", "mtunnel_streams_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.streamOpenSeconds); n != 2 {
		t.Errorf("stream open histograms: %d series, want one per route (2)", n)
	}
	stats := m.Routes()
	if len(stats) != 2 || stats[0].Route != "db" || stats[0].Total() != 3 || stats[0].Open != 1 || stats[1].Route != "idle" {
		t.Errorf("Routes() = %+v", stats)
	}
}

func TestSessionMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.SessionUp(10 * time.Millisecond)
	m.SessionUp(20 * time.Millisecond)
	m.SessionDown("peer_closed")
	m.HandshakeFailed(ReasonExpired)
	m.HandshakeFailed(ReasonExpired)
	m.Reconnect()
	for name, tc := range map[string]struct {
		c    prometheus.Collector
		want float64
	}{
		"open":        {m.sessionsOpen, 1},
		"established": {m.sessionsEstablished, 2},
		"ended":       {m.sessionsEnded.WithLabelValues("peer_closed"), 1},
		"failures":    {m.handshakeFailures.WithLabelValues("expired"), 2},
		"reconnects":  {m.reconnects, 1},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s = %v, want %v", name, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(m.handshakeSeconds); n != 1 {
		t.Errorf("handshake histogram: %d series", n)
	}
}

func TestClassifyEnd(t *testing.T) {
	for _, tt := range []struct {
		cause error
		want  string
	}{
		{nil, "closed"},
		{io.EOF, "peer_closed"},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), "peer_closed"},
		{fmt.Errorf("%w: nothing received", ErrPeerUnresponsive), "peer_unresponsive"},
		{ErrLifetimeExceeded, "lifetime"},
		{fmt.Errorf("recheck: %w", refuse(ReasonRevoked, "revoked")), "revoked"},
		{os.ErrDeadlineExceeded, "timeout"},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, "rejected_by_peer"},
		{errors.New("something else"), "error"},
	} {
		if got := ClassifyEnd(tt.cause); got != tt.want {
			t.Errorf("ClassifyEnd(%v) = %q, want %q", tt.cause, got, tt.want)
		}
	}
}

// tlsSessions dials a real mTLS session and returns both ends.
func tlsSessions(t *testing.T) (client, server *Session) {
	t.Helper()
	return tlsSessionsWith(t, SessionConfig{})
}

// tlsSessionsWith is tlsSessions with sc on both ends.
func tlsSessionsWith(t *testing.T, sc SessionConfig) (client, server *Session) {
	t.Helper()
	ca := certstest.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvPolicy := &TLSPolicy{Credentials: func() *Credentials {
		return &Credentials{Certificate: ca.Server(t, "localhost"), Roots: ca.Pool()}
	}}
	accepted := make(chan *Session, 1)
	go func() {
		defer close(accepted)
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		s, err := Accept(context.Background(), raw, srvPolicy.ServerConfig(), sc, 0)
		if err == nil {
			accepted <- s
		}
	}()
	cliPolicy := &TLSPolicy{ServerName: "localhost", Credentials: func() *Credentials {
		return &Credentials{Certificate: ca.Client(t, "app"), Roots: ca.Pool()}
	}}
	d := &Dialer{Address: ln.Addr().String(), TLS: cliPolicy.ClientConfig(), Session: sc}
	client, err = d.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		t.Fatal("server side of the session failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// Both ends of a session derive the same id, and each end counts its
// streams' bytes in the same directions: up from the client (app) side.
func TestSessionIDAndInfo(t *testing.T) {
	c, s := tlsSessions(t)
	if c.ID != s.ID || len(c.ID) != 8 {
		t.Fatalf("session ids: client %q, server %q; want the same 8 hex digits", c.ID, s.ID)
	}
	other, _ := tlsSessions(t)
	if other.ID == c.ID {
		t.Errorf("two sessions share the id %q", c.ID)
	}
	cs, err := c.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	ss, err := s.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(ss, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.Write(make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(cs, make([]byte, 300)); err != nil {
		t.Fatal(err)
	}
	for side, info := range map[string]SessionInfo{"client": c.Info(), "server": s.Info()} {
		if info.Up != 1000 || info.Down != 300 || info.StreamsTotal != 1 || info.Streams != 1 || info.ID != c.ID || info.Draining {
			t.Errorf("%s Info() = %+v; want 1000 up, 300 down, 1 stream", side, info)
		}
	}
	if info := c.Info(); info.Peer != "CN=localhost" {
		t.Errorf("client sees peer %q", info.Peer)
	}
	if err := s.GoAway(); err != nil {
		t.Fatal(err)
	}
	if !s.Info().Draining {
		t.Error("a session that sent GoAway is not reported draining")
	}
}

// The TLS collector reads the credentials and CRLs in force at each
// scrape: a swap of the credentials shows at the next one.
func TestTLSStateCollector(t *testing.T) {
	ca := certstest.New(t)
	now := time.Now().Truncate(time.Second)
	leaf := ca.Server(t, "db")
	store := NewCredentialStore(&Credentials{Certificate: leaf, Roots: ca.Pool(), CAs: []*x509.Certificate{ca.Cert, ca.Cert}})
	crlFile := filepath.Join(t.TempDir(), "ca.crl")
	der, err := ca.CreateCRL(nil, big.NewInt(1), now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crlFile, der, 0o600); err != nil {
		t.Fatal(err)
	}
	crl, err := certs.LoadCRL(crlFile, []*x509.Certificate{ca.Cert})
	if err != nil {
		t.Fatal(err)
	}
	set, err := (&certs.CRLSet{}).Update(crl)
	if err != nil {
		t.Fatal(err)
	}
	state := &TLSState{Credentials: store.Load, CRLs: func() *certs.CRLSet { return set }, Now: func() time.Time { return now }}
	reg := prometheus.NewRegistry()
	reg.MustRegister(state)
	serial := func(c *x509.Certificate) string { return certs.SerialString(c.SerialNumber) }
	want := func(own *x509.Certificate) string {
		return fmt.Sprintf(`
# HELP mtunnel_certificate_expiry_timestamp_seconds When a loaded certificate expires (Unix time), by role (own, chain, ca, intermediate), subject and serial.
# TYPE mtunnel_certificate_expiry_timestamp_seconds gauge
mtunnel_certificate_expiry_timestamp_seconds{role="ca",serial="%s",subject="CN=mtunnel test CA"} %d
mtunnel_certificate_expiry_timestamp_seconds{role="own",serial="%s",subject="%s"} %d
# HELP mtunnel_crl_age_seconds Time since the thisUpdate of a CRL in force.
# TYPE mtunnel_crl_age_seconds gauge
mtunnel_crl_age_seconds{file="%s",issuer="CN=mtunnel test CA"} 3600
# HELP mtunnel_crl_next_update_timestamp_seconds The nextUpdate of a CRL in force (Unix time).
# TYPE mtunnel_crl_next_update_timestamp_seconds gauge
mtunnel_crl_next_update_timestamp_seconds{file="%s",issuer="CN=mtunnel test CA"} %d
`, serial(ca.Cert), ca.Cert.NotAfter.Unix(), serial(own), certs.Identity(own), own.NotAfter.Unix(),
			crlFile, crlFile, now.Add(time.Hour).Unix())
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(leaf.Leaf))); err != nil {
		t.Error(err)
	}
	next := ca.Server(t, "db2")
	store.Store(&Credentials{Certificate: next, Roots: ca.Pool(), CAs: []*x509.Certificate{ca.Cert}})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(next.Leaf))); err != nil {
		t.Errorf("after a reload: %v", err)
	}
}
