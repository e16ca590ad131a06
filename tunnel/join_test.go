package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// pipeline is app <-> [Join] <-> stream pair <-> [Join] <-> target, all
// over real sockets: the path one tunnelled connection takes.
type pipeline struct {
	app, target *net.TCPConn
	results     chan JoinResult // one per Join
}

func startPipeline(t *testing.T, cfg JoinConfig) (*pipeline, func()) {
	t.Helper()
	cs, ss := yamuxPair(t)
	st1, st2 := streamPair(t, cs, ss)
	app, local1 := tcpPair(t)
	local2, target := tcpPair(t)
	p := &pipeline{app: app, target: target, results: make(chan JoinResult, 2)}
	go func() { p.results <- Join(local1, st1, cfg) }()
	go func() { p.results <- Join(local2, st2, cfg) }()
	kill := func() { cs.Close() }
	return p, kill
}

func (p *pipeline) wait(t *testing.T) [2]JoinResult {
	t.Helper()
	var r [2]JoinResult
	for i := range r {
		select {
		case r[i] = <-p.results:
		case <-time.After(20 * time.Second):
			t.Fatal("join did not end")
		}
	}
	return r
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestJoinHalfClose: the app sends, shuts down writing; the target sees
// EOF, then answers with 1 MiB, which the app receives whole.
func TestJoinHalfClose(t *testing.T) {
	p, _ := startPipeline(t, JoinConfig{})
	request := random(t, 300<<10)
	reply := random(t, 1<<20)
	go func() {
		p.app.Write(request)
		p.app.CloseWrite()
	}()
	got, err := io.ReadAll(p.target)
	if err != nil || !bytes.Equal(got, request) {
		t.Fatalf("target read %d bytes, err %v; want the %d-byte request then EOF", len(got), err, len(request))
	}
	go func() {
		p.target.Write(reply)
		p.target.CloseWrite()
	}()
	back, err := io.ReadAll(p.app)
	if err != nil || sha256.Sum256(back) != sha256.Sum256(reply) {
		t.Fatalf("app read %d bytes, err %v; want the %d-byte reply then EOF", len(back), err, len(reply))
	}
	for _, r := range p.wait(t) {
		if r.Err != nil {
			t.Errorf("join err = %v, want nil", r.Err)
		}
	}
}

// TestJoinHalfCloseReverse: the target shuts down first (server-first
// close), the app keeps sending afterwards.
func TestJoinHalfCloseReverse(t *testing.T) {
	p, _ := startPipeline(t, JoinConfig{})
	p.target.Write([]byte("greeting"))
	p.target.CloseWrite()
	got, err := io.ReadAll(p.app)
	if err != nil || string(got) != "greeting" {
		t.Fatalf("app got %q, %v", got, err)
	}
	late := random(t, 256<<10)
	go func() {
		p.app.Write(late)
		p.app.CloseWrite()
	}()
	rest, err := io.ReadAll(p.target)
	if err != nil || !bytes.Equal(rest, late) {
		t.Fatalf("target got %d bytes, %v; want %d", len(rest), err, len(late))
	}
	r := p.wait(t)
	if r[0].Err != nil || r[1].Err != nil {
		t.Fatalf("join errs = %v, %v", r[0].Err, r[1].Err)
	}
}

// TestJoinSessionLossResetsApp: when the session dies, yamux hands both
// streams an EOF; the app must see a reset instead.
func TestJoinSessionLossResetsApp(t *testing.T) {
	p, kill := startPipeline(t, JoinConfig{})
	p.app.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(p.target, buf); err != nil {
		t.Fatal(err)
	}
	kill()
	_, err := io.ReadAll(p.app)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app read err = %v, want ECONNRESET", err)
	}
	r := p.wait(t)
	if !errors.Is(r[0].Err, ErrSessionLost) && !errors.Is(r[1].Err, ErrSessionLost) {
		t.Fatalf("join errs = %v, %v; want ErrSessionLost", r[0].Err, r[1].Err)
	}
}

// TestJoinHalfCloseTimeout: after the app half-closes, a target that
// neither sends nor closes is cut after the timeout, with a reset.
func TestJoinHalfCloseTimeout(t *testing.T) {
	p, _ := startPipeline(t, JoinConfig{HalfCloseTimeout: 200 * time.Millisecond})
	p.app.CloseWrite()
	if _, err := io.ReadAll(p.target); err != nil {
		t.Fatal(err)
	}
	_, err := io.ReadAll(p.app)
	if err == nil {
		t.Fatal("app saw a clean EOF, want a reset")
	}
	r := p.wait(t)
	if !errors.Is(r[0].Err, ErrHalfCloseTimeout) && !errors.Is(r[1].Err, ErrHalfCloseTimeout) {
		t.Fatalf("join errs = %v, %v; want ErrHalfCloseTimeout", r[0].Err, r[1].Err)
	}
}

