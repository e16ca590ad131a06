package tunnel

import (
	"bytes"
	"io"
	"strconv"
	"testing"
)

// Run with: go test -run '^$' -bench . -benchmem ./tunnel/ (compare runs
// with benchstat).

func BenchmarkAppendRequest(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendRequest(buf[:0], "postgres")
	}
}

func BenchmarkReadRequest(b *testing.B) {
	hdr, _ := AppendRequest(nil, "postgres")
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
	hdr, _ := AppendRequest(nil, "default")
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
