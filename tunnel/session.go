package tunnel

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/mtunnel/mtunnel/certs"
)

// SessionConfig tunes the yamux session carried by one TLS connection.
// The zero value is the tuned default described on each field.
type SessionConfig struct {
	// StreamWindow is the per-stream receive window. yamux's 256 KiB caps a
	// stream at window/RTT (5 MB/s at 50 ms); 4 MiB allows about 80 MB/s at
	// 50 ms. Memory is only committed as data arrives and is not yet read,
	// so the worst case is StreamWindow x streams with a stalled reader.
	// Default 4 MiB.
	StreamWindow uint32
	// MemoryBudget is the stated bound on what one session may hold in
	// stream receive buffers: MaxStreams x StreamWindow must fit in it.
	// yamux has no session-level window (FIELD-NOTES), so this cap on
	// streams is what bounds a session's memory when apps stop reading.
	// The client's pool opens another session when its sessions are full.
	// Default 1 GiB.
	MemoryBudget int64
	// MaxStreams caps the streams open at once on one session. Default:
	// MemoryBudget / StreamWindow (256 with the defaults).
	MaxStreams int
	// KeepAlive is how long a session may hear nothing from its peer
	// before it sends a ping; KeepAliveTimeout is how much longer it waits
	// for any byte (the answer or other traffic) before it closes the
	// session as dead. Any frame counts, so a saturated link is never taken
	// for a dead peer; a vanished peer (no FIN, no RST) is found within
	// about KeepAlive+KeepAliveTimeout, idle or busy. The tunnel socket's
	// TCP_USER_TIMEOUT and TCP keepalive use the same bound. Defaults 10 s
	// and 15 s: found within 25 s.
	KeepAlive        time.Duration
	KeepAliveTimeout time.Duration
	// MaxLifetime is how long a session serves new streams before it is
	// replaced, so that peers authenticate again; its streams then have
	// LifetimeGrace to finish. A session never outlives its peer's
	// certificate. Default 0: only the certificate's expiry.
	MaxLifetime   time.Duration
	LifetimeGrace time.Duration // default 30 s
	// RecvBuffer sizes the tunnel socket's kernel receive buffer
	// (SO_RCVBUF). Linux autotunes it up to net.ipv4.tcp_rmem's maximum
	// (megabytes) once the agent has read fast; when the receiving agent
	// is then short of CPU (TLS at full speed), all a bulk stream sent
	// waits there in front of every other stream's frames. 0 (auto):
	// autotuning, but while a stream of the session talks (moves small
	// messages) beside one that moves bulk data, the receive window is
	// held to twice the bandwidth-delay product of 10 Gbit/s at the
	// kernel's RTT estimate, at least 256 KiB; a path that would need
	// more than 8 MiB is never held (talkWindow). RecvBufferKernel:
	// always autotuning. Above 0: that many bytes (the kernel caps it at
	// rmem_max).
	RecvBuffer int64
	// WriteTimeout bounds one frame write to the TLS connection and a
	// ping's reply (yamux ConnectionWriteTimeout). Default 10 s.
	WriteTimeout time.Duration
	// Logger receives yamux's own messages (errors at Warn, the rest at
	// Debug). Nil discards them.
	Logger *slog.Logger
}

// windowTalking, if set, is what new sessions' talkWindows follow instead
// of their streams' activity (tests).
var windowTalking func() bool

// RecvBufferKernel as SessionConfig.RecvBuffer leaves the tunnel socket's
// receive buffer to Linux's autotuning.
const RecvBufferKernel = -1

const (
	defaultStreamWindow = 4 << 20
	defaultMemoryBudget = 1 << 30
	defaultKeepAlive    = 10 * time.Second
	defaultKeepAliveTO  = 15 * time.Second
	defaultGrace        = 30 * time.Second
	defaultWriteTimeout = 10 * time.Second
)

func (c SessionConfig) keepAlive() (every, timeout time.Duration) {
	return cmp.Or(c.KeepAlive, defaultKeepAlive), cmp.Or(c.KeepAliveTimeout, defaultKeepAliveTO)
}

