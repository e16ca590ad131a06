package integration

import (
	"io"
	"net"
	"testing"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// BenchmarkConnectEcho is the cost of one new app connection through both
// agents (in one process): connect, 1 byte there and back, close. Profile
// it with -cpuprofile to see where a connection's CPU goes.
func BenchmarkConnectEcho(b *testing.B) {
	ca := certstest.New(b)
	srv := startServer(b, server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(ca.Server(b, "localhost"), ca.Pool())},
		Routes: map[string]server.Route{"default": {Target: backend(b, echo), ACL: tunnel.ACL{AllowAll: true}}},
	})
	local := startClient(b, client.Config{
		Servers: []string{srv},
		TLS:     tunnel.TLSPolicy{Credentials: creds(ca.Client(b, "app"), ca.Pool()), ServerName: "localhost"},
		Routes:  []client.Route{{}},
	})[0]
	buf := make([]byte, 1)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c, err := net.Dial("tcp", local)
			if err != nil {
				b.Error(err)
				return
			}
			c.Write([]byte{'x'})
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Error(err)
			}
			c.Close()
		}
	})
}
