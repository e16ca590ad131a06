package integration

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// faultProxy forwards TCP between the agents and can misbehave the way
// links do: blackhole stops passing bytes in both directions without
// closing anything (a peer that vanished, a cable pulled, a firewall that
// drops), and a rate limit makes a slow link that a bulk stream saturates.
type faultProxy struct {
	addr string
	rate int // bytes per second per direction; 0: unlimited

	mu    sync.Mutex
	open  chan struct{} // closed while passing; replaced by blackhole
	conns []net.Conn
}

func newFaultProxy(t testing.TB, target string, rate int) *faultProxy {
	p := &faultProxy{rate: rate, open: make(chan struct{})}
	close(p.open)
	p.addr = backend(t, func(c *net.TCPConn) {
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		p.track(c, up)
		done := make(chan struct{})
		go func() { p.pump(up, c); close(done) }()
		p.pump(c, up)
		<-done
	})
	// Before backend's cleanup waits for the handlers.
	t.Cleanup(p.closeAll)
	return p
}

func (p *faultProxy) track(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, cs...)
}

// blackhole stops forwarding: bytes already read are held, nothing more
// is read or written, and no connection is closed.
func (p *faultProxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = make(chan struct{}) // never closed
}

func (p *faultProxy) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *faultProxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	select {
	case <-p.open:
	default:
		close(p.open) // let blocked pumps see the closed sockets
	}
}

// pump copies src to dst, waiting at the gate before each write and
// pacing to the rate (the sleep shapes traffic; it synchronises nothing).
func (p *faultProxy) pump(dst, src net.Conn) {
	chunk := 32 << 10
	if p.rate > 0 {
		chunk = max(1024, p.rate/100) // 10 ms of traffic
	}
	buf := make([]byte, chunk)
	start, sent := time.Now(), 0
	for {
		n, err := src.Read(buf)
		if n > 0 {
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += n
			if p.rate > 0 {
				due := start.Add(time.Duration(float64(sent) / float64(p.rate) * float64(time.Second)))
				time.Sleep(time.Until(due))
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok && err == io.EOF {
				tc.CloseWrite()
			}
			return
		}
	}
}
