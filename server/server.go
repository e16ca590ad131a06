package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// Server is a server agent. Create it with New, then Listen and Serve (or
// Run, which does both).
type Server struct {
	cfg   Config
	tls   *tls.Config
	log   *slog.Logger
	ln    net.Listener
	sem   chan struct{} // handshake slots
	guard *tunnel.Guard // re-verifies open sessions
	fails *failureLog   // failed handshakes, logged without flooding
	// workers run the streams; see tunnel.Workers.
	workers tunnel.Workers

	mu        sync.Mutex
	sessions  map[*tunnel.Session]*liveSession
	perPeer   map[string]int // open sessions by peer identity
	listening bool           // from Listen until Serve stops accepting
	draining  bool           // no new sessions: from then on
	stopped   bool           // Serve has returned
	wg        sync.WaitGroup // connection and stream goroutines
}

// liveSession is what the server tracks of an open session. Guarded by
// Server.mu.
type liveSession struct {
	streams    int  // streams being served or refused
	admitted   int  // streams holding a place under the cap (Session.StreamCap)
	clientDone bool // the client sent GoAway: it opens no more streams here
}

// New validates cfg and returns a server that is not yet listening.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	s := &Server{
		cfg:      c,
		tls:      c.TLS.ServerConfig(),
		log:      c.Logger,
		sem:      make(chan struct{}, c.MaxHandshakes),
		sessions: make(map[*tunnel.Session]*liveSession),
		perPeer:  make(map[string]int),
		fails:    &failureLog{log: c.Logger},
	}
	s.guard = &tunnel.Guard{
		Verify:   s.cfg.TLS.VerifyClient,
		Interval: c.RecheckInterval,
		Logger:   c.Logger,
	}
	for name := range c.Routes {
		c.Metrics.Route(name) // reported from the start, with zero counts
	}
	return s, nil
}

// Ready reports whether the server takes new sessions: it is listening,
// not draining, and its own certificate is valid now. If not, the reason
// says why.
func (s *Server) Ready() (bool, string) {
	s.mu.Lock()
	listening, draining, stopped := s.listening, s.draining, s.stopped
	s.mu.Unlock()
	switch {
	case stopped:
		return false, "stopped"
	case draining:
		return false, "draining"
	case !listening:
		return false, "not listening"
	}
	leaf := s.cfg.TLS.Credentials().Certificate.Leaf
	switch now := time.Now(); {
	case leaf == nil:
		return false, "no own certificate"
	case now.After(leaf.NotAfter):
		return false, fmt.Sprintf("own certificate %s expired at %s", tunnel.PeerID(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return false, fmt.Sprintf("own certificate %s is not valid until %s", tunnel.PeerID(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return true, ""
}

// Sessions returns a snapshot of the open sessions, oldest first.
func (s *Server) Sessions() []tunnel.SessionInfo {
	s.mu.Lock()
	out := make([]tunnel.SessionInfo, 0, len(s.sessions))
	for sess := range s.sessions {
		out = append(out, sess.Info())
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b tunnel.SessionInfo) int { return a.Established.Compare(b.Established) })
	return out
}

// Recheck verifies the client certificates of all open sessions again now
// and closes the sessions that no longer pass, for example after a CRL
// reload. It does not block.
func (s *Server) Recheck() { s.guard.Recheck() }

// Listen binds the listener and returns its address (useful with port 0).
func (s *Server) Listen() (net.Addr, error) {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: listen on %s: %w", s.cfg.Listen, err)
	}
	s.ln = ln
	s.mu.Lock()
	s.listening = true
	s.mu.Unlock()
	s.log.Info("listening", "addr", ln.Addr().String(), "routes", len(s.cfg.Routes))
	return ln.Addr(), nil
}

// Run listens and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	if _, err := s.Listen(); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Serve accepts connections until ctx is done, then drains: it stops
// accepting, sends GoAway on every session so clients open new streams
// elsewhere, waits up to DrainTimeout for the clients to finish their
// streams (see "Drain" in tunnel/doc.go), closes what is left and returns
// once every goroutine it started has ended.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		return errors.New("server: Serve before Listen")
	}
	acceptDone := make(chan error, 1)
	go func() { acceptDone <- s.acceptLoop(ctx) }()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.guard.Run(ctx)
	}()
	var err error
	select {
	case <-ctx.Done():
		s.ln.Close()
		<-acceptDone
	case err = <-acceptDone:
	}
	s.mu.Lock()
	s.listening = false
	s.mu.Unlock()
	s.drain()
	s.wg.Wait()
	s.workers.Close()
	s.fails.flush() // what a flood left uncounted in the log, and its timer
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	return err
}