// Window is the per-stream receive window in effect.
func (c SessionConfig) Window() uint32 { return cmp.Or(c.StreamWindow, defaultStreamWindow) }

// Budget is the session memory budget in effect.
func (c SessionConfig) Budget() int64 { return cmp.Or(c.MemoryBudget, defaultMemoryBudget) }

// StreamCap is the number of streams one session may carry at once.
func (c SessionConfig) StreamCap() int {
	if c.MaxStreams > 0 {
		return c.MaxStreams
	}
	return max(1, int(c.Budget()/int64(c.Window())))
}

// Validate checks that the stream cap fits the memory budget.
func (c SessionConfig) Validate() error {
	if c.MaxStreams < 0 || c.MemoryBudget < 0 {
		return errors.New("max streams and session memory must not be negative")
	}
	if c.KeepAlive < 0 || c.KeepAliveTimeout < 0 || c.MaxLifetime < 0 || c.LifetimeGrace < 0 {
		return errors.New("keepalive, keepalive timeout, max lifetime and drain grace must not be negative")
	}
	if c.Window() < 256<<10 {
		return fmt.Errorf("stream window %d: yamux needs at least 256 KiB", c.Window())
	}
	if int64(c.Window()) > c.Budget() {
		return fmt.Errorf("stream window (%s) is larger than the session memory budget (%s)", sizeString(int64(c.Window())), sizeString(c.Budget()))
	}
	if worst := int64(c.StreamCap()) * int64(c.Window()); worst > c.Budget() {
		return fmt.Errorf("%d streams x %s window = %s per session, over the session memory budget of %s: lower max streams or the window, or raise the budget",
			c.StreamCap(), sizeString(int64(c.Window())), sizeString(worst), sizeString(c.Budget()))
	}
	return nil
}

// sizeString writes n bytes in the largest binary unit that divides it.
func sizeString(n int64) string {
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", n)
}

func (c SessionConfig) yamux() *yamux.Config {
	y := yamux.DefaultConfig()
	y.LogOutput = nil // exactly one of Logger and LogOutput may be set
	y.Logger = yamuxLogger{c.Logger}
	// The accept loop hands each stream to its own goroutine at once, so the
	// backlog only absorbs bursts; beyond it yamux resets new streams.
	y.AcceptBacklog = 1024
	// Liveness is the watchdog's job (liveness.go): yamux's keepalive
	// fails a session when one ping answer is slow behind bulk data.
	y.EnableKeepAlive = false
	y.ConnectionWriteTimeout = cmp.Or(c.WriteTimeout, defaultWriteTimeout)
	y.MaxStreamWindowSize = c.Window()
	// yamux's open timeout costs a goroutine and a timer per stream, and
	// when it fires it closes the whole session. The client agent bounds the
	// wait for the server's answer itself (HeaderTimeout) and keepalive
	// finds a dead peer, so it is off.
	y.StreamOpenTimeout = 0
	// yamux's close timer (default 5 min) starts at our FIN and is not
	// extended by data, so it would cut a legitimately half-closed transfer
	// (upload, FIN, long download). Join keeps its own half-close timer that
	// flowing bytes extend, and always ends by closing the stream, so the
	// peer's FIN arrives and frees the stream (FIELD-NOTES; yamux #133).
	y.StreamCloseTimeout = 0
	return y
}

// yamuxLogger adapts slog to yamux's Logger interface.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any)                 { y.log(fmt.Sprint(v...)) }
func (y yamuxLogger) Println(v ...any)               { y.log(fmt.Sprint(v...)) }
func (y yamuxLogger) Printf(format string, v ...any) { y.log(fmt.Sprintf(format, v...)) }

func (y yamuxLogger) log(msg string) {
	if y.l == nil {
		return
	}
	msg = strings.TrimSpace(msg)
	level := slog.LevelDebug
	if strings.HasPrefix(msg, "[ERR]") {
		level = slog.LevelWarn
	}
	y.l.Log(context.Background(), level, "yamux", "detail", msg)
}

