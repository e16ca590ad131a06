package tunnel

import (
	"bytes"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestWorkersReuse: a worker that finished waits for the next function and
// runs it on the same goroutine; Close ends the idle ones (goleak checks
// that none is left).
func TestWorkersReuse(t *testing.T) {
	var w Workers
	ids := make(chan uint64, 2)
	done := make(chan struct{})
	w.Go(func() { ids <- goroutineID(); done <- struct{}{} })
	<-done
	// The worker is now between f returning and waiting for the next; Go
	// may not find it idle yet, so hand functions over until one lands on
	// it (each extra one starts a worker that Close ends).
	first := <-ids
	var wg sync.WaitGroup
	reused := false
	for range 1000 {
		wg.Add(1)
		w.Go(func() { defer wg.Done(); ids <- goroutineID() })
		wg.Wait()
		if reused = <-ids == first; reused {
			break
		}
	}
	if !reused {
		t.Fatal("1000 functions given to Go, none ran on the idle worker")
	}
	w.Close()
	w.Go(func() { close(done) }) // after Close: still runs
	<-done
}

// TestWorkersLinger: an idle worker ends by itself after Linger.
func TestWorkersLinger(t *testing.T) {
	w := Workers{Linger: time.Millisecond}
	w.Go(func() {})
	w.wg.Wait() // returns only once the worker has ended on its own
	w.Close()
}

// goroutineID reads the calling goroutine's number from its stack header
// ("goroutine 42 [running]:").
func goroutineID() uint64 {
	b := make([]byte, 64)
	b = b[:runtime.Stack(b, false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}