func (s *Server) acceptLoop(ctx context.Context) error {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("server: accept: %w", err)
		}
		s.wg.Add(1)
		go s.serveConn(ctx, conn)
	}
}

// errNoHandshakeSlot is a connection that waited its whole handshake
// timeout for one of the MaxHandshakes slots.
var errNoHandshakeSlot = errors.New("no handshake slot free within the handshake timeout")

// serveConn authenticates one connection and serves its session.
func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	defer s.wg.Done()
	// The handshake timeout runs from the accept, not from the moment a
	// handshake slot frees up: under a flood of connections that never
	// finish their handshake, those queued behind the MaxHandshakes slots
	// would otherwise each hold a descriptor and a goroutine for a whole
	// timeout per round of slots (2,000 half-open connections at 256 slots
	// and 10 s: over a minute), instead of one timeout in all.
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	select {
	case s.sem <- struct{}{}:
	case <-hctx.Done():
		cancel()
		conn.Close()
		if ctx.Err() == nil {
			s.cfg.Metrics.HandshakeFailed(tunnel.ReasonTimeout)
			s.fails.failed(tunnel.ReasonTimeout, "remote", conn.RemoteAddr().String(), "err", errNoHandshakeSlot)
		}
		return
	}
	start := time.Now()
	sess, err := tunnel.Accept(hctx, conn, s.tls, s.cfg.Session, s.cfg.HandshakeTimeout)
	cancel()
	<-s.sem
	if err != nil {
		reason := tunnel.Classify(err)
		s.cfg.Metrics.HandshakeFailed(reason)
		s.fails.failed(reason, "remote", conn.RemoteAddr().String(), "err", err)
		return
	}
	setup := time.Since(start)
	log := s.log.With("peer", tunnel.PeerID(sess.Peer), "remote", sess.Remote.String(), "session", sess.ID)
	ls, err := s.track(sess)
	if err != nil {
		s.cfg.Metrics.HandshakeFailed(tunnel.ReasonSessionRefused)
		log.Warn("session refused", "reason", tunnel.ReasonSessionRefused, "err", err)
		sess.Close()
		return
	}
	s.cfg.Metrics.SessionUp(setup)
	log.Info("session established", "recv_buffer", sess.RecvBuffer, "talk_window", sess.TalkWindow)
	s.guard.Add(sess)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-sess.RemoteGoAway():
			s.clientDone(sess, ls)
		case <-sess.CloseChan():
		}
	}()
	err = s.acceptStreams(ctx, sess, ls, log)
	s.guard.Remove(sess)
	s.untrack(sess)
	reason := "closed by server"
	if err != nil {
		reason = tunnel.EndReason(err)
	}
	s.cfg.Metrics.SessionDown(tunnel.ClassifyEnd(err))
	log.Info("session ended", "duration", time.Since(sess.Established).Round(time.Millisecond), "reason", reason)
}