// Session is one authenticated TLS connection carrying a yamux session.
type Session struct {
	*yamux.Session
	ID          string              // short, and the same at both ends (sessionID)
	Peer        *x509.Certificate   // the verified peer leaf
	PeerChain   []*x509.Certificate // the chain as the peer sent it, leaf first
	Staple      []byte              // the OCSP response the peer stapled, if any
	TLSVersion  uint16              // negotiated, tls.VersionTLS13 or 12
	Remote      net.Addr
	Server      string // client side: the server address it was dialled at
	Established time.Time
	RTT         time.Duration // client side: the round trip of the confirming ping
	// RecvBuffer is the SO_RCVBUF set on the tunnel socket after the
	// handshake (SessionConfig.RecvBuffer); 0: the kernel autotunes it.
	RecvBuffer int64
	// TalkWindow is the receive window the tunnel socket is held to while
	// a stream talks beside bulk data (SessionConfig.RecvBuffer auto); 0:
	// none.
	TalkWindow int64
	conn       *frameConn
	talkWindow *talkWindow // nil: none (TalkWindow)
	activity   *activity   // what its streams did lately, noted by their copiers (priority.go)
	client     bool
	retired    atomic.Bool           // past MaxLifetime: no new streams
	sentGoAway atomic.Bool           // we told the peer to open no more streams
	cause      atomic.Pointer[error] // why we closed it, if we did

	// Counted by the session's streams for the status report: streams
	// opened or accepted, and their bytes from the app towards the target
	// (up) and back (down).
	streams, up, down atomic.Int64
	// low: this busy session's loops run at a lower priority (priority.go).
	low *atomic.Bool

	mu   sync.Mutex
	live map[*Stream]struct{} // streams not yet finished, for wakeStreams
}

// Stream is one tunnelled connection: a yamux stream that can also be
// reset, which yamux v0.1.2 cannot do by itself.
type Stream struct {
	*yamux.Stream
	conn *frameConn // nil: Reset can only close
	sess *Session   // nil in tests that build streams by hand
}

// done marks the stream finished: it no longer needs waking when the
// session dies.
func (s *Stream) done() {
	if s.sess != nil {
		s.sess.mu.Lock()
		delete(s.sess.live, s)
		s.sess.mu.Unlock()
	}
}

// track registers a new stream so that wakeStreams can reach it.
func (s *Session) track(st *yamux.Stream) *Stream {
	s.streams.Add(1)
	w := &Stream{Stream: st, conn: s.conn, sess: s}
	s.mu.Lock()
	if s.live == nil {
		s.live = make(map[*Stream]struct{})
	}
	s.live[w] = struct{}{}
	s.mu.Unlock()
	return w
}

