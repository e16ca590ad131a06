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
