package main

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestProcsState(t *testing.T) {
	var s procsState
	type step struct {
		cores float64
		many  bool
	}
	repeat := func(n int, st step) []step {
		var out []step
		for range n {
			out = append(out, st)
		}
		return out
	}
	steps := slices.Concat(
		[]step{{0.1, false}, {0.69, false}}, // under upAt: stays on one P
		[]step{{0.7, true}},                 // one busy period: many at once
		[]step{{0.5, true}},                 // between the thresholds: stays
		repeat(procsDownAfter-1, step{0.2, true}),
		[]step{{0.4, true}}, // one busier period restarts the count
		repeat(procsDownAfter-1, step{0.1, true}),
		[]step{{0.1, false}}, // the procsDownAfter-th quiet period in a row
	)
	many := false
	for i, st := range steps {
		changed := s.step(st.cores)
		if s.many != st.many || changed != (st.many != many) {
			t.Fatalf("step %d (%.2f cores): many = %v, changed = %v; want many = %v", i, st.cores, s.many, changed, st.many)
		}
		many = st.many
	}
}

// The tuner starts the process on one P, gives it all of them while it
// burns more than a core, and restores the runtime's default when stopped.
func TestProcsTuner(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs 2 CPUs")
	}
	want := runtime.GOMAXPROCS(0)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	stop := startProcsTuner(context.Background(), log, 20*time.Millisecond, 0, 0)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		stop()
		t.Fatalf("GOMAXPROCS after start = %d, want 1", got)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				for i := 0; i < 1e5; i++ {
					_ = i * i
				}
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.GOMAXPROCS(0) == 1 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	got := runtime.GOMAXPROCS(0)
	close(done)
	wg.Wait()
	stop()
	if got != want {
		t.Errorf("GOMAXPROCS under load = %d, want %d", got, want)
	}
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Errorf("GOMAXPROCS after stop = %d, want %d", got, want)
	}
}