// wakeStreams makes every blocked Read and Write of the session's streams
// return once the session is closed. yamux v0.1.2 does not: a stream
// blocked in Read or Write when the session shuts down spins on the closed
// shutdown channel until Session.Close reaches it in its forceClose loop,
// which with hundreds of streams blocked took the closing goroutine tens of
// seconds to get through on two cores (hashicorp/yamux#176, open). An
// expired deadline is another ready case in that select, so each spinning
// call returns within a few rounds.
func (s *Session) wakeStreams() {
	s.mu.Lock()
	streams := make([]*Stream, 0, len(s.live))
	for st := range s.live {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	now := time.Now()
	for _, st := range streams {
		st.SetDeadline(now)
	}
}

// Reset ends the stream abruptly: the peer sees ErrConnectionReset, so its
// side of the connection is reset too, rather than closed as if all data
// had been sent. The stream is also dropped locally at once
// (frameConn.dropLocally), without waiting for the peer to answer: a peer
// that never does (stock yamux) would otherwise leave it in yamux's map,
// with what it had buffered, until the session ends.
func (s *Stream) Reset() {
	if s.conn != nil {
		s.conn.sendRST(s.StreamID())
		s.conn.dropLocally(s.StreamID())
	}
	s.Stream.Close()
	s.done()
}

// Finish closes our side of a stream that will not be joined (a refused
// one) and waits, up to timeout, for the peer to end its side, discarding
// what it sends. A peer that resets the stream gets a reset back: the
// peer's copy loop waits for that answer to free its end (see Reset).
func (s *Stream) Finish(timeout time.Duration) {
	s.Stream.Close()
	s.SetReadDeadline(time.Now().Add(timeout))
	if _, err := io.Copy(io.Discard, struct{ io.Reader }{s.Stream}); err != nil {
		s.Reset() // reset by the peer, or it never ended its side
	}
	s.done()
}

// GoAway tells the peer to open no more streams on this session. It
// replaces yamux's GoAway, which also makes yamux reset every stream that
// arrives afterwards (yamux v0.1.2 session.go, incomingStream): a stream
// the peer opened just before the GoAway reached it would then fail during
// a graceful drain. Here such a stream is still accepted and served; see
// "Drain" in doc.go for how the session then ends without a race.
func (s *Session) GoAway() error {
	s.sentGoAway.Store(true)
	if err := s.conn.sendGoAway(); err != nil {
		return fmt.Errorf("send goaway: %w", err)
	}
	return nil
}

// RemoteGoAway is closed when the peer's GoAway arrives, or when a client
// session retires itself (MaxLifetime): either way the session must take no
// new streams, and the pool drains it.
func (s *Session) RemoteGoAway() <-chan struct{} { return s.conn.goAway }

// OpenStream opens a stream (client side). A retired session refuses, the
// way a peer's GoAway does, so callers move to another session.
func (s *Session) OpenStream() (*Stream, error) {
	if s.retired.Load() {
		return nil, fmt.Errorf("session reached its lifetime: %w", yamux.ErrRemoteGoAway)
	}
	st, err := s.Session.OpenStream()
	if err != nil {
		return nil, err
	}
	return s.track(st), nil
}

// AcceptStream accepts the next stream (server side).
func (s *Session) AcceptStream() (*Stream, error) {
	st, err := s.Session.AcceptStream()
	if err != nil {
		return nil, err
	}
	return s.track(st), nil
}

// Cause returns the error that ended the session, or nil while it is open
// or when it was closed locally. It is the TLS alert when a server refused
// our certificate, io.EOF when the peer closed, yamux.ErrKeepAliveTimeout
// when the peer stopped answering pings, ErrConnAborted when the kernel
// aborted the connection and a write took the error (batchConn.abortErr).
func (s *Session) Cause() error {
	if !s.IsClosed() {
		return nil
	}
	if c := s.cause.Load(); c != nil {
		return *c
	}
	// yamux keeps its shutdown error private but AcceptStream returns it
	// once the session is closed. A client session never has streams to
	// accept: mtunnel servers do not open any.
	for {
		st, err := s.AcceptStream()
		if err == nil {
			st.Close()
			continue
		}
		if errors.Is(err, yamux.ErrSessionShutdown) {
			return nil
		}
		return err
	}
}

// Dialer opens client-side sessions to one server.
type Dialer struct {
	Address          string
	TLS              *tls.Config // from TLSPolicy.ClientConfig
	Session          SessionConfig
	HandshakeTimeout time.Duration // default 10 s; covers TCP connect, TLS and the confirming ping
}

// Dial connects, runs the TLS handshake and confirms the session with one
// yamux ping. The ping matters under TLS 1.3: the client's handshake ends
// before the server has checked the client certificate, so only a round
// trip proves the server accepted us (and measures the RTT).
func (d *Dialer) Dial(ctx context.Context) (*Session, error) {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(d.HandshakeTimeout, 10*time.Second))
	defer cancel()
	var nd net.Dialer
	raw, err := nd.DialContext(ctx, "tcp", d.Address)
	if err != nil {
		return nil, fmt.Errorf("dial server %s: %w", d.Address, err)
	}
	tuneTunnelSocket(raw, d.Session)
	batch := newBatchConn(raw)
	tconn := tls.Client(batch, d.TLS)
	if err := tconn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", d.Address, err)
	}
	s, err := newSession(tconn, batch, d.Session, true)
	if err != nil {
		return nil, err
	}
	// Ping has its own bound (WriteTimeout); the context only matters for
	// the dial and the handshake above.
	rtt, err := s.Ping()
	if err != nil {
		s.Close()
		if cause := s.Cause(); cause != nil {
			err = cause
		}
		return nil, fmt.Errorf("confirm session with %s: %w", d.Address, err)
	}
	s.RTT = rtt
	s.Server = d.Address
	return s, nil
}