// acceptStreams hands each stream to its own goroutine at once: an
// un-ACKed stream or a full backlog would stall or kill the whole session.
// It returns the session's end cause (nil if we closed it).
//
// A stream gets a place under the session's stream cap, which keeps the
// session within its memory budget (tunnel.SessionConfig.MemoryBudget), if
// the streams being served leave room; in a burst, the first to arrive get
// the places and the rest are refused. yamux's own stream count is no
// measure: it includes every stream of a burst that has arrived but not
// yet been looked at, and refused ones still being finished, so a burst
// past the cap used to be refused whole, the streams within the cap too.
func (s *Server) acceptStreams(ctx context.Context, sess *tunnel.Session, ls *liveSession, log *slog.Logger) error {
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			sess.Close()
			return sess.Cause()
		}
		s.mu.Lock()
		ls.streams++
		var release func() // gives the stream's place under the cap back
		if ls.admitted < s.cfg.Session.StreamCap() {
			ls.admitted++
			release = sync.OnceFunc(func() {
				s.mu.Lock()
				ls.admitted--
				s.mu.Unlock()
			})
		}
		s.mu.Unlock()
		s.wg.Add(1)
		s.workers.Go(func() {
			defer s.wg.Done()
			s.serveStream(ctx, sess, st, release, log)
			if release != nil {
				release()
			}
			s.streamDone(sess, ls)
		})
	}
}

// clientDone notes the client's GoAway: it will open no more streams on the
// session (it answers ours so once its last stream there has ended). The
// session is closed once that is so and our last stream has ended too:
// closing earlier could cut a stream we still serve, and waiting only for
// our streams could cut one the client is opening.
func (s *Server) clientDone(sess *tunnel.Session, ls *liveSession) {
	s.mu.Lock()
	ls.clientDone = true
	idle := ls.streams == 0
	s.mu.Unlock()
	if idle {
		sess.Close()
	}
}

func (s *Server) streamDone(sess *tunnel.Session, ls *liveSession) {
	s.mu.Lock()
	ls.streams--
	idle := ls.clientDone && ls.streams == 0
	s.mu.Unlock()
	if idle {
		sess.Close()
	}
}

// errDraining refuses sessions that complete their handshake during a drain.
var errDraining = errors.New("server is draining")

// track registers a session for draining and counts it against its peer's
// session limit.
func (s *Server) track(sess *tunnel.Session) (*liveSession, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return nil, errDraining
	}
	id := tunnel.PeerID(sess.Peer)
	if n := s.perPeer[id]; n >= s.cfg.MaxSessionsPerPeer {
		return nil, fmt.Errorf("identity %s already has %d sessions (limit %d)", id, n, s.cfg.MaxSessionsPerPeer)
	}
	s.perPeer[id]++
	ls := &liveSession{}
	s.sessions[sess] = ls
	return ls, nil
}

func (s *Server) untrack(sess *tunnel.Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := tunnel.PeerID(sess.Peer)
	if s.perPeer[id]--; s.perPeer[id] <= 0 {
		delete(s.perPeer, id)
	}
	delete(s.sessions, sess)
}

// drain sends GoAway on every session, waits up to DrainTimeout for the
// sessions to end (each closes when the client has answered and the last
// stream is done), then closes the rest.
func (s *Server) drain() {
	s.mu.Lock()
	sessions := maps.Clone(s.sessions)
	s.draining = true
	s.mu.Unlock()
	s.log.Info("draining", "sessions", len(sessions), "streams", openStreams(sessions), "timeout", s.cfg.DrainTimeout)
	for sess := range sessions {
		if err := sess.GoAway(); err != nil {
			sess.Close() // it is dying anyway
		}
	}
	if !allClosed(sessions, s.cfg.DrainTimeout) {
		s.log.Warn("drain timeout: closing sessions with open streams", "streams", openStreams(sessions))
	}
	for sess := range sessions {
		sess.Close()
	}
	s.log.Info("drained")
}

// allClosed waits until every session has ended, or timeout has passed;
// it reports whether they all ended.
func allClosed(sessions map[*tunnel.Session]*liveSession, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for sess := range sessions {
		select {
		case <-sess.CloseChan():
		case <-t.C:
			return false
		}
	}
	return true
}

func openStreams(sessions map[*tunnel.Session]*liveSession) int {
	n := 0
	for sess := range sessions {
		if !sess.IsClosed() {
			n += sess.NumStreams()
		}
	}
	return n
}
