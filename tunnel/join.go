package tunnel

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ErrSessionLost is the error of a join whose session died: yamux reports
// that as a clean EOF on every stream, which must not reach the app as one.
var ErrSessionLost = errors.New("tunnel session lost")

// ErrHalfCloseTimeout ends a join whose remaining direction moved no byte
// for JoinConfig.HalfCloseTimeout after the other direction ended.
var ErrHalfCloseTimeout = errors.New("half-closed stream idle too long")

// ErrIdleTimeout ends a join in which no byte moved either way for
// JoinConfig.IdleTimeout.
var ErrIdleTimeout = errors.New("stream idle too long")

// JoinConfig bounds a joined stream. The zero value is usable.
type JoinConfig struct {
	// IdleTimeout cuts (resets) a stream in which no byte moved in either
	// direction for this long, checked every quarter of it. Default 0: no
	// limit, since database pools keep idle connections for hours and a
	// dead peer is found by the session's keepalive anyway.
	IdleTimeout time.Duration
	// HalfCloseTimeout: once one direction has ended, the other is cut
	// after this long without a byte moving (each byte extends it).
	// Default 5 minutes.
	HalfCloseTimeout time.Duration
	// Prelude, if set, is run on the stream before any byte is copied from
	// it to the local side; an error aborts the join. The client agent uses
	// it to read the server's response header while app bytes already flow
	// the other way.
	Prelude func(io.Reader) error
	// Sent and Received, if set, are told of every write as it happens:
	// Sent of bytes from the local side into the stream, Received of bytes
	// from the stream to the local side (the split of JoinResult). Metrics
	// thus see a long-lived stream's traffic before it ends. They run on
	// the copy path and must be cheap (an atomic add).
	Sent, Received func(n int64)
	// Go, if set, starts the second copier (Workers.Go); default a new
	// goroutine.
	Go func(func())
}

// JoinResult reports how a join ended.
type JoinResult struct {
	Sent     int64 // bytes from the local side into the stream
	Received int64 // bytes from the stream to the local side
	// Err is nil when both directions ended with an orderly EOF. Otherwise
	// it is the first failure, and the local side was reset.
	Err error
}

