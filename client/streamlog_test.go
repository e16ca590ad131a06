package client

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A stream's lines read as they did from a child logger (slog.Logger.With):
// the same keys in the same order with the same values, in JSON and text.
func TestStreamLogMatchesChildLogger(t *testing.T) {
	for name, newHandler := range map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var want, got bytes.Buffer
		logger := func(b *bytes.Buffer) *slog.Logger { return slog.New(newHandler(b)) }
		child := logger(&want).With("route", "db", "app", "127.0.0.1:5000", "server", "s:1", "peer", "cn=app", "session", uint64(3), "stream", uint32(7))
		child.Warn("stream ended", "sent", int64(10), "received", int64(20), "duration", 1500*time.Microsecond, "result", "reset", "err", errors.New("boom"))
		sl := streamLog{logger(&got), []slog.Attr{slog.Any("route", "db"), slog.Any("app", "127.0.0.1:5000"), slog.Any("server", "s:1"),
			slog.Any("peer", "cn=app"), slog.Any("session", uint64(3)), slog.Any("stream", uint32(7))}}
		sl.at(slog.LevelWarn, "stream ended", slog.Any("sent", int64(10)), slog.Any("received", int64(20)),
			slog.Any("duration", 1500*time.Microsecond), slog.Any("result", "reset"), slog.Any("err", errors.New("boom")))
		// The time differs; compare from the level on.
		strip := func(s string) string { return s[strings.Index(s, "level"):] }
		if strip(got.String()) != strip(want.String()) {
			t.Errorf("%s:\n got %s\nwant %s", name, got.String(), want.String())
		}
	}
}

// BenchmarkStreamLog is a stream's log lines as the client writes them
// (streamLog) beside the child logger it used before (slog.Logger.With),
// to JSON on io.Discard.
func BenchmarkStreamLog(b *testing.B) {
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	b.Run("child", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l := log.With("route", "db", "app", "127.0.0.1:5000", "server", "s:1", "peer", "cn=app", "session", uint64(3), "stream", uint32(7))
			l.Info("stream ended", "sent", int64(10), "received", int64(20), "duration", 1500*time.Microsecond, "result", "ok")
		}
	})
	b.Run("streamLog", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			l := streamLog{log, []slog.Attr{slog.Any("route", "db"), slog.Any("app", "127.0.0.1:5000"), slog.Any("server", "s:1"),
				slog.Any("peer", "cn=app"), slog.Any("session", uint64(3)), slog.Any("stream", uint32(7))}}
			l.at(slog.LevelInfo, "stream ended", slog.Any("sent", int64(10)), slog.Any("received", int64(20)),
				slog.Any("duration", 1500*time.Microsecond), slog.Any("result", "ok"))
		}
	})
}
