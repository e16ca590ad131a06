package main

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Backend modes: the first byte a client sends picks what the backend does
// with the connection. Any byte other than modeSink and modeSource means
// echo, the first byte included, so "send one byte, read it back" works.
const (
	modeEcho   = 'e'
	modeSink   = 's' // read to EOF, then reply with the byte count (8 bytes, big endian)
	modeSource = 'o' // write until the client half-closes, then close
)

// backend is the service every contender forwards to. It lives in the bench
// process, so "direct" measures the load generator and backend alone.
type backend struct {
	ln       net.Listener
	accepted atomic.Int64 // connections accepted so far
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

func startBackend() (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.accept()
	return b, nil
}

func (b *backend) addr() string { return b.ln.Addr().String() }

// close stops accepting, cuts every open connection and waits for all
// goroutines.
func (b *backend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *backend) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// EMFILE and the like: connections wait in the backlog until
			// descriptors free up. Back off rather than spin or give up.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b.accepted.Add(1)
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			serveBackend(c.(*net.TCPConn))
			c.Close()
			b.mu.Lock()
			delete(b.conns, c)
			b.mu.Unlock()
		}()
	}
}

func serveBackend(c *net.TCPConn) {
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		return // a readiness probe or a client that gave up
	}
	switch first[0] {
	case modeSink:
		n, err := io.Copy(io.Discard, struct{ io.Reader }{c})
		if err != nil {
			return
		}
		var reply [8]byte
		binary.BigEndian.PutUint64(reply[:], uint64(n))
		c.Write(reply[:])
	case modeSource:
		serveSource(c)
	default:
		if _, err := c.Write(first[:]); err != nil {
			return
		}
		// Not io.Copy(c, c): TCP to TCP splices through a pipe, two more
		// descriptors held for as long as the connection idles.
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 8<<10))
	}
}

// serveSource writes until the client half-closes its side, then stops, so
// the client can drain to a clean EOF instead of cutting the stream.
func serveSource(c *net.TCPConn) {
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, struct{ io.Reader }{c})
		close(done)
	}()
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	for {
		select {
		case <-done:
			c.CloseWrite()
			return
		default:
		}
		if _, err := c.Write(buf); err != nil {
			<-done
			return
		}
	}
}
