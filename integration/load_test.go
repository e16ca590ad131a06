package integration

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// load runs workers that each make one checked transfer after another
// until finish; every failed transfer is kept. Tests use it to prove that
// a fault or a change under load fails no connection.
type load struct {
	mu      sync.Mutex
	ok      int
	fails   []error
	changed chan struct{} // closed and replaced on every finished transfer
	stop    chan struct{}
	wg      sync.WaitGroup
}

// startLoad starts workers running transfer in a loop; each worker has its
// own seeded random source. The load is finished at cleanup at the latest
// (registered now, so it runs before the agents it uses stop).
func startLoad(t testing.TB, workers int, transfer func(worker int, rnd *rand.Rand) error) *load {
	l := &load{changed: make(chan struct{}), stop: make(chan struct{})}
	for i := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := transfer(i, rnd); err != nil {
					l.record(fmt.Errorf("worker %d: %w", i, err))
				} else {
					l.record(nil)
				}
			}
		}()
	}
	t.Cleanup(func() { l.finish() })
	return l
}

// record counts one finished transfer (a worker's, or one a test made
// itself beside the load).
func (l *load) record(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.fails = append(l.fails, fmt.Errorf("at %s: %w", time.Now().Format("15:04:05.000"), err))
	} else {
		l.ok++
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// echoLoad is a transfer of a random size up to 256 KiB through addr to an
// echo backend, checked by length and SHA-256.
func echoLoad(t testing.TB, addr string) func(int, *rand.Rand) error {
	return func(_ int, rnd *rand.Rand) error {
		n := 1 + rnd.IntN(256<<10)
		if err := echoCheck(t, addr, n); err != nil {
			return fmt.Errorf("%d bytes: %w", n, err)
		}
		return nil
	}
}

// waitOK waits until n more transfers have succeeded: the load really runs
// across each step of a test. It gives up after 60 s.
func (l *load) waitOK(t testing.TB, n int) {
	t.Helper()
	l.mu.Lock()
	want := l.ok + n
	l.mu.Unlock()
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		ok, fails, changed := l.ok, len(l.fails), l.changed
		l.mu.Unlock()
		if ok >= want {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("load: %d transfers ok, waiting for %d; %d failed", ok, want, fails)
		}
	}
}

// finish stops the workers, waits for them and returns the counts.
func (l *load) finish() (int, []error) {
	l.mu.Lock()
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.mu.Unlock()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, l.fails
}

// counts returns how many transfers have succeeded and failed so far.
func (l *load) counts() (ok, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, len(l.fails)
}
