package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sampleReport is a client's report with one certificate of each kind of
// urgency.
func sampleReport(now time.Time) statusReport {
	day := 24 * time.Hour
	return statusReport{
		Agent: "client", Version: "v1", Started: now.Add(-90 * time.Minute), Time: now,
		Readiness: readiness{Ready: true, Servers: map[string]string{"db:8443": "up"}},
		Sessions: []statusSession{{ID: "0a1b2c3d", Peer: "CN=db.example.com", Remote: "10.0.0.5:8443", Server: "db:8443",
			AgeSeconds: 3700, Streams: 2, StreamsTotal: 40, BytesUp: 3 << 20, BytesDown: 1536, Draining: true}},
		Routes: []statusRoute{{Route: "postgres", Open: 2, Total: 41, OK: 37, Denied: 3, Failed: 1, Up: 3 << 20, Down: 1536}},
		Certificates: []statusCert{
			{Role: "own", Subject: "CN=app", NotAfter: now.Add(100 * day), DaysLeft: 100},
			{Role: "ca", Subject: "CN=old CA", NotAfter: now.Add(10 * day), DaysLeft: 10},
			{Role: "ca", Subject: "CN=dead CA", NotAfter: now.Add(-3 * day), DaysLeft: -3},
		},
		CRLs: []statusCRL{{Issuer: "CN=old CA", File: "/etc/mtunnel/ca.crl", AgeSeconds: 7200, NextUpdate: now.Add(day), Revoked: 4}},
	}
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var plain bytes.Buffer
	printStatus(&plain, sampleReport(now), palette{})
	out := plain.String()
	for _, want := range []string{
		"mtunnel client agent v1, up 1h30m: ready",
		"SESSIONS (1)",
		"0a1b2c3d  CN=db.example.com  10.0.0.5:8443  1h1m  2        40     3.0MiB  1.5KiB  draining",
		"postgres  2     41     37  3       1       3.0MiB  1.5KiB",
		"CRL CN=old CA  /etc/mtunnel/ca.crl  age 2h0m  next update 2026-05-02 12:00:00 UTC  4 revoked",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("colour codes without a terminal:\n%q", out)
	}
	// "!" marks the certificates under 30 days and the expired one only.
	for subject, mark := range map[string]bool{"CN=app ": false, "CN=old CA ": true, "CN=dead CA ": true} {
		n := 0
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, subject) && !strings.Contains(line, "CRL") {
				n++
				if strings.HasPrefix(line, "!") != mark {
					t.Errorf("certificate line %q: marked %v, want %v", line, !mark, mark)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d certificate lines for %s:\n%s", n, subject, out)
		}
	}

	// On a terminal the same lines are coloured, and the columns stay
	// where they are once the codes are removed.
	var color bytes.Buffer
	p := palette{plain: "\x1b[39m", warn: "\x1b[33m", bad: "\x1b[31m", reset: "\x1b[0m"}
	printStatus(&color, sampleReport(now), p)
	if got := ansi.ReplaceAllString(color.String(), ""); got != out {
		t.Errorf("coloured output differs from plain once the codes are removed:\n%s\nvs\n%s", got, out)
	}
	for subject, lead := range map[string]string{"CN=app ": p.plain, "CN=old CA ": p.warn, "CN=dead CA ": p.bad} {
		for _, line := range strings.Split(color.String(), "\n") {
			if strings.Contains(line, subject) && !strings.Contains(line, "CRL") && !strings.HasPrefix(line, lead) {
				t.Errorf("certificate line %q does not start with %q", line, lead)
			}
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second:                 "45s",
		3*time.Minute + 12*time.Second:   "3m12s",
		5*time.Hour + 4*time.Minute + 59: "5h4m",
		50 * time.Hour:                   "2d2h",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
}

// `mtunnel status` prints the table from an agent's /status, --json the
// report as served, and says clearly when nothing answers.
func TestStatusCommand(t *testing.T) {
	report, err := json.Marshal(sampleReport(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		w.Write(report)
	}))
	defer agent.Close()
	addr := strings.TrimPrefix(agent.URL, "http://")

	code, stdout, stderr := runCLI(t, "status", "--admin", addr)
	if code != 0 || !strings.Contains(stdout, "SESSIONS (1)") || !strings.Contains(stdout, "postgres") {
		t.Errorf("status: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	t.Setenv("MTUNNEL_ADMIN", addr) // the agent's own variable works too
	code, stdout, _ = runCLI(t, "status", "--json")
	if code != 0 || stdout != string(report) {
		t.Errorf("status --json: exit %d, printed %q, want the report as served", code, stdout)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := ln.Addr().String()
	ln.Close()
	code, _, stderr = runCLI(t, "status", "--admin", nobody)
	if code != 1 || !strings.Contains(stderr, "no agent answers at "+nobody) || !strings.Contains(stderr, "connection refused") {
		t.Errorf("status with nothing listening: exit %d, stderr %q", code, stderr)
	}

	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	code, _, stderr = runCLI(t, "status", "--admin", strings.TrimPrefix(other.URL, "http://"))
	if code != 1 || !strings.Contains(stderr, "404") {
		t.Errorf("status from something else: exit %d, stderr %q", code, stderr)
	}
}
