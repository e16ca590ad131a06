package tunnel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// ErrPoolClosed is returned by Pool.Open after Close.
var ErrPoolClosed = errors.New("session pool closed")

// Pool keeps sessions to one or more servers, which all serve the same
// routes, and opens each stream on the least loaded usable session among
// them: a server that fails or drains simply stops being chosen, and new
// streams go to the others at once.
//
// "Least loaded" is first quiet before busy, then the fewest streams: a
// stream opened in a session that carries bulk data queues behind it (the
// session's socket and send queue are first come, first served), so new
// streams avoid a busy session, and when all are busy the pool dials up to
// Size spare sessions for them (member.busy).
//
// Each server has a dial loop that keeps Size usable sessions to it, from
// Start on and again after a session ends, so the tunnel is ready before
// apps come. A session carrying its stream cap (Dialer.Session.StreamCap,
// which keeps it inside its memory budget) takes no more: when apps wait
// because every session is full, the pools dial more, so Size is a floor,
// not a ceiling. After a failed dial or a lost session a server is
// redialled with backoff (Reconnect).
//
// A session whose server sent GoAway takes no new streams; once its last
// stream is released the pool answers with a GoAway of its own, and the
// server closes the session (see "Drain" in doc.go).
type Pool struct {
	Dialers   []*Dialer // one per server
	Size      int       // sessions kept to each server; default 1
	Reconnect Reconnect
	Logger    *slog.Logger
	Guard     *Guard   // if set, every session is added to it while open
	Metrics   *Metrics // nil: none
	// BusyRate is the traffic, in bytes a second both ways together, above
	// which a session counts as busy: new streams go to a quiet session,
	// and to a spare one the pool dials when every session is busy (see
	// member.busy). 0: DefaultBusyRate; negative: sessions are never busy.
	BusyRate int64

	mu        sync.Mutex
	servers   []*serverPool
	bySession map[*Session]*member
	changed   chan struct{} // closed on the next change; nil while nobody waits
	waiting   int           // Open calls waiting for a session
	// Open calls waiting for a quiet session: every usable one is busy
	// (member.busy) and the pool may dial spares (spareRoomLocked).
	waitingQuiet int
	turn         uint // rotates the scan order so that ties spread
	started      bool
	closed       bool
	ctx          context.Context // cancelled by Close: ends dials and loops
	cancel       context.CancelFunc
	wg           sync.WaitGroup // dial loops and session watchers
}

// NoSessionError is Open giving up: no session became usable in time, or
// every server refused the session in the TLS handshake, which waiting
// does not mend.
type NoSessionError struct {
	Servers []string
	Waited  time.Duration
	Refused bool  // gave up early: the last dial to every server was refused
	Last    error // the most recent dial error; nil if no dial failed
}

func (e *NoSessionError) Error() string {
	servers := strings.Join(e.Servers, ", ")
	msg := fmt.Sprintf("no session to %s within %s", servers, e.Waited.Round(time.Millisecond))
	if e.Refused {
		msg = "every server refused the session (" + servers + ")"
	}
	if e.Last != nil {
		msg += ": last dial: " + e.Last.Error()
	}
	return msg
}

func (e *NoSessionError) Unwrap() error { return e.Last }

// ServerStatus is one server as the pool sees it.
type ServerStatus struct {
	Address  string
	Sessions int   // usable sessions
	Draining int   // sessions the server is draining
	Failures int   // dials failed in a row
	LastErr  error // the last dial's error; nil once a dial succeeds
}

// Start begins dialling every server. Open calls it too.
func (p *Pool) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.closed {
		return
	}
	p.started = true
	p.initLocked()
	p.ctx, p.cancel = context.WithCancel(context.Background())
	for _, sp := range p.servers {
		p.wg.Add(1)
		go sp.run(p.ctx)
	}
}

func (p *Pool) initLocked() {
	if p.servers != nil {
		return
	}
	rc := p.Reconnect.withDefaults()
	p.bySession = map[*Session]*member{}
	for _, d := range p.Dialers {
		p.servers = append(p.servers, &serverPool{
			p: p, dialer: d, rc: rc, backoff: backoff{cfg: rc}, wake: make(chan struct{}, 1),
		})
	}
}

