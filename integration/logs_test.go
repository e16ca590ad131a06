package integration

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// logSink is a slog.Handler that keeps every record, so tests can wait for
// a log line (the agents' way of saying what happened) without sleeping.
type logSink struct {
	mu      sync.Mutex
	records []record
	changed chan struct{} // closed and replaced on every new record
	t       testing.TB
}

type record struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

func (r record) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", r.level, r.msg)
	for k, v := range r.attrs {
		fmt.Fprintf(&b, " %s=%q", k, v)
	}
	return b.String()
}

func newLogSink(t testing.TB) *logSink {
	return &logSink{changed: make(chan struct{}), t: t}
}

func (s *logSink) logger(agent string) *slog.Logger {
	return slog.New(&sinkHandler{sink: s, attrs: map[string]string{"agent": agent}})
}

// waitFor blocks until a record satisfies match, and returns it.
func (s *logSink) waitFor(t testing.TB, what string, match func(record) bool) record {
	t.Helper()
	return s.waitForN(t, what, 1, match)
}

// waitForN blocks until n records satisfy match, and returns the nth.
func (s *logSink) waitForN(t testing.TB, what string, n int, match func(record) bool) record {
	t.Helper()
	return s.waitForSum(t, what, n, func(r record) int {
		if match(r) {
			return 1
		}
		return 0
	})
}

// waitForSum blocks until the records' weights add up to n, and returns
// the record that made it.
func (s *logSink) waitForSum(t testing.TB, what string, n int, weight func(record) int) record {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	seen := 0
	for {
		s.mu.Lock()
		recs, changed := s.records[seen:], s.changed
		seen = len(s.records)
		s.mu.Unlock()
		for _, r := range recs {
			if w := weight(r); w > 0 {
				if n -= w; n <= 0 {
					return r
				}
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no log line %s; got:\n%s", what, s.dump())
		}
	}
}

// count returns how many records so far satisfy match.
func (s *logSink) count(match func(record) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.records {
		if match(r) {
			n++
		}
	}
	return n
}

func (s *logSink) dump() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, r := range s.records {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// msgAttr matches a record by message and attribute values.
func msgAttr(msg string, kv ...string) func(record) bool {
	return func(r record) bool {
		if r.msg != msg {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if r.attrs[kv[i]] != kv[i+1] {
				return false
			}
		}
		return true
	}
}

type sinkHandler struct {
	sink  *logSink
	attrs map[string]string
}

func (h *sinkHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *sinkHandler) Handle(_ context.Context, r slog.Record) error {
	rec := record{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for k, v := range h.attrs {
		rec.attrs[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	s := h.sink
	s.mu.Lock()
	s.records = append(s.records, rec)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return nil
}

func (h *sinkHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := &sinkHandler{sink: h.sink, attrs: map[string]string{}}
	for k, v := range h.attrs {
		n.attrs[k] = v
	}
	for _, a := range as {
		n.attrs[a.Key] = a.Value.String()
	}
	return n
}

func (h *sinkHandler) WithGroup(string) slog.Handler { return h }
