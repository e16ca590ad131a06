package tunnel

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"testing"
	"time"
)

// TestJudgePriority: busy sessions are marked low only while a quiet
// session's streams move bytes beside them, and never with the feature off.
func TestJudgePriority(t *testing.T) {
	_, ms := poolOf(t, 3, 3)
	bulk, bulk2, quiet := ms[0].s, ms[1].s, ms[2].s
	for _, s := range []*Session{bulk, bulk2, quiet} {
		s.low = new(atomic.Bool)
		trackPriority(s)
		t.Cleanup(func() { untrackPriority(s) })
	}
	priority.nice.Store(10)
	t.Cleanup(func() { priority.nice.Store(0) })
	const rate = 1 << 20 // bytes/s
	t0 := time.Now()
	JudgePriority(t0, rate) // the baseline
	step := func(i int, bulkBytes, quietBytes int64, quietStreams int64) int {
		bulk.up.Add(bulkBytes)
		bulk2.down.Add(bulkBytes)
		quiet.up.Add(quietBytes)
		quiet.streams.Store(quietStreams)
		return JudgePriority(t0.Add(time.Duration(i)*250*time.Millisecond), rate)
	}
	// Bulk (1 MiB in 250 ms: 4 MiB/s) beside an idle quiet stream: no.
	if step(1, 1<<20, 0, 1) != 0 || bulk.low.Load() {
		t.Fatal("lowered with the quiet session's stream idle")
	}
	// The quiet stream talks: both busy sessions are lowered, it is not.
	if step(2, 1<<20, 64, 1) != 2 || !bulk.low.Load() || !bulk2.low.Load() || quiet.low.Load() {
		t.Fatalf("talking quiet stream: low = %v %v %v, want true true false", bulk.low.Load(), bulk2.low.Load(), quiet.low.Load())
	}
	if got := loweredMetric(t); got != 2 {
		t.Fatalf("mtunnel_sessions_lowered = %v, want 2", got)
	}
	// The bulk ends: all back.
	if step(3, 10, 64, 1) != 0 || bulk.low.Load() || bulk2.low.Load() {
		t.Fatal("still lowered after the bulk ended")
	}
	// Feature off.
	priority.nice.Store(0)
	if step(4, 1<<20, 64, 1) != 0 || bulk.low.Load() {
		t.Fatal("lowered with the feature off")
	}
}

// loweredMetric reads mtunnel_sessions_lowered from a fresh Metrics.
func loweredMetric(t *testing.T) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "mtunnel_sessions_lowered" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("mtunnel_sessions_lowered is not registered")
	return 0
}

// A copier notes, for its session as well as for the agent, a talking read
// and a bulk one (the session's talkWindow follows the mix), and stores
// each only when the last one is stale, not on every read.
func TestCopierNotesSessionActivity(t *testing.T) {
	agent := copiers.lastTalk.Load()
	t.Cleanup(func() { copiers.lastTalk.Store(agent) })
	var a activity
	p := copierPriority{session: &a}
	base := time.Since(copiers.epoch) + time.Hour // after any real copier's talk
	w := copierWindow
	for _, c := range []struct {
		at          time.Duration
		n           int
		filled, big bool
		talk, bulk  time.Duration // the session's last of each afterwards, since base; -1: none
	}{
		{0, 2 << 10, true, false, -1, -1},                                                    // a burst starting: neither
		{time.Millisecond, 128 << 10, true, true, -1, time.Millisecond},                      // bulk
		{2 * time.Millisecond, 128 << 10, true, true, -1, time.Millisecond},                  // fresh: kept
		{3 * time.Millisecond, 64, false, false, -1, time.Millisecond},                       // a short read amid bulk: not talk
		{w + 3*time.Millisecond, 64, false, false, w + 3*time.Millisecond, time.Millisecond}, // talk: no full read within copierWindow
		{w + 4*time.Millisecond, 64, false, false, w + 3*time.Millisecond, time.Millisecond}, // fresh: kept
		{w + w/4, 64, false, false, w + w/4, time.Millisecond},                               // stale: stored
		{w + w/2, 128 << 10, true, true, w + w/4, w + w/2},                                   // bulk again: stored
	} {
		p.observeAt(base+c.at, c.n, c.filled, c.big)
		for _, f := range []struct {
			what string
			got  int64
			want time.Duration
		}{{"talk", a.talk.Load(), c.talk}, {"bulk", a.bulk.Load(), c.bulk}} {
			want := int64(0)
			if f.want >= 0 {
				want = int64(base + f.want)
			}
			if f.got != want {
				t.Fatalf("after a read of %d at %v: the session's last %s %v, want %v", c.n, c.at, f.what, time.Duration(f.got), time.Duration(want))
			}
		}
		if c.talk >= 0 && time.Duration(copiers.lastTalk.Load()) < base+c.talk {
			t.Fatalf("after a read of %d at %v: the agent's last talk %v, before the session's", c.n, c.at, time.Duration(copiers.lastTalk.Load()))
		}
	}
	// mixed: both within copierWindow of now.
	now := int64(time.Since(copiers.epoch))
	old := now - int64(2*copierWindow)
	for _, c := range []struct {
		talk, bulk int64
		want       bool
	}{{now, now, true}, {now, 0, false}, {0, now, false}, {old, now, false}, {now, old, false}} {
		a.talk.Store(c.talk)
		a.bulk.Store(c.bulk)
		if got := a.mixed(); got != c.want {
			t.Errorf("mixed with talk %d and bulk %d (now %d) = %v, want %v", c.talk, c.bulk, now, got, c.want)
		}
	}
}
