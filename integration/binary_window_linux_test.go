package integration

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// TestTalkWindowBinary: the real agents hold their tunnel sockets' receive
// windows small only while a stream talks (--tunnel-recv-buffer auto,
// tunnel/sockopt_linux.go). A bulk transfer alone leaves them to Linux's
// autotuning: mtunnel_tunnel_windows_held stays 0 in both agents. A ping
// on the same session beside it holds them (1 or more in both), and they
// are let go when the ping stops while the bulk goes on. Every byte
// echoes intact throughout.
func TestTalkWindowBinary(t *testing.T) {
	client, server, local, admins := startEchoAgents(t, 1, nil, nil)
	agents := []*childProc{client, server}
	held := func(want bool) error {
		for _, a := range agents {
			n, ok := scrape(t, admins[a]).value("mtunnel_tunnel_windows_held")
			switch {
			case !ok:
				return fmt.Errorf("%s agent: no mtunnel_tunnel_windows_held", a.name)
			case want && n < 1, !want && n != 0:
				return fmt.Errorf("%s agent: mtunnel_tunnel_windows_held %v", a.name, n)
			}
		}
		return nil
	}

	bulk := newTalk()
	b, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	bulk.run(func(stop <-chan struct{}) error { return bulkEcho(b, stop) })
	// A stream's first reads count as talk until it reads full buffers:
	// wait for 64 MiB to have gone up, and then for the windows to be
	// let go.
	up := func() error {
		n, _ := scrape(t, admins[client]).value("mtunnel_stream_bytes_total", "direction", "up")
		if n < 64<<20 {
			return fmt.Errorf("client agent: %v bytes up of 64 MiB", n)
		}
		return held(false)
	}
	if err := waitFor(30*time.Second, up); err != nil {
		bulk.abort()
		t.Fatalf("bulk alone: %v", err)
	}
	// Waiting for something not to happen: a second of bulk data, in
	// which every agent's receive loop looks hundreds of times.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := held(false); err != nil {
			bulk.abort()
			t.Fatalf("bulk alone: %v", err)
		}
	}

	ping := newTalk()
	p, err := net.Dial("tcp", local) // the same session: the client has one
	if err != nil {
		bulk.abort()
		t.Fatal(err)
	}
	ping.run(func(stop <-chan struct{}) error { return pingEcho(p, stop) })
	if err := waitFor(30*time.Second, func() error { return held(true) }); err != nil {
		ping.abort()
		bulk.abort()
		t.Fatalf("a ping beside the bulk: %v", err)
	}
	ping.endThenRestored(t, held) // the bulk goes on: its reads let the windows go
	bulk.endThenRestored(t, held)
}
