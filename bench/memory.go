package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// raiseFileLimit lifts RLIMIT_NOFILE to want if it can (the agents and
// stunnel inherit it) and returns the soft limit in force. Raising the hard
// limit takes CAP_SYS_RESOURCE; without it the soft limit goes as high as
// the hard one allows.
func raiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	next := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		lim.Cur = lim.Max
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err2 != nil {
			return 0, err2
		}
		return lim.Cur, fmt.Errorf("RLIMIT_NOFILE: want %d, hard limit %d: %w", want, lim.Max, err)
	}
	return want, nil
}

// maxIdle is how many idle connections fit under a descriptor limit: the
// bench holds two per connection (its end and the backend's), and so does
// each stunnel process (app side and TLS side), which also refuses clients
// beyond limit*125/256 (stunnel.c, max_clients). 1,000 descriptors stay
// spare for listeners, pipes and the other workloads' stragglers.
func maxIdle(limit uint64) int {
	n := min((int(limit)-1000)/2, int(limit)*125/256-100)
	return max(n/100*100, 100)
}

// forEach runs f(0) ... f(n-1) on a few workers. It gives up on the rest
// after 100 errors: a contender that fails that often has nothing left to
// measure, and each failure may take a timeout.
func forEach(n int, f func(i int) error, errs *errTally) {
	bail := errs.count() + 100
	work := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range work {
				if errs.count() < bail {
					errs.add(f(i))
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// idleMemory opens n connections, each checked with a one-byte echo, and
// reports the agents' RSS growth per connection once they are idle; then
// echoes burst bytes on each and measures again, since buffers grown by
// traffic may stay behind (FIELD-NOTES: "Measure idle memory after traffic
// too"). Direct has no agents: it runs the same steps and reports nothing.
func idleMemory(c *contender, n, burst int, errs *errTally) map[string]float64 {
	pids := c.pids()
	settle(pids, 3*time.Second)
	before, err := rssKiB(pids)
	errs.add(err)

	var mu sync.Mutex
	conns := make([]*net.TCPConn, 0, n)
	forEach(n, func(int) error {
		conn, err := echoOne(c.addr)
		if err != nil {
			return fmt.Errorf("open idle connection: %w", err)
		}
		mu.Lock()
		conns = append(conns, conn)
		mu.Unlock()
		return nil
	}, errs)
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
		settle(pids, 5*time.Second)
	}()
	out := map[string]float64{}
	measure := func(key string) {
		settle(pids, 5*time.Second)
		rss, err := rssKiB(pids)
		errs.add(err)
		if len(pids) > 0 && len(conns) > 0 && err == nil {
			out[key] = (rss - before) / float64(len(conns))
		}
	}
	measure("idle-rss")
	if burst > 0 {
		payload := bytes.Repeat([]byte{'b'}, burst)
		forEach(len(conns), func(i int) error { return echoBurst(conns[i], payload) }, errs)
		measure("idle-rss-burst")
	}
	return out
}

// echoBurst writes payload and reads it back at the same time (an echo
// larger than the socket buffers would deadlock otherwise).
func echoBurst(c *net.TCPConn, payload []byte) error {
	c.SetDeadline(time.Now().Add(opBound))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		werr <- err
	}()
	got := make([]byte, len(payload))
	_, err := io.ReadFull(c, got)
	if err2 := <-werr; err == nil {
		err = err2
	}
	if err == nil && !bytes.Equal(got, payload) {
		err = fmt.Errorf("burst echo: %d bytes came back altered", len(payload))
	}
	if err != nil {
		return fmt.Errorf("burst echo: %w", err)
	}
	return nil
}
