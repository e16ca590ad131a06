package main

import (
	"context"
	"testing"
	"time"
)

func TestTrimState(t *testing.T) {
	var s trimState
	steps := []struct {
		allocated uint64
		trim      bool
	}{
		{1 << 20, false},            // a little traffic: not a burst
		{2 << 20, false},            // quiet, nothing to give back
		{2<<20 + minBurst, false},   // a burst
		{3<<20 + 2*minBurst, false}, // still busy
		{3<<20 + 2*minBurst, true},  // quiet after the burst: trim once
		{3<<20 + 2*minBurst, false}, // still quiet: nothing new
		{4<<20 + 2*minBurst, false}, // keepalive-sized noise: no trim
	}
	for i, st := range steps {
		if got := s.step(st.allocated); got != st.trim {
			t.Fatalf("step %d (allocated %d): trim = %v, want %v", i, st.allocated, got, st.trim)
		}
	}
}

// The trimmer stops when asked and leaves no goroutine (goleak, TestMain).
func TestTrimmerStops(t *testing.T) {
	stop := startTrimmer(context.Background(), time.Millisecond)
	stop()
}
