package certstest

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
)

func TestAcceptWatcher(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string // "" means no address
	}{
		{"one write", []string{"ACCEPT [::]:38281 PID=14980\n"}, "[::]:38281"},
		{"split line", []string{"ACC", "EPT 0.0.0.0:80", "80 PID=1\nmore\n"}, "0.0.0.0:8080"},
		{"after other lines", []string{"warning\nACCEPT [::]:1 PID=2\n"}, "[::]:1"},
		{"line not complete", []string{"ACCEPT [::]:1"}, ""},
		{"no such line", []string{"ocsp: Error starting accept\n"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			a := &acceptWatcher{w: &out, addr: make(chan string, 1)}
			for _, w := range tt.writes {
				if n, err := a.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			got := ""
			select {
			case got = <-a.addr:
			default:
			}
			if got != tt.want {
				t.Errorf("address %q, want %q", got, tt.want)
			}
			if want := strings.Join(tt.writes, ""); out.String() != want {
				t.Errorf("passed on %q, want everything: %q", out.String(), want)
			}
		})
	}
}

// TestOpenSSLResponderLifecycle: the URL survives Restart, Restart makes an
// index change visible at once, Stop makes the responder unavailable, and
// a stopped responder can be started again on the same URL.
func TestOpenSSLResponderLifecycle(t *testing.T) {
	ca := New(t)
	dir := t.TempDir()
	if err := certs.WriteCA(dir, ca.CA, false); err != nil {
		t.Fatal(err)
	}
	r := StartOpenSSLResponder(t, dir) // creates the empty index
	url := r.URL()
	leaf := ca.Issue(t, certs.Request{Name: "app", Client: true, OCSPServer: []string{url}})
	client := &certs.OCSPClient{Timeout: 5 * time.Second}
	status := func(what string) certs.OCSPStatus {
		t.Helper()
		res, err := client.Fetch(context.Background(), leaf.Leaf, ca.Cert)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return res.Status
	}

	if s := status("empty index"); s != certs.OCSPUnknown {
		t.Errorf("empty index: %v, want unknown", s)
	}
	if err := certs.RecordIssued(filepath.Join(dir, "index.txt"), leaf.Leaf); err != nil {
		t.Fatal(err)
	}
	r.Restart(t)
	if r.URL() != url {
		t.Fatalf("URL after Restart %s, want %s", r.URL(), url)
	}
	if s := status("after RecordIssued and Restart"); s != certs.OCSPGood {
		t.Errorf("after RecordIssued and Restart: %v, want good", s)
	}

	r.Stop()
	r.Stop()
	if _, err := client.Fetch(context.Background(), leaf.Leaf, ca.Cert); !errors.Is(err, certs.ErrOCSPUnavailable) {
		t.Errorf("stopped: %v, want ErrOCSPUnavailable", err)
	}
	r.Restart(t)
	if s := status("restarted after Stop"); s != certs.OCSPGood || r.URL() != url {
		t.Errorf("restarted after Stop: %v at %s, want good at %s", s, r.URL(), url)
	}
}