// Join copies between a local connection (an app or a target) and a tunnel
// stream until both directions have ended, and returns only then, with both
// closed. It is the only copy loop of mtunnel.
//
// Each direction half-closes its destination when its source ends (local
// EOF -> stream FIN; stream FIN -> CloseWrite on local), so protocols that
// shut down one direction keep working. An error in either direction, or the
// death of the session (which yamux reports as EOF), resets the local
// connection so the app sees a failure, never a clean end of data.
func Join(local net.Conn, stream *Stream, cfg JoinConfig) JoinResult {
	j := &joiner{local: local, stream: stream, timeout: cmp.Or(cfg.HalfCloseTimeout, 5*time.Minute)}
	up := &copier{name: "local->stream", j: j, src: local, dst: stream, counted: cfg.Sent}
	down := &copier{name: "stream->local", j: j, src: stream, dst: local, prelude: cfg.Prelude, counted: cfg.Received}
	up.other, down.other = down, up
	// One direction runs in the caller's goroutine: one goroutine fewer
	// per connection, and idle connections are what there are most of.
	if cfg.IdleTimeout > 0 {
		stop := j.watchIdle(cfg.IdleTimeout, up, down)
		defer stop()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	if cfg.Go != nil {
		cfg.Go(func() { up.run(&wg, up.endUp) })
	} else {
		go up.run(&wg, up.endUp)
	}
	down.run(&wg, down.endDown)
	wg.Wait()
	local.Close()
	stream.Close()
	stream.done()
	return JoinResult{Sent: up.n.Load(), Received: down.n.Load(), Err: j.err}
}

type joiner struct {
	local   net.Conn
	stream  *Stream
	timeout time.Duration

	halfClosed atomic.Bool
	abortOnce  sync.Once
	err        error // written once in abort, read after wg.Wait
}

// abort ends both directions at once and resets both sides: the local
// connection with an RST, the stream with a yamux RST that the peer agent
// turns into an RST on its own connection. A failure therefore reaches the
// other end as a reset, never as a clean end of truncated data.
func (j *joiner) abort(err error) {
	j.abortOnce.Do(func() {
		if !errors.Is(err, ErrSessionLost) && j.stream.Session().IsClosed() {
			// Reads and writes of a dead session's streams fail with
			// whatever woke them (wakeStreams' deadline, a reset): the
			// cause is the session.
			err = fmt.Errorf("%w (%w)", ErrSessionLost, err)
		}
		j.err = err
		Reset(j.local)
		j.stream.Reset()
		j.stream.SetDeadline(time.Now()) // wake a blocked Read or Write
	})
}

// watchIdle aborts the join when neither copier moved a byte for idle. It
// compares byte counts every quarter of idle rather than reading the clock
// on every read.
func (j *joiner) watchIdle(idle time.Duration, up, down *copier) (stop func()) {
	every := max(idle/4, time.Millisecond)
	var (
		mu      sync.Mutex // orders the callback after t is set and after stop
		t       *time.Timer
		stopped bool
		last    int64 = -1
		quiet   time.Duration
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		if n := up.n.Load() + down.n.Load(); n != last {
			last, quiet = n, 0
		} else if quiet += every; quiet >= idle {
			j.abort(fmt.Errorf("%w (%s)", ErrIdleTimeout, idle))
			return
		}
		t.Reset(every)
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// copier is one direction of a join. A named type keeps the two goroutines
// recognisable in stack dumps.
type copier struct {
	name    string
	j       *joiner
	src     io.Reader
	dst     io.Writer
	other   *copier
	prelude func(io.Reader) error
	counted func(int64) // nil: not wanted
	n       atomic.Int64
}

type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

func (c *copier) run(wg *sync.WaitGroup, end func(error)) {
	defer wg.Done()
	if c.prelude != nil {
		if err := c.prelude(c.src); err != nil {
			c.j.abort(err)
			return
		}
	}
	end(c.copy())
}

// copy moves bytes until EOF (nil) or an error, with plain Read/Write so
// that neither side's ReadFrom/WriteTo can bypass the buffer.
//
// An idle connection should hold little memory (FIELD-NOTES: a copier
// blocked in Read holds its buffer). So a copier waits for data with a small
// buffer of its own and takes a 128 KiB pooled buffer only while data keeps
// filling the small one, giving it back after the first short read, which
// means the source is drained and the next Read will likely block. After a
// short read followed by shrinkAfter of quiet it also releases a yamux
// stream's emptied receive buffer (Stream.Shrink).
func (c *copier) copy() error {
	var small [smallBuf]byte
	var big *[]byte
	defer func() {
		if big != nil {
			buffers.Put(big)
		}
	}()
	// yamux keeps a stream's emptied receive buffer until Shrink; shrinking
	// after every drained read would make it reallocate for each frame of a
	// bulk flow, so it happens once the stream has been quiet a while.
	var prio copierPriority // priority.go: bulk copiers beside quiet ones
	if s := c.j.stream.sess; s != nil {
		prio.session = s.activity
	}
	defer prio.done()
	var quiet *time.Timer
	if s, ok := c.src.(interface{ Shrink() }); ok {
		quiet = time.AfterFunc(time.Hour, s.Shrink)
		quiet.Stop()
		defer quiet.Stop()
	}
	for {
		if c.j.halfClosed.Load() {
			c.extendDeadlines()
		}
		buf := small[:]
		if big != nil {
			buf = *big
		}
		nr, rerr := c.src.Read(buf)
		if nr > 0 {
			nw, werr := c.dst.Write(buf[:nr])
			c.n.Add(int64(nw))
			if c.counted != nil && nw > 0 {
				c.counted(int64(nw))
			}
			if werr != nil {
				return c.timeoutOr(fmt.Errorf("%s: write: %w", c.name, werr))
			}
		}
		if nr == len(buf) {
			// A full read: a bulk flow whose source never runs dry would
			// keep this goroutine on the CPU until the scheduler preempts
			// it (10 ms), while an interactive stream's goroutine waits
			// behind it. Yielding per buffer keeps streams fair.
			runtime.Gosched()
		}
		prio.observe(nr, nr == len(buf), big != nil)
		switch {
		case big == nil && nr == len(buf):
			big = buffers.Get().(*[]byte)
		case nr < len(buf):
			// The source is drained: give the big buffer back, and have
			// yamux drop the stream's emptied receive buffer if nothing
			// more comes soon, or an idle stream keeps what its last burst
			// grew (FIELD-NOTES).
			if big != nil {
				buffers.Put(big)
				big = nil
			}
			if quiet != nil {
				quiet.Reset(shrinkAfter)
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return c.timeoutOr(fmt.Errorf("%s: read: %w", c.name, rerr))
		}
	}
}

// smallBuf is the buffer a copier waits with: it holds a whole small
// message (a query, a ping) so that interactive traffic never needs the big
// buffer.
const smallBuf = 2 << 10

// shrinkAfter is how long a stream must be quiet before its receive buffer
// is released.
const shrinkAfter = time.Second

func (c *copier) timeoutOr(err error) error {
	var ne net.Error
	if c.j.halfClosed.Load() && errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w (%s): %w", ErrHalfCloseTimeout, c.j.timeout, err)
	}
	return err
}

func (c *copier) extendDeadlines() {
	t := time.Now().Add(c.j.timeout)
	c.src.(deadliner).SetReadDeadline(t)
	c.dst.(deadliner).SetWriteDeadline(t)
}

// halfClose marks the join half-closed and bounds the other direction,
// which may be blocked in Read with no deadline.
func (c *copier) halfClose() {
	c.j.halfClosed.Store(true)
	c.other.extendDeadlines()
}

// endUp finishes local->stream: the app (or target) finished sending, so
// the stream gets a FIN and the peer passes it on as a half-close.
func (c *copier) endUp(err error) {
	if err != nil {
		c.j.abort(err)
		return
	}
	c.j.stream.Close()
	c.halfClose()
}

// endDown finishes stream->local. yamux ends every stream with EOF when the
// whole session dies, so an EOF is only a FIN if the session is still up.
func (c *copier) endDown(err error) {
	if err == nil && c.j.stream.Session().IsClosed() {
		err = ErrSessionLost
	}
	if err != nil {
		c.j.abort(err)
		return
	}
	if cw, ok := c.j.local.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.halfClose()
}

// Reset closes c so that its peer sees a connection reset (RST) rather than
// an orderly end of data, where the transport allows it.
func Reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// buffers holds copy buffers for flowing data. 128 KiB rather than
// io.Copy's 32 KiB: each buffer-full becomes one yamux frame and one socket
// write of its TLS records (batchConn), so a bigger buffer means a quarter
// of the syscalls, frames and wakeups per byte. Measured in make bench
// (upload and download, 1 and 8 streams, interleaved with stunnel, two
// runs each): 0.86-0.99x stunnel's throughput with 32 KiB, 0.97-1.16x with
// 128 KiB, and CPU per GiB from 1.06-1.17x stunnel's to 0.87-1.01x. Idle
// connections do not hold one (see copier.copy).
var buffers = sync.Pool{New: func() any {
	b := make([]byte, 128<<10)
	return &b
}}
