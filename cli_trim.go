package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// startTrimmer returns memory to the OS when the agent goes quiet after a
// burst of traffic. Go hands freed pages back only gradually, so without
// this an agent that carried a burst keeps that peak resident for a long
// time while its connections sit idle (FIELD-NOTES: ~410 KiB per idle
// connection after a 64 KiB burst). It forces one GC per burst: checked
// every interval, a burst is over when less than minBurst was allocated
// since the last check. The returned func stops it and waits.
func startTrimmer(ctx context.Context, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		trimWhenIdle(ctx, interval)
	}()
	return func() { cancel(); <-done }
}

const minBurst = 4 << 20 // bytes allocated between checks that count as traffic

func trimWhenIdle(ctx context.Context, interval time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocated := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	state := trimState{last: allocated()}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if state.step(allocated()) {
			debug.FreeOSMemory()
			state.last = allocated()
		}
	}
}

// trimState decides when to trim: after a check period with at least
// minBurst allocated, the first quiet one.
type trimState struct {
	last uint64 // cumulative bytes allocated at the previous check
	busy bool
}

func (s *trimState) step(allocated uint64) (trim bool) {
	delta := allocated - s.last
	s.last = allocated
	if delta >= minBurst {
		s.busy = true
		return false
	}
	trim, s.busy = s.busy, false
	return trim
}
