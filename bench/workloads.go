package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// opBound caps every network operation of the load generator, so a stalled
// contender shows up as an error instead of a hung bench.
const opBound = 60 * time.Second

// errTally counts a workload's errors and keeps the first.
type errTally struct {
	mu    sync.Mutex
	n     int
	first error
}

func (t *errTally) add(err error) {
	if err == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n++; t.first == nil {
		t.first = err
	}
}

func (t *errTally) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

func dial(addr string, mode byte) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(opBound))
	if _, err := c.Write([]byte{mode}); err != nil {
		c.Close()
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// echoOne dials, sends one byte, reads it back and returns the connection.
func echoOne(addr string) (*net.TCPConn, error) {
	c, err := dial(addr, modeEcho)
	if err != nil {
		return nil, err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		c.Close()
		return nil, fmt.Errorf("read echo: %w", err)
	}
	return c, nil
}

// connRate runs workers that connect, echo one byte and close, for d.
// It also reports the agents' CPU milliseconds per connection.
func connRate(c *contender, workers int, d time.Duration, errs *errTally) map[string]float64 {
	addr := c.addr
	cpu0, cerr := cpuSeconds(c.pids())
	var mu sync.Mutex
	var lat []time.Duration
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				conn, err := echoOne(addr)
				if err != nil {
					errs.add(fmt.Errorf("connect-echo: %w", err))
					time.Sleep(time.Millisecond)
					continue
				}
				mine = append(mine, time.Since(t0))
				conn.Close()
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	cpu1, cerr1 := cpuSeconds(c.pids())
	us := micros(lat)
	out := map[string]float64{
		"conn-rate": float64(len(lat)) / time.Since(start).Seconds(),
		"conn-p50":  percentile(us, 50),
		"conn-p99":  percentile(us, 99),
	}
	if len(c.agents) > 0 && cerr == nil && cerr1 == nil && len(lat) > 0 {
		out["conn-cpu"] = (cpu1 - cpu0) * 1000 / float64(len(lat))
	}
	return out
}

// pingPong sends 64-byte messages on one connection and waits for each
// echo, after warm round trips that are not recorded. It stops after n
// round trips, or once limit has passed and at least minN are recorded.
//
// ready, if not nil, is called after the warm-up round trips, before the
// measured ones, and an error from it ends the run.
func pingPong(addr string, warm, n, minN int, limit time.Duration, ready func() error) ([]time.Duration, error) {
	c, err := dial(addr, modeEcho)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msg := bytes.Repeat([]byte{'p'}, 64)
	got := make([]byte, 64)
	// The mode byte comes back first.
	if _, err := io.ReadFull(c, got[:1]); err != nil {
		return nil, err
	}
	rtts := make([]time.Duration, 0, n)
	var deadline time.Time
	for i := -warm; i < n; i++ {
		if i == 0 {
			if ready != nil {
				c.SetDeadline(time.Time{}) // ready may wait long
				if err := ready(); err != nil {
					return nil, err
				}
			}
			deadline = time.Now().Add(limit)
		} else if i > 0 && i >= minN && time.Now().After(deadline) {
			break
		}
		t0 := time.Now()
		c.SetDeadline(t0.Add(opBound))
		if _, err := c.Write(msg); err != nil {
			return rtts, err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return rtts, fmt.Errorf("round trip %d: %w", i, err)
		}
		if i >= 0 {
			rtts = append(rtts, time.Since(t0))
		}
	}
	return rtts, nil
}

func latency(addr string, n int, limit time.Duration, errs *errTally) map[string]float64 {
	rtts, err := pingPong(addr, 50, n, n, limit, nil)
	errs.add(err)
	us := micros(rtts)
	if len(us) == 0 {
		return nil
	}
	return map[string]float64{
		"rtt-p50": percentile(us, 50),
		"rtt-p99": percentile(us, 99),
		"rtt-max": us[len(us)-1],
	}
}

// bulk runs n streams that upload into the sink (modeSink) or download
// from the source (modeSource) until stop closes. It returns the bytes the
// other end confirmed and the time until the last stream ended cleanly.
func bulk(addr string, n int, mode byte, stop <-chan struct{}, errs *errTally) (int64, time.Duration) {
	var total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Go(func() {
			c, err := dial(addr, mode)
			if err != nil {
				errs.add(err)
				return
			}
			defer c.Close()
			var moved int64
			if mode == modeSink {
				moved, err = upload(c, stop)
			} else {
				moved, err = download(c, stop)
			}
			errs.add(err)
			mu.Lock()
			total += moved
			mu.Unlock()
		})
	}
	wg.Wait()
	return total, time.Since(start)
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

func upload(c *net.TCPConn, stop <-chan struct{}) (int64, error) {
	buf := make([]byte, 64<<10)
	for !stopped(stop) {
		if _, err := c.Write(buf); err != nil {
			return 0, fmt.Errorf("upload: %w", err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		return 0, err
	}
	var reply [8]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		return 0, fmt.Errorf("upload: read byte count: %w", err)
	}
	return int64(binary.BigEndian.Uint64(reply[:])), nil
}

// download reads until stop, half-closes to tell the source to finish, and
// drains to EOF; a clean EOF is the only good ending.
func download(c *net.TCPConn, stop <-chan struct{}) (int64, error) {
	buf := make([]byte, 64<<10)
	var n int64
	halfClosed := false
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			if !halfClosed {
				return n, errors.New("download: EOF before the client half-closed")
			}
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("download: %w", err)
		}
		if !halfClosed && stopped(stop) {
			if err := c.CloseWrite(); err != nil {
				return n, err
			}
			halfClosed = true
		}
	}
}

