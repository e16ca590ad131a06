package tunnel

import (
	"errors"
	"math/rand/v2"
	"time"
)

// Reconnect tunes how the pool redials a server whose session ended or
// whose dial failed. The zero value is the default described on each field.
type Reconnect struct {
	// Base bounds the delay before the first redial; each further loss in
	// a row doubles the bound. Default 200 ms.
	Base time.Duration
	// Max caps the bound, so a server that is down for long is tried about
	// every Max/2 on average. Default 30 s.
	Max time.Duration
	// Healthy is how long a session must stay up for the backoff to start
	// again from Base: a server that accepts sessions and drops them at
	// once is not redialled at full speed. Default 30 s (the default Max).
	Healthy time.Duration
	// Waiting bounds the delay while app connections wait for a session:
	// the pool then dials again at least this often, so a server that comes
	// back is found within about Waiting even when the backoff has grown to
	// Max, while a dead server gets at most one dial per Waiting per client
	// agent. Default 1 s.
	Waiting time.Duration
	// Linger is how long a session beyond the pool's floor (one dialled
	// because every session was at its stream cap) may carry no stream
	// before the pool lets it go. Default 30 s.
	Linger time.Duration
	// Rand returns a uniform random number in [0, n) for n > 0. Nil means
	// math/rand/v2's Int64N. Tests inject a seeded source.
	Rand func(n int64) int64
}

const (
	defaultReconnectBase    = 200 * time.Millisecond
	defaultReconnectMax     = 30 * time.Second
	defaultReconnectHealthy = 30 * time.Second
	defaultReconnectWaiting = time.Second
)

// Validate reports negative durations and a base above the cap.
func (r Reconnect) Validate() error {
	if r.Base < 0 || r.Max < 0 || r.Healthy < 0 || r.Waiting < 0 || r.Linger < 0 {
		return errors.New("reconnect delays must not be negative")
	}
	if r.Base > 0 && r.Max > 0 && r.Base > r.Max {
		return errors.New("reconnect base delay is above the maximum")
	}
	return nil
}

func (r Reconnect) withDefaults() Reconnect {
	if r.Base == 0 {
		r.Base = defaultReconnectBase
	}
	if r.Max == 0 {
		r.Max = max(defaultReconnectMax, r.Base)
	}
	if r.Healthy == 0 {
		r.Healthy = defaultReconnectHealthy
	}
	if r.Waiting == 0 {
		r.Waiting = defaultReconnectWaiting
	}
	if r.Linger == 0 {
		r.Linger = 30 * time.Second
	}
	if r.Rand == nil {
		r.Rand = rand.Int64N
	}
	return r
}

// backoff computes redial delays: exponential growth with "full jitter",
// the n-th delay in a row uniform in [0, min(Max, Base*2^(n-1))). Full
// jitter spreads the redials of many clients after a server restart and
// keeps the total work lowest of the variants compared in Marc Brooker,
// "Exponential Backoff And Jitter", AWS Architecture Blog, 2015.
// It is not safe for concurrent use; the pool guards it with its mutex.
type backoff struct {
	cfg    Reconnect // with defaults applied
	losses int       // losses in a row since the last reset
}

// bound is the upper bound of the next delay.
func (b *backoff) bound() time.Duration {
	d := b.cfg.Base
	for i := 0; i < b.losses && d < b.cfg.Max; i++ {
		if d > b.cfg.Max/2 {
			return b.cfg.Max // doubling would pass the cap (or overflow)
		}
		d *= 2
	}
	return min(d, b.cfg.Max)
}

// next counts one more loss and returns the delay before the next dial.
func (b *backoff) next() time.Duration {
	bound := b.bound()
	b.losses++
	return time.Duration(b.cfg.Rand(int64(bound)))
}

// reset starts again from Base.
func (b *backoff) reset() { b.losses = 0 }