// Accept runs the server side of the TLS handshake on raw within timeout and
// starts a yamux server session on it. On error raw is closed.
func Accept(ctx context.Context, raw net.Conn, conf *tls.Config, sc SessionConfig, timeout time.Duration) (*Session, error) {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(timeout, 10*time.Second))
	defer cancel()
	tuneTunnelSocket(raw, sc)
	batch := newBatchConn(raw)
	tconn := tls.Server(batch, conf)
	if err := tconn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake from %s: %w", raw.RemoteAddr(), err)
	}
	return newSession(tconn, batch, sc, false)
}

func newSession(tconn *tls.Conn, batch *batchConn, sc SessionConfig, client bool) (*Session, error) {
	cs := tconn.ConnectionState()
	if len(cs.PeerCertificates) == 0 { // verifyPeer forbids it; never trust a nil leaf
		tconn.Close()
		return nil, errors.New("session without a peer certificate")
	}
	open := yamux.Server
	if client {
		open = yamux.Client
	}
	low := new(atomic.Bool)
	batch.prio.flag = low
	batch.enable()
	fc := newFrameConn(tconn)
	fc.flush = batch.frameDone
	fc.rprio.flag, fc.wprio.flag = low, low
	act := new(activity)
	recvBuffer, tw := sizeRecvBuffer(batch.Conn, sc.RecvBuffer)
	if tw != nil {
		tw.talking = act.mixed
		if windowTalking != nil {
			tw.talking = windowTalking
		}
		fc.everyYield = tw.follow // before yamux's receive loop starts
	}
	ys, err := open(fc, sc.yamux())
	if err != nil {
		tconn.Close()
		return nil, fmt.Errorf("start yamux session: %w", err)
	}
	s := &Session{
		Session:     ys,
		ID:          sessionID(cs),
		Peer:        cs.PeerCertificates[0],
		PeerChain:   cs.PeerCertificates,
		Staple:      cs.OCSPResponse,
		TLSVersion:  cs.Version,
		Remote:      tconn.RemoteAddr(),
		Established: time.Now(),
		RecvBuffer:  recvBuffer,
		conn:        fc,
		talkWindow:  tw,
		activity:    act,
		client:      client,
		low:         low,
	}
	if tw != nil {
		s.TalkWindow = int64(tw.size)
	}
	trackPriority(s)
	every, timeout := sc.keepAlive()
	go newWatchdog(s, every, timeout).run(every, timeout)
	// Its own goroutine: yamux closes the shutdown channel first and then
	// blocks in Close (flushing to a dead peer, then freeing each stream),
	// and whoever called Close, the watchdog included, cannot wake the
	// streams meanwhile.
	go func() {
		<-s.CloseChan()
		untrackPriority(s)
		s.talkWindow.close()
		s.wakeStreams()
	}()
	go s.retire(sc.MaxLifetime, cmp.Or(sc.LifetimeGrace, defaultGrace))
	return s, nil
}

// sessionID names a session in logs and reports: 8 hex digits that both
// ends derive from the TLS exporter (RFC 8446 section 7.5, RFC 5705), so
// the client's and the server's lines about one session carry the same id.
// An exporter value with its own label reveals nothing of the traffic keys.
// Should the exporter be unavailable (TLS 1.2 without extended master
// secret, which Go does not negotiate), the id is random.
func sessionID(cs tls.ConnectionState) string {
	b, err := cs.ExportKeyingMaterial("EXPORTER-mtunnel-session-id", nil, 4)
	if err != nil {
		b = make([]byte, 4)
		rand.Read(b)
	}
	return hex.EncodeToString(b)
}

// PeerID is the short identity of a peer certificate used in logs.
func PeerID(c *x509.Certificate) string { return certs.Identity(c) }

// EndReason describes why a session's connection ended, for the
// "session ended" log line.
func EndReason(cause error) string {
	var op *net.OpError
	switch {
	case cause == nil:
		return "closed"
	case errors.Is(cause, io.EOF):
		return "peer closed the connection"
	case errors.Is(cause, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(cause, &op) && op.Op == "remote error":
		return "rejected by peer: " + op.Err.Error()
	}
	return cause.Error()
}