// throughput moves bulk data for d and reports MB/s and the agents' CPU
// seconds per GiB moved.
func throughput(c *contender, key string, n int, mode byte, d time.Duration, errs *errTally) map[string]float64 {
	stop := make(chan struct{})
	t := time.AfterFunc(d, func() { close(stop) })
	defer t.Stop()
	cpu0, cerr := cpuSeconds(c.pids())
	moved, took := bulk(c.addr, n, mode, stop, errs)
	cpu1, cerr1 := cpuSeconds(c.pids())
	out := map[string]float64{key: float64(moved) / 1e6 / took.Seconds()}
	if len(c.agents) > 0 && cerr == nil && cerr1 == nil && moved > 0 {
		out["cpu-"+key] = (cpu1 - cpu0) / (float64(moved) / (1 << 30))
	}
	return out
}

// holKind is which ping headOfLine measures.
type holKind int

const (
	holAfter holKind = iota // through the contender, connected once the bulk runs
	holFirst                // through the contender, connected before the bulk
	holFloor                // straight to the echo server, beside the contender's bulk
)

// headOfLine measures the 64-byte round trip while 4 uploads and 4
// downloads run through the same contender: pings round trips, or as many
// as fit in d but at least pings/25 (a queue behind bulk data can make each
// one take tens of milliseconds). The bulk takes the contender's first
// route, the ping its second (c.echoAddr).
//
// The ping is one of three kinds (holKind). holAfter connects once the
// bulk streams run. holFirst is connected (and warmed up) before the bulk
// streams start, and its figures are keyed hol-first-*: a connection that
// was there before the bulk transfer began. (mtunnel puts a new stream on a
// quiet session, or on a spare it dials when all are busy; one made before
// the bulk shares its session with bulk streams.) holFloor pings the
// helper's echo server straight, through no contender, while the bulk runs
// through this one (hol-floor-*): what the machine itself gives a 64-byte
// round trip under the load this contender's bulk transfer puts on it, the
// floor under the other two figures.
//
// The ping client and its echo server run in a helper process of their
// own (pinghelper.go). In this process their goroutines queued behind the
// 8 busy bulk clients and the bulk backend: Go's run queue is FIFO and
// gives a goroutine woken by the network no priority, while the kernel
// does favour a process that mostly sleeps. Measured with mtunnel, of a
// 3-10 ms round trip 0.6-2.4 ms (median) passed between the server agent
// writing the ping to the bench's backend and reading the echo back, and
// more on the client side; even direct TCP showed a 6-21 ms p99, all of it
// the harness. With the helper, direct's p99 is 20-30 µs (2 rounds).
func headOfLine(c *contender, ping *pingHelper, pings int, d time.Duration, kind holKind, errs *errTally) map[string]float64 {
	key := [...]string{holAfter: "hol-", holFirst: "hol-first-", holFloor: "hol-floor-"}[kind]
	if kind == holFirst {
		if err := ping.hold(c.echoAddr, 5, pings, max(1, pings/25), d); err != nil {
			errs.add(err)
			return nil
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var moved [2]int64
	var took [2]time.Duration
	for i, mode := range []byte{modeSink, modeSource} {
		wg.Go(func() { moved[i], took[i] = bulk(c.addr, 4, mode, stop, errs) })
	}
	time.Sleep(200 * time.Millisecond) // let the bulk streams ramp up
	var rtts []time.Duration
	var err error
	switch kind {
	case holFirst:
		rtts, err = ping.release()
	case holFloor:
		rtts, err = ping.ping(ping.echo, 5, pings, max(1, pings/25), d)
	default:
		rtts, err = ping.ping(c.echoAddr, 5, pings, max(1, pings/25), d)
	}
	errs.add(err)
	close(stop)
	wg.Wait()
	us := micros(rtts)
	if len(us) == 0 {
		return nil
	}
	return map[string]float64{
		key + "p50":  percentile(us, 50),
		key + "p99":  percentile(us, 99),
		key + "bulk": float64(moved[0]+moved[1]) / 1e6 / max(took[0], took[1]).Seconds(),
	}
}
