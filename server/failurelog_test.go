package server

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"github.com/mtunnel/mtunnel/tunnel"
)

type recorded struct {
	mu    sync.Mutex
	lines []slog.Record
}

func (r *recorded) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorded) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorded) WithGroup(string) slog.Handler            { return r }
func (r *recorded) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.lines = append(r.lines, rec)
	r.mu.Unlock()
	return nil
}

// A flood logs failureBurst lines, then one count per reason when flushed.
func TestFailureLogLimits(t *testing.T) {
	rec := &recorded{}
	f := &failureLog{log: slog.New(rec)}
	for range 100 {
		f.failed(tunnel.ReasonTimeout, "remote", "192.0.2.1:1")
	}
	for range 5 {
		f.failed(tunnel.ReasonNoCertificate, "remote", "192.0.2.1:2")
	}
	f.flush()
	counts := map[string]int64{}
	lines := 0
	for _, r := range rec.lines {
		switch r.Message {
		case "handshake failed":
			lines++
		case "handshake failures not logged":
			var reason string
			var n int64
			r.Attrs(func(a slog.Attr) bool {
				switch a.Key {
				case "reason":
					reason = a.Value.String()
				case "count":
					n = a.Value.Int64()
				}
				return true
			})
			counts[reason] += n
		}
	}
	if lines != failureBurst {
		t.Errorf("%d lines logged one by one, want %d", lines, failureBurst)
	}
	if counts[string(tunnel.ReasonTimeout)] != 100-failureBurst || counts[string(tunnel.ReasonNoCertificate)] != 5 {
		t.Errorf("unlogged counts %v, want timeout %d and no_certificate 5", counts, 100-failureBurst)
	}
	f.flush() // nothing left: no more lines
	if n := len(rec.lines); n != failureBurst+2 {
		t.Errorf("%d lines in all, want %d", n, failureBurst+2)
	}
}