// Open opens a stream on the least loaded usable session of any server.
// With none usable it waits until one is, or until ctx is done, and gives
// up early when every server refused the session (NoSessionError). The
// caller must Release the session when the stream is finished.
func (p *Pool) Open(ctx context.Context) (*Stream, *Session, error) {
	p.Start()
	start := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	waiting, waitingQuiet := false, false
	defer func() {
		if waiting {
			p.waiting--
		}
		if waitingQuiet {
			p.waitingQuiet--
		}
	}()
	quietBy := start.Add(quietWait)
	for {
		if p.closed {
			return nil, nil, ErrPoolClosed
		}
		now := time.Now()
		quiet := now.Before(quietBy) && p.spareRoomLocked()
		m, allBusy := p.pickLocked(now, quiet)
		if m == nil && allBusy {
			// Every session is busy with bulk data: wait, briefly, for
			// a spare to be dialled rather than queue behind it.
			if !waitingQuiet {
				waitingQuiet = true
				p.waitingQuiet++
			}
			for _, sp := range p.servers {
				sp.poke()
			}
			changed := p.changesLocked()
			p.mu.Unlock()
			t := time.NewTimer(quietBy.Sub(now))
			select {
			case <-changed:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
			p.mu.Lock()
			if ctx.Err() != nil {
				return nil, nil, &NoSessionError{Servers: p.addresses(), Waited: time.Since(start), Last: p.lastErrLocked()}
			}
			continue
		}
		if m != nil {
			p.mu.Unlock()
			st, err := m.s.OpenStream()
			p.mu.Lock()
			m.opening--
			if err == nil {
				return st, m.s, nil
			}
			// Whatever the error (GoAway, shutdown, IDs exhausted), this
			// session opens no more streams.
			p.drainingLocked(m, err)
			p.releaseLocked(m)
			if ctx.Err() != nil {
				return nil, nil, fmt.Errorf("open stream on the session to %s: %w", m.s.Server, err)
			}
			continue
		}
		if err := p.refusedLocked(); err != nil {
			return nil, nil, &NoSessionError{Servers: p.addresses(), Waited: time.Since(start), Refused: true, Last: err}
		}
		if !waiting {
			waiting = true
			p.waiting++
		}
		// Every time, not only when the first app starts waiting: a dial
		// loop that looked while a fresh session still had room (before the
		// app it woke took it) went back to sleep, and must look again
		// while apps still wait.
		for _, sp := range p.servers {
			sp.poke() // dial promptly, and beyond the floor if all are full
		}
		changed := p.changesLocked()
		p.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
		}
		p.mu.Lock()
		if ctx.Err() != nil {
			return nil, nil, &NoSessionError{Servers: p.addresses(), Waited: time.Since(start), Last: p.lastErrLocked()}
		}
	}
}

// Release gives back a session that Open returned, when the stream is
// finished.
func (p *Pool) Release(s *Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := p.bySession[s]; m != nil {
		p.releaseLocked(m)
	}
}

// Status reports every server in configuration order.
func (p *Pool) Status() []ServerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.initLocked()
	var out []ServerStatus
	for _, sp := range p.servers {
		st := ServerStatus{Address: sp.dialer.Address, Failures: sp.failures, LastErr: sp.lastErr}
		for _, m := range sp.members {
			switch {
			case m.usable():
				st.Sessions++
			case m.draining && !m.s.IsClosed():
				st.Draining++
			}
		}
		out = append(out, st)
	}
	return out
}

// Sessions returns the open sessions, server by server in configuration
// order.
func (p *Pool) Sessions() []*Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*Session
	for _, sp := range p.servers {
		for _, m := range sp.members {
			out = append(out, m.s)
		}
	}
	return out
}

// Close closes every session (their streams end with a reset to the apps)
// and waits for the pool's goroutines.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	if p.cancel != nil {
		p.cancel()
	}
	var sessions []*Session
	for s := range p.bySession {
		sessions = append(sessions, s)
	}
	p.signalLocked()
	p.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
	p.wg.Wait()
}

