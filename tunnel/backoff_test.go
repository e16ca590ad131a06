package tunnel

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestBackoffBounds: the bound doubles from Base to Max and stays there,
// a delay is drawn in [0, bound) (full jitter), and reset starts again
// from Base.
func TestBackoffBounds(t *testing.T) {
	var asked []int64
	top := func(n int64) int64 { asked = append(asked, n); return n - 1 } // the largest draw allowed
	b := backoff{cfg: Reconnect{Rand: top}.withDefaults()}
	ms := time.Millisecond
	want := []time.Duration{200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 6400 * ms, 12800 * ms, 25600 * ms, 30 * time.Second, 30 * time.Second}
	for i, bound := range want {
		if got := b.next(); got != bound-1 {
			t.Fatalf("delay %d = %v with the largest draw, want just under %v", i+1, got, bound)
		}
		if asked[i] != int64(bound) {
			t.Fatalf("delay %d drawn below %v, want below %v", i+1, time.Duration(asked[i]), bound)
		}
	}
	b.reset()
	if got := b.next(); got != 200*ms-1 {
		t.Fatalf("after reset: %v, want just under the base again", got)
	}
}

// TestBackoffCapNoOverflow: after very many losses the bound is the cap,
// also for a cap near the largest duration, where doubling overflows.
func TestBackoffCapNoOverflow(t *testing.T) {
	for _, cfg := range []Reconnect{
		{Base: time.Millisecond, Max: 30 * time.Second},
		{Base: time.Hour, Max: time.Duration(1<<63 - 1)},
		{Base: 3 * time.Second, Max: 3 * time.Second},
	} {
		b := backoff{cfg: cfg.withDefaults(), losses: 1000}
		if got := b.bound(); got != cfg.Max {
			t.Errorf("%v..%v after 1000 losses: bound %v, want the cap", cfg.Base, cfg.Max, got)
		}
	}
}

// TestBackoffJitter: with a seeded source, delays are spread over
// [0, bound) rather than stuck at one end, and each stays below its bound.
func TestBackoffJitter(t *testing.T) {
	src := rand.New(rand.NewPCG(1, 2))
	b := backoff{cfg: Reconnect{Base: time.Second, Max: time.Second, Rand: src.Int64N}.withDefaults()}
	var low, high int
	for range 1000 {
		d := b.next()
		if d < 0 || d >= time.Second {
			t.Fatalf("delay %v outside [0, 1s)", d)
		}
		if d < 250*time.Millisecond {
			low++
		}
		if d >= 750*time.Millisecond {
			high++
		}
	}
	// Uniform: about 250 in each quarter.
	if low < 180 || high < 180 {
		t.Fatalf("delays not spread: %d in the lowest quarter, %d in the highest, want about 250 each", low, high)
	}
}

func TestReconnectValidate(t *testing.T) {
	for _, tt := range []struct {
		r  Reconnect
		ok bool
	}{
		{Reconnect{}, true},
		{Reconnect{Base: time.Second, Max: time.Minute}, true},
		{Reconnect{Base: time.Minute}, true}, // the default cap rises to the base
		{Reconnect{Base: time.Minute, Max: time.Second}, false},
		{Reconnect{Max: -time.Second}, false},
		{Reconnect{Waiting: -1}, false},
	} {
		if err := tt.r.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: Validate = %v", tt.r, err)
		}
	}
	if got := (Reconnect{Base: time.Minute}).withDefaults().Max; got != time.Minute {
		t.Errorf("default cap with a 1m base = %v, want 1m", got)
	}
}
