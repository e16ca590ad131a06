package integration

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// proxyInfo is what a PROXY protocol v2 header told a backend.
type proxyInfo struct {
	command            byte // 0 LOCAL, 1 PROXY
	src, dst           netip.AddrPort
	sslClient          byte
	sslVerify          uint32
	tlsVersion, cn     string
	uris               []string
	identity           string
	otherTLVs, sslSubs int // TLVs of types the test does not expect
}

// readProxyHeader reads a PROXY protocol v2 header off r the way a
// receiver would (HAProxy's proxy-protocol.txt, section 2.2), exactly its
// bytes, and decodes the TLVs mtunnel sends. It is written from the spec,
// not from tunnel's encoder.
func readProxyHeader(r io.Reader) (proxyInfo, error) {
	var p proxyInfo
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return p, fmt.Errorf("read PROXY header: %w", err)
	}
	if string(fixed[:12]) != "\r\n\r\n\x00\r\nQUIT\n" || fixed[12]>>4 != 2 {
		return p, fmt.Errorf("not a PROXY v2 header: %q", fixed[:])
	}
	p.command = fixed[12] & 0x0f
	rest := make([]byte, binary.BigEndian.Uint16(fixed[14:]))
	if _, err := io.ReadFull(r, rest); err != nil {
		return p, fmt.Errorf("read PROXY header: %w", err)
	}
	switch fam := fixed[13]; {
	case p.command == 0 && fam == 0x00:
	case p.command == 1 && (fam == 0x11 || fam == 0x21):
		n := map[byte]int{0x11: 4, 0x21: 16}[fam]
		if len(rest) < 2*n+4 {
			return p, errors.New("PROXY header: address block cut")
		}
		s, _ := netip.AddrFromSlice(rest[:n])
		d, _ := netip.AddrFromSlice(rest[n : 2*n])
		p.src = netip.AddrPortFrom(s, binary.BigEndian.Uint16(rest[2*n:]))
		p.dst = netip.AddrPortFrom(d, binary.BigEndian.Uint16(rest[2*n+2:]))
		rest = rest[2*n+4:]
	default:
		return p, fmt.Errorf("PROXY header: command %d, family %#x", p.command, fam)
	}
	err := eachTLV(rest, func(typ byte, v []byte) error {
		switch typ {
		case 0x20: // PP2_TYPE_SSL
			if len(v) < 5 {
				return errors.New("PP2_TYPE_SSL too short")
			}
			p.sslClient, p.sslVerify = v[0], binary.BigEndian.Uint32(v[1:])
			return eachTLV(v[5:], func(sub byte, sv []byte) error {
				switch sub {
				case 0x21:
					p.tlsVersion = string(sv)
				case 0x22:
					p.cn = string(sv)
				default:
					p.sslSubs++
				}
				return nil
			})
		case tunnel.PP2TypeClientURI:
			p.uris = append(p.uris, string(v))
		case tunnel.PP2TypeClientIdentity:
			p.identity = string(v)
		default:
			p.otherTLVs++
		}
		return nil
	})
	return p, err
}

func eachTLV(b []byte, f func(byte, []byte) error) error {
	for len(b) > 0 {
		if len(b) < 3 {
			return fmt.Errorf("PROXY header: %d bytes, less than a TLV", len(b))
		}
		n := int(binary.BigEndian.Uint16(b[1:]))
		if len(b) < 3+n {
			return fmt.Errorf("PROXY header: TLV %#x overruns the header", b[0])
		}
		if err := f(b[0], b[3:3+n]); err != nil {
			return err
		}
		b = b[3+n:]
	}
	return nil
}

// proxyBackend is a target that reads a PROXY header, reports it on the
// channel, and echoes the rest of the connection.
func proxyBackend(t *testing.T) (string, <-chan proxyInfo) {
	got := make(chan proxyInfo, 16)
	addr := backend(t, func(c *net.TCPConn) {
		info, err := readProxyHeader(c)
		if err != nil {
			t.Errorf("backend: %v", err)
			return
		}
		got <- info
		echo(c)
	})
	return addr, got
}

// echoFrom sends 256 KiB through addr (host:port or unix:/path), half-closes,
// checks the SHA-256 of the echo, and returns the app's own address (zero
// for a unix socket).
func echoFrom(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	c, err := dialAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	payload := random(t, 256<<10)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = closeWrite(c)
		}
		werr <- err
	}()
	back, err := io.ReadAll(c)
	if err := errors.Join(err, <-werr); err != nil {
		t.Fatalf("echo through %s: %v", addr, err)
	}
	if sha256.Sum256(back) != sha256.Sum256(payload) {
		t.Fatalf("echo through %s: %d bytes back, checksum differs (a PROXY header in the data?)", addr, len(back))
	}
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

func awaitProxyInfo(t *testing.T, got <-chan proxyInfo) proxyInfo {
	t.Helper()
	select {
	case p := <-got:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("the backend saw no PROXY header")
		return proxyInfo{}
	}
}