// TestJoinFlowingHalfCloseNotCut: bytes that keep moving extend the
// half-close timer, so a slow but steady reply outlives it.
func TestJoinFlowingHalfCloseNotCut(t *testing.T) {
	p, _ := startPipeline(t, JoinConfig{HalfCloseTimeout: 300 * time.Millisecond})
	p.app.CloseWrite()
	if _, err := io.ReadAll(p.target); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for range 8 { // 800 ms in all: longer than the timeout
			<-tick.C
			p.target.Write([]byte("x"))
		}
		p.target.CloseWrite()
	}()
	got, err := io.ReadAll(p.app)
	if err != nil || string(got) != "xxxxxxxx" {
		t.Fatalf("app got %q, %v", got, err)
	}
	for _, r := range p.wait(t) {
		if r.Err != nil {
			t.Errorf("join err = %v", r.Err)
		}
	}
}

// TestJoinPreludeError: a refused stream resets the app before any byte of
// the stream reaches it.
func TestJoinPreludeError(t *testing.T) {
	cs, ss := yamuxPair(t)
	st1, st2 := streamPair(t, cs, ss)
	app, local := tcpPair(t)
	refused := errors.New("refused")
	done := make(chan JoinResult, 1)
	go func() {
		done <- Join(local, st1, JoinConfig{Prelude: func(r io.Reader) error {
			io.ReadFull(r, make([]byte, 3))
			return refused
		}})
	}()
	// As the server agent refuses a stream: an answer, then FIN, then
	// waiting for the client's end (which may be a reset before our FIN
	// reached it).
	st2.Write([]byte("no!secret"))
	finished := make(chan struct{})
	go func() { st2.Finish(10 * time.Second); close(finished) }()
	defer func() { <-finished }()
	_, err := io.ReadAll(app)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app err = %v, want ECONNRESET", err)
	}
	if r := <-done; !errors.Is(r.Err, refused) {
		t.Fatalf("join err = %v", r.Err)
	}
	waitNoStreams(t, cs, ss)
}

// TestJoinAppResetReachesTarget: an app that resets its connection in the
// middle of an upload must not look, to the target, like an upload that
// ended: the target is reset too. Both sessions free the stream.
func TestJoinAppResetReachesTarget(t *testing.T) {
	cs, ss := yamuxPair(t)
	st1, st2 := streamPair(t, cs, ss)
	app, local1 := tcpPair(t)
	local2, target := tcpPair(t)
	results := make(chan JoinResult, 2)
	go func() { results <- Join(local1, st1, JoinConfig{}) }()
	go func() { results <- Join(local2, st2, JoinConfig{}) }()
	app.Write([]byte("partial upload"))
	if _, err := io.ReadFull(target, make([]byte, len("partial upload"))); err != nil {
		t.Fatal(err)
	}
	Reset(app)
	_, err := io.ReadAll(target)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("target read after the app's reset: %v, want ECONNRESET", err)
	}
	for range 2 {
		if r := <-results; r.Err == nil {
			t.Error("a join ended cleanly after a reset")
		}
	}
	waitNoStreams(t, cs, ss)
}

// waitNoStreams waits (bounded) until both sessions have freed every
// stream: a reset stream is freed when the peer's answering reset arrives.
func waitNoStreams(t *testing.T, sessions ...*Session) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		n := 0
		for _, s := range sessions {
			n += s.NumStreams()
		}
		if n == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%d streams still open", n)
		}
	}
}

// TestJoinIdleTimeout: a stream in which nothing moves is cut after the
// idle timeout, and both ends see a reset, not a clean end.
func TestJoinIdleTimeout(t *testing.T) {
	p, _ := startPipeline(t, JoinConfig{IdleTimeout: 200 * time.Millisecond})
	p.app.Write([]byte("hi"))
	if _, err := io.ReadFull(p.target, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := io.ReadAll(p.app); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("app read err = %v, want ECONNRESET", err)
	}
	if _, err := io.ReadAll(p.target); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("target read err = %v, want ECONNRESET", err)
	}
	r := p.wait(t)
	if !errors.Is(r[0].Err, ErrIdleTimeout) && !errors.Is(r[1].Err, ErrIdleTimeout) {
		t.Fatalf("join errs = %v, %v; want ErrIdleTimeout", r[0].Err, r[1].Err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("cut after %s, before the 200ms idle timeout", d)
	}
}

// TestJoinTrickleNotIdle: a byte every 60 ms keeps a stream with a 200 ms
// idle timeout alive for a second.
func TestJoinTrickleNotIdle(t *testing.T) {
	p, _ := startPipeline(t, JoinConfig{IdleTimeout: 200 * time.Millisecond})
	go func() {
		tick := time.NewTicker(60 * time.Millisecond)
		defer tick.Stop()
		for range 16 {
			<-tick.C
			p.app.Write([]byte("x"))
		}
		p.app.CloseWrite()
	}()
	got, err := io.ReadAll(p.target)
	if err != nil || len(got) != 16 {
		t.Fatalf("target got %d bytes, %v", len(got), err)
	}
	p.target.CloseWrite()
	if _, err := io.ReadAll(p.app); err != nil {
		t.Fatal(err)
	}
	for _, r := range p.wait(t) {
		if r.Err != nil {
			t.Errorf("join err = %v", r.Err)
		}
	}
}
