package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// startProcsTuner runs the agent with GOMAXPROCS 1 while it needs less than
// about one core, and with the runtime's default (one per CPU) when it
// needs more. The returned func stops it and waits.
//
// Why: one message through an agent is two goroutine handoffs (the
// copier to yamux's send loop, yamux's receive loop to the copier). With
// more than one P, each handoff also wakes an idle P's thread (a futex
// call on the message's path), which then spins on another core looking
// for work, taking that core from the app or the other agent. Measured in
// `make bench` on 2 cores: a 64-byte round trip's p50 was 0.63-0.83x
// stunnel's with GOMAXPROCS=1 and 1.06-1.18x with 2, while 8 parallel bulk
// streams were 5-13% slower with 1. A quiet tunnel, the usual state of a
// database's, gets the first; a busy one the second.
//
// It switches up as soon as a check period (tick) used at least upAt of a
// core, and down after downAfter periods in a row under downAt; the gap
// between the two keeps it from flapping. It does nothing when the
// machine has one CPU or GOMAXPROCS was set in the environment.
//
// It also judges, every tick, whether busy sessions run beside quiet ones
// with streams, and then gives the busy ones a lower priority
// (tunnel.JudgePriority) and the agent tunnel.LowPriorityProcs Ps, if
// bulkNice is above 0 and this process may restore thread priorities.
// busyRate is --busy-rate: bytes a second above which a session is busy;
// 0: tunnel.DefaultBusyRate; negative (off): no session is ever busy.
func startProcsTuner(ctx context.Context, log *slog.Logger, tick time.Duration, bulkNice int, busyRate int64) (stop func()) {
	if runtime.GOMAXPROCS(0) < 2 || os.Getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	if busyRate < 0 {
		bulkNice = 0 // nothing is busy, so nothing is lowered
	}
	if err := tunnel.SetBulkNice(bulkNice); err != nil {
		log.Info("bulk sessions keep their thread priority", "err", err)
	}
	runtime.GOMAXPROCS(1)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tuneProcs(ctx, log, tick, float64(max(busyRate, 0)))
	}()
	return func() { cancel(); <-done }
}

const (
	procsUpAt      = 0.7  // cores used in a period that call for more Ps
	procsDownAt    = 0.35 // cores used in a period that count as quiet
	procsDownAfter = 8    // quiet periods in a row before going back to one P
)

func tuneProcs(ctx context.Context, log *slog.Logger, tick time.Duration, busyRate float64) {
	defer runtime.SetDefaultGOMAXPROCS()
	var s procsState
	last, at := cpuTime(), time.Now()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		used, now := cpuTime(), time.Now()
		cores := (used - last).Seconds() / now.Sub(at).Seconds()
		last, at = used, now
		changed := s.step(cores)
		if low := tunnel.JudgePriority(now, busyRate); low != s.low {
			s.low, changed = low, true
			log.Debug("bulk sessions at a lower priority", "sessions", low)
		}
		if c := tunnel.LoweredCopiers(); c != s.copiers {
			s.copiers, changed = c, true
		}
		if !changed {
			continue
		}
		switch {
		case s.low > 0 || s.copiers > 0:
			runtime.GOMAXPROCS(tunnel.LowPriorityProcs(runtime.NumCPU(), s.low, s.copiers))
		case s.many:
			runtime.SetDefaultGOMAXPROCS()
		default:
			runtime.GOMAXPROCS(1)
		}
		log.Debug("GOMAXPROCS changed", "gomaxprocs", runtime.GOMAXPROCS(0), "cores_used", cores)
	}
}

// procsState decides from the cores used in each period whether to run
// with many Ps.
type procsState struct {
	low     int // busy sessions running at a lower priority (tunnel.JudgePriority)
	copiers int // copiers running at a lower priority (tunnel.LoweredCopiers)
	many    bool
	quiet   int // periods in a row under procsDownAt
}

func (s *procsState) step(cores float64) (changed bool) {
	if !s.many {
		s.many = cores >= procsUpAt
		return s.many
	}
	if cores >= procsDownAt {
		s.quiet = 0
		return false
	}
	s.quiet++
	if s.quiet < procsDownAfter {
		return false
	}
	s.many, s.quiet = false, 0
	return true
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