// pickLocked reserves the usable session below its stream cap that is
// quiet rather than busy (member.busy) and, among those, has the fewest
// streams; or returns nil. With quiet set it returns nil and allBusy when
// every such session is busy, for Open to wait for a spare. The scan
// starts one session further each time, so that equal loads take turns.
func (p *Pool) pickLocked(now time.Time, quiet bool) (best *member, allBusy bool) {
	p.turn++
	bestLoad, bestBusy := 0, false
	for i := range p.servers {
		sp := p.servers[(p.turn+uint(i))%uint(len(p.servers))]
		for j := range sp.members {
			m := sp.members[(p.turn+uint(j))%uint(len(sp.members))]
			if !m.usable() {
				continue
			}
			load := m.load()
			if load >= sp.dialer.Session.StreamCap() {
				continue
			}
			busy := m.busy(now)
			if best == nil || (bestBusy && !busy) || (busy == bestBusy && load < bestLoad) {
				best, bestLoad, bestBusy = m, load, busy
			}
		}
	}
	if best != nil && bestBusy && quiet {
		return nil, true
	}
	if best != nil {
		best.opening++ // counts towards its load until opened
		best.inUse++
	}
	return best, false
}

// spareRoomLocked reports whether some server has fewer usable sessions
// than Size plus maxSpares.
func (p *Pool) spareRoomLocked() bool {
	for _, sp := range p.servers {
		if sp.slotsLocked() < p.size()+maxSpares(p.size()) {
			return true
		}
	}
	return false
}

func (p *Pool) releaseLocked(m *member) {
	if m.inUse--; m.inUse == 0 {
		m.idleSince = time.Now()
		m.sp.poke() // reap may be due later
	}
	m.answerIfIdleLocked()
	p.signalLocked() // a stream slot is free
}

// drainingLocked marks m as taking no new streams. A session that has
// died is left to its watcher.
func (p *Pool) drainingLocked(m *member, why error) {
	if m.draining || m.s.IsClosed() {
		return
	}
	m.draining = true
	m.sp.redial = true // its replacement is a reconnect
	p.log().Info("session draining", "server", m.s.Server, "peer", PeerID(m.s.Peer),
		"remote", m.s.Remote.String(), "session", m.s.ID, "reason", why.Error())
	m.sp.poke() // the server is below its floor now
	m.answerIfIdleLocked()
	p.signalLocked()
}

// refusedLocked returns the last dial error if every server is without a
// usable session and its last dial was refused in the TLS handshake.
func (p *Pool) refusedLocked() error {
	var last error
	for _, sp := range p.servers {
		if sp.usableLocked() > 0 || !refusal(sp.lastErr) {
			return nil
		}
		last = sp.lastErr
	}
	return last
}

// refusal reports whether a dial error is a refusal in the TLS handshake:
// by us (the server's certificate failed verification) or by the server
// (an alert: it refused our certificate), or a peer that does not speak
// TLS. Unlike an unreachable, restarting or slow server, waiting does not
// mend that, so app connections are reset at once instead.
func refusal(err error) bool {
	var v *VerifyError
	if errors.As(err, &v) {
		return true
	}
	switch Classify(err) {
	case ReasonPeerRejected, ReasonNotTLS:
		return true
	}
	return false
}

func (p *Pool) lastErrLocked() error {
	var last error
	var at time.Time
	for _, sp := range p.servers {
		if sp.lastErr != nil && sp.lastErrAt.After(at) {
			last, at = sp.lastErr, sp.lastErrAt
		}
	}
	return last
}

func (p *Pool) addresses() []string {
	var out []string
	for _, d := range p.Dialers {
		out = append(out, d.Address)
	}
	return out
}

