package integration

// Helpers for the reconnect and several-server tests: a "server" that is
// down but listening, and a record of the backoff's random draws.

import (
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// downServer listens on 127.0.0.1:0 and closes every connection at once:
// a server agent that is down (the client's TLS handshake meets EOF) on an
// address that stays ours, so a real server can take it over later. Each
// accepted connection's time goes to attempts.
type downServer struct {
	ln       net.Listener
	attempts chan time.Time
	done     chan struct{}
}

func startDownServer(t testing.TB) *downServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &downServer{ln: ln, attempts: make(chan time.Time, 1000), done: make(chan struct{})}
	go func() {
		defer close(d.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			select {
			case d.attempts <- time.Now():
			default:
			}
		}
	}()
	t.Cleanup(d.close)
	return d
}

func (d *downServer) addr() string { return d.ln.Addr().String() }

// close stops listening (the address is free for a real server) and waits
// for the accept loop.
func (d *downServer) close() {
	d.ln.Close()
	<-d.done
}

// next waits for the next connection attempt.
func (d *downServer) next(t testing.TB) time.Time {
	t.Helper()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	select {
	case at := <-d.attempts:
		return at
	case <-timeout.C:
		t.Fatal("no connection attempt within 20s")
		return time.Time{}
	}
}

// draws is a seeded random source for tunnel.Reconnect.Rand that keeps
// every draw: the bound asked for and the delay returned.
type draws struct {
	mu     sync.Mutex
	src    *rand.Rand
	bounds []time.Duration
	delays []time.Duration
}

func newDraws(seed uint64) *draws { return &draws{src: rand.New(rand.NewPCG(seed, seed))} }

func (d *draws) Int64N(n int64) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.src.Int64N(n)
	d.bounds = append(d.bounds, time.Duration(n))
	d.delays = append(d.delays, time.Duration(v))
	return v
}

func (d *draws) snapshot() (bounds, delays []time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Duration(nil), d.bounds...), append([]time.Duration(nil), d.delays...)
}

// freeAddr returns a loopback address nothing listens on: a server that
// is down and refuses connections.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