// TestProxyProtocolV2: a route with proxy_protocol v2 gives its target a
// PROXY v2 header before the stream's bytes, saying where the app
// connected from and to (IPv4, IPv6), or LOCAL for an app on a unix
// socket, and who the client is (PP2_TYPE_SSL with the CN, the URI SAN and
// identity TLVs). A route without it sends no header. The stream's bytes
// follow the header intact, and the server logs the app's address.
func TestProxyProtocolV2(t *testing.T) {
	ca := certstest.New(t)
	logs := newLogSink(t)
	ppAddr, infos := proxyBackend(t)
	const uri = "spiffe://test.example/ns/prod/sa/app"
	allow := tunnel.ACL{Rules: []tunnel.Rule{{URI: uri}}}
	srv := startServer(t, server.Config{
		TLS: tunnel.TLSPolicy{Credentials: creds(ca.Server(t, "localhost"), ca.Pool())},
		Routes: map[string]server.Route{
			"pp":    {Target: ppAddr, ACL: allow, ProxyProtocol: server.ProxyV2},
			"plain": {Target: backend(t, echo), ACL: allow},
		},
		Logger: logs.logger("server"),
	})
	routes := []client.Route{
		{Listen: "127.0.0.1:0", Route: "pp"},
		{Listen: "unix:" + filepath.Join(t.TempDir(), "app.sock"), Route: "pp"},
		{Listen: "127.0.0.1:0", Route: "plain"},
	}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln.Close()
		routes = append(routes, client.Route{Listen: "[::1]:0", Route: "pp"})
	} else {
		t.Logf("no IPv6 loopback, IPv6 case skipped: %v", err)
	}
	addrs := startClient(t, client.Config{
		Servers: []string{srv},
		TLS:     tunnel.TLSPolicy{Credentials: creds(ca.Client(t, "app", uri), ca.Pool()), ServerName: "localhost"},
		Routes:  routes,
	})

	checkIdentity := func(p proxyInfo) {
		t.Helper()
		if p.sslClient != 0x07 || p.sslVerify != 0 || p.tlsVersion != "TLSv1.3" || p.cn != "app" ||
			len(p.uris) != 1 || p.uris[0] != uri || p.identity != "CN=app URI="+uri || p.otherTLVs+p.sslSubs != 0 {
			t.Fatalf("identity in the PROXY header: SSL client %#x verify %d version %q CN %q, URIs %q, identity %q, %d unexpected TLVs",
				p.sslClient, p.sslVerify, p.tlsVersion, p.cn, p.uris, p.identity, p.otherTLVs+p.sslSubs)
		}
	}
	for i, r := range routes {
		if r.Route != "pp" || strings.HasPrefix(r.Listen, tunnel.UnixPrefix) {
			continue
		}
		app := echoFrom(t, addrs[i])
		p := awaitProxyInfo(t, infos)
		if want := netip.MustParseAddrPort(addrs[i]); p.command != 1 || p.src != app || p.dst != want {
			t.Fatalf("app %v -> %v: PROXY header says command %d, %v -> %v", app, want, p.command, p.src, p.dst)
		}
		checkIdentity(p)
		logs.waitFor(t, "stream line with the app address", msgAttr("stream ended", "agent", "server", "route", "pp", "app", app.String()))
	}

	echoFrom(t, "unix:"+addrs[1])
	p := awaitProxyInfo(t, infos)
	if p.command != 0 || p.src.IsValid() || p.dst.IsValid() {
		t.Fatalf("app on a unix socket: PROXY header says command %d, %v -> %v; want LOCAL without addresses", p.command, p.src, p.dst)
	}
	checkIdentity(p)

	echoFrom(t, addrs[2]) // the echo would carry a header, had one been sent
	select {
	case p := <-infos:
		t.Fatalf("unexpected PROXY header %+v", p)
	default:
	}
}

// TestProxyProtocolIdentityTooLong: a client whose certificate names do
// not fit in a PROXY header (tunnel.MaxProxyHeaderLen) is refused on a
// route with proxy_protocol v2, before the target is dialled; its app gets
// a reset, and the refusal is logged as forbidden.
func TestProxyProtocolIdentityTooLong(t *testing.T) {
	ca := certstest.New(t)
	logs := newLogSink(t)
	var uris []string
	for i := range 40 {
		uris = append(uris, fmt.Sprintf("spiffe://test.example/%02d/%s", i, strings.Repeat("s", 100)))
	}
	target := backend(t, func(c *net.TCPConn) { t.Errorf("the target was dialled") })
	srv := startServer(t, server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(ca.Server(t, "localhost"), ca.Pool())},
		Routes: map[string]server.Route{"pp": {Target: target, ACL: tunnel.ACL{AllowAll: true}, ProxyProtocol: server.ProxyV2}},
		Logger: logs.logger("server"),
	})
	addr := startClient(t, client.Config{
		Servers: []string{srv},
		TLS:     tunnel.TLSPolicy{Credentials: creds(ca.Client(t, "app", uris...), ca.Pool()), ServerName: "localhost"},
		Routes:  []client.Route{{Route: "pp"}},
	})[0]
	if err := echoCheck(t, addr, 1024); err == nil {
		t.Fatal("an identity too long for the PROXY header got through")
	}
	r := logs.waitFor(t, "stream rejected as forbidden", msgAttr("stream rejected", "agent", "server", "route", "pp", "result", "forbidden"))
	if !strings.Contains(r.attrs["reason"], "PROXY protocol header") {
		t.Fatalf("reason %q does not say why", r.attrs["reason"])
	}
}
