package tunnel

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/hashicorp/yamux"
	"github.com/mtunnel/mtunnel/certs/certstest"
)

// Run with: go test -run '^$' -bench . -benchmem ./tunnel/ (compare runs
// with benchstat).

// benchRequest is what a client agent sends for a TCP app.
var benchRequest = Request{Route: "postgres",
	Src: netip.MustParseAddrPort("127.0.0.1:51234"), Dst: netip.MustParseAddrPort("127.0.0.1:15432")}

func BenchmarkAppendRequest(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendRequest(buf[:0], benchRequest)
	}
}

func BenchmarkReadRequest(b *testing.B) {
	hdr, _ := AppendRequest(nil, benchRequest)
	r := bytes.NewReader(hdr)
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(hdr)
		if _, err := ReadRequest(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJoin moves data app -> Join -> yamux stream -> Join -> target
// over real loopback sockets (no TLS): the per-byte cost of the copy loop
// and the framing.
func BenchmarkJoin(b *testing.B) {
	for _, size := range []int{64, 32 << 10, 1 << 20} {
		b.Run(byteSize(size), func(b *testing.B) {
			cs, ss := yamuxPair(b)
			st1, st2 := streamPair(b, cs, ss)
			app, local1 := tcpPair(b)
			local2, target := tcpPair(b)
			done := make(chan struct{}, 2)
			go func() { Join(local1, st1, JoinConfig{}); done <- struct{}{} }()
			go func() { Join(local2, st2, JoinConfig{}); done <- struct{}{} }()
			msg := make([]byte, size)
			got := make(chan int64, 1)
			go func() {
				n, _ := io.Copy(io.Discard, target)
				got <- n
			}()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := app.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			app.CloseWrite()
			if n := <-got; n != int64(size)*int64(b.N) {
				b.Fatalf("target got %d bytes, want %d", n, int64(size)*int64(b.N))
			}
			target.CloseWrite()
			<-done
			<-done
		})
	}
}

// BenchmarkStreamOpen is the tunnel's cost of a new connection on an
// established session: open a stream, send the header, read the answer.
func BenchmarkStreamOpen(b *testing.B) {
	cs, ss := yamuxPair(b)
	go func() {
		for {
			st, err := ss.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				if _, err := ReadRequest(st); err == nil {
					st.Write(AppendResponse(nil, Response{Status: StatusOK}))
				}
				st.Close()
			}()
		}
	}()
	hdr, _ := AppendRequest(nil, Request{Route: "default", Src: benchRequest.Src, Dst: benchRequest.Dst})
	b.ReportAllocs()
	for b.Loop() {
		st, err := cs.OpenStream()
		if err != nil {
			b.Fatal(err)
		}
		st.Write(hdr)
		if resp, err := ReadResponse(st); err != nil || resp.Status != StatusOK {
			b.Fatal(resp, err)
		}
		st.Close()
	}
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.Itoa(n>>20) + "MiB"
	case n >= 1<<10:
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkTLSStream is BenchmarkJoin over real TLS 1.3, with yamux frame
// headers sent apart (as yamux does by itself) and coalesced with their
// bodies (frameConn): what the coalescing buys per byte.
func BenchmarkTLSStream(b *testing.B) {
	for _, mode := range []string{"separate", "coalesced"} {
		for _, size := range []int{1 << 10, 32 << 10} {
			b.Run(mode+"/"+byteSize(size), func(b *testing.B) {
				app, target := tlsPipeline(b, mode == "coalesced")
				got := make(chan int64, 1)
				go func() {
					n, _ := io.Copy(io.Discard, target)
					got <- n
				}()
				msg := make([]byte, size)
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, err := app.Write(msg); err != nil {
						b.Fatal(err)
					}
				}
				app.CloseWrite()
				if n := <-got; n != int64(size)*int64(b.N) {
					b.Fatalf("target got %d bytes, want %d", n, int64(size)*int64(b.N))
				}
			})
		}
	}
}

// BenchmarkTLSPingPong is a 64-byte round trip app -> target -> app over
// the TLS pipeline: the latency side of the coalescing (one record and one
// syscall per small frame instead of two).
func BenchmarkTLSPingPong(b *testing.B) {
	for _, mode := range []string{"separate", "coalesced"} {
		b.Run(mode, func(b *testing.B) {
			app, target := tlsPipeline(b, mode == "coalesced")
			go func() {
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(target, buf); err != nil {
						return
					}
					target.Write(buf)
				}
			}()
			msg, buf := make([]byte, 64), make([]byte, 64)
			for b.Loop() {
				app.Write(msg)
				if _, err := io.ReadFull(app, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// tlsPipeline is app <-> Join <-> yamux over TLS 1.3 <-> Join <-> target
// on loopback, torn down when the benchmark ends.
func tlsPipeline(b *testing.B, coalesce bool) (app, target *net.TCPConn) {
	ca := certstest.New(b)
	srvCreds := &Credentials{Certificate: ca.Server(b, "localhost"), Roots: ca.Pool()}
	cliCreds := &Credentials{Certificate: ca.Client(b, "app"), Roots: ca.Pool()}
	sp := &TLSPolicy{Credentials: func() *Credentials { return srvCreds }}
	cp := &TLSPolicy{Credentials: func() *Credentials { return cliCreds }, ServerName: "localhost"}
	a, c := tcpPair(b)
	tc, ts := tls.Client(a, cp.ClientConfig()), tls.Server(c, sp.ServerConfig())
	errc := make(chan error, 1)
	go func() { errc <- ts.Handshake() }()
	if err := tc.Handshake(); err != nil {
		b.Fatal(err)
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	wrap := func(c *tls.Conn) (net.Conn, *frameConn) {
		if !coalesce {
			return c, nil
		}
		fc := newFrameConn(c)
		return fc, fc
	}
	cw, cf := wrap(tc)
	sw, sf := wrap(ts)
	yc, _ := yamux.Client(cw, SessionConfig{}.yamux())
	ys, _ := yamux.Server(sw, SessionConfig{}.yamux())
	st1, st2 := streamPair(b, &Session{Session: yc, conn: cf}, &Session{Session: ys, conn: sf})
	app, local1 := tcpPair(b)
	local2, target := tcpPair(b)
	done := make(chan struct{}, 2)
	go func() { Join(local1, st1, JoinConfig{}); done <- struct{}{} }()
	go func() { Join(local2, st2, JoinConfig{}); done <- struct{}{} }()
	b.Cleanup(func() {
		app.Close()
		target.Close()
		<-done
		<-done
		yc.Close()
		ys.Close()
	})
	return app, target
}