// changesLocked returns a channel closed on the next change of state: a
// session up, ended or draining, a stream released, a dial failed, Close.
func (p *Pool) changesLocked() <-chan struct{} {
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

func (p *Pool) signalLocked() {
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

func (p *Pool) size() int { return max(p.Size, 1) }

func (p *Pool) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// member is one session in the pool. Its fields are guarded by Pool.mu.
type member struct {
	s        *Session
	sp       *serverPool
	draining bool          // the server sent GoAway (or the session cannot open streams)
	opening  int           // reserved by Open, OpenStream not returned yet
	inUse    int           // handed out by Open and not yet released
	answered bool          // our GoAway in answer to the server's is due or sent
	idle     chan struct{} // tells the watcher to send that GoAway
	// idleSince is when inUse last dropped to zero (or the session came
	// up): a session beyond the floor idle for Reconnect.Linger is let go.
	idleSince time.Time
	reaped    bool // drained by reap, not by the server
	// The last look at the session's traffic (busy).
	seenAt    time.Time
	seenBytes int64
	isBusy    bool
}

func (m *member) usable() bool { return !m.draining && !m.s.IsClosed() }

// Busy sessions. A stream that queues behind another's bulk data in one
// session waits for all of it: the tunnel socket's queues and yamux's send
// queue are first come, first served. A session that moved more than
// Pool.BusyRate bytes a second (both ways together) since it was last
// looked at, at least busyWindow and at most busyStale ago, counts as busy; new streams go to a quiet
// one if there is one, and if every session is busy Open waits up to
// quietWait for a spare, which the pool dials (up to maxSpares beyond
// Size). Spares left without streams are drained after Reconnect.Linger,
// like sessions dialled for a burst.
const (
	DefaultBusyRate = 10 << 20
	busyWindow      = 100 * time.Millisecond
	busyStale       = 5 * busyWindow
	quietWait       = 50 * time.Millisecond
)

// maxSpares is how many sessions beyond Size a server may get because
// every session was busy.
func maxSpares(size int) int { return size }

// busy reports whether the session is busy (above), looking again if the
// last look is busyWindow old.
func (m *member) busy(now time.Time) bool {
	rate := m.sp.p.BusyRate
	if rate < 0 {
		return false
	}
	d := now.Sub(m.seenAt)
	if d < busyWindow {
		return m.isBusy
	}
	moved := m.s.up.Load() + m.s.down.Load()
	// Judged over the time since the last look, but only a recent one: an
	// old look would make a burst long past count now. After a long gap
	// the look only starts a new measure.
	m.isBusy = d <= busyStale && float64(moved-m.seenBytes) > float64(cmp.Or(rate, DefaultBusyRate))*d.Seconds()
	m.seenAt, m.seenBytes = now, moved
	return m.isBusy
}

func (m *member) load() int { return m.s.NumStreams() + m.opening }

// answerIfIdleLocked asks the watcher to answer the server's GoAway once
// no stream is in use or being opened: from then on we open nothing here,
// so the server may close the session without cutting a stream.
func (m *member) answerIfIdleLocked() {
	if m.draining && !m.answered && m.inUse == 0 && m.opening == 0 {
		m.answered = true
		m.idle <- struct{}{} // buffered, and sent once
	}
}

// watch follows one session until it ends: it marks it draining when the
// server's GoAway arrives, sends our answer when asked, and finally drops
// the session from the pool.
func (p *Pool) watch(m *member) {
	defer p.wg.Done()
	goAway := m.s.RemoteGoAway()
	for {
		select {
		case <-m.s.CloseChan():
			p.ended(m)
			return
		case <-goAway:
			goAway = nil
			p.mu.Lock()
			p.drainingLocked(m, errors.New("server sent GoAway"))
			p.mu.Unlock()
		case <-m.idle:
			if err := m.s.GoAway(); err != nil {
				m.s.Close() // cannot tell the server; ending it is as good
			}
		}
	}
}

// ended drops a session that has closed, schedules the redial and logs.
func (p *Pool) ended(m *member) {
	s, sp := m.s, m.sp
	p.mu.Lock()
	sp.members = removeMember(sp.members, m)
	delete(p.bySession, s)
	closing := p.closed
	if !closing {
		if !m.reaped { // a session let go for idleness is no loss
			sp.lostLocked(time.Now(), s)
		}
		p.signalLocked()
	}
	draining := m.draining
	p.mu.Unlock()
	if p.Guard != nil {
		p.Guard.Remove(s)
	}
	reason, label := "closed by client", "closed"
	if !closing {
		cause := s.Cause()
		reason, label = EndReason(cause), ClassifyEnd(cause)
		if draining {
			reason = "drained: " + reason
			if label == "closed" || label == "peer_closed" {
				label = "drained" // the server closed it after a GoAway: no failure
			}
		}
	}
	p.Metrics.SessionDown(label)
	p.log().Info("session ended", "server", s.Server, "peer", PeerID(s.Peer), "remote", s.Remote.String(),
		"session", s.ID, "duration", time.Since(s.Established).Round(time.Millisecond), "reason", reason)
}

func removeMember(ms []*member, m *member) []*member {
	for i, x := range ms {
		if x == m {
			return append(ms[:i], ms[i+1:]...)
		}
	}
	return ms
}
