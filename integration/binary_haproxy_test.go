package integration

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// needHAProxy returns the path of the haproxy command. Without one it
// skips the test, naming the Debian package, or fails it under CI.
func needHAProxy(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		skipOrFailExternal(t, "haproxy is not on PATH; install the Debian package haproxy: %v", err)
	}
	return bin
}

// startHAProxy runs HAProxy in TCP mode, accepting PROXY protocol headers
// (accept-proxy) on a unix socket at path and forwarding to target. It
// logs one line per connection on stdout, when the connection ends:
//
//	pp src=<source from the header> dst=<destination from the header>
//
// The test binds the socket and hands it over as fd 3 (bind fd@3), so
// HAProxy serves it from the moment it starts: no port to guess, nothing
// to wait for.
func startHAProxy(t *testing.T, path, target string) *childProc {
	t.Helper()
	bin := needHAProxy(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // HAProxy keeps serving it after we close our copy
	defer ln.Close()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg := filepath.Join(filepath.Dir(path), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global
    log stdout format raw local0 info
    nbthread 1
defaults
    mode tcp
    log global
    timeout connect 10s
    timeout client 1m
    timeout server 1m
frontend fe
    bind fd@3 accept-proxy
    log-format "pp src=%%ci:%%cp dst=%%fi:%%fp"
    default_backend be
backend be
    server target %s
`, target)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", cfg, "-db")
	cmd.ExtraFiles = []*os.File{f}                       // fd 3
	return startProc(t, "haproxy", cmd, syscall.SIGUSR1) // SIGUSR1: soft stop, exit 0
}

// TestProxyProtocolHAProxy: the built server agent, with --proxy-protocol
// v2 and a unix socket target, in front of HAProxy, a real receiver of
// PROXY v2. HAProxy logs the app's address and the address it connected
// to, as the client agents saw them (IPv4, IPv6), and a LOCAL header for
// an app on a unix socket; it accepts every header (whose TLVs it walks
// and checks to the byte) and passes the stream's bytes on intact, which
// it would not if the header's length were wrong.
func TestProxyProtocolHAProxy(t *testing.T) {
	needHAProxy(t)
	dir := t.TempDir()
	hapSock := filepath.Join(dir, "haproxy.sock")
	hap := startHAProxy(t, hapSock, backend(t, echo))
	k := newBinPKI(t, filepath.Join(dir, "pki"))
	srv := startAgent(t, "server", nil, append(k.serverArgs("127.0.0.1:0", "unix:"+hapSock), "--proxy-protocol", "v2")...)
	srvAddr := srv.listening(t)

	listens := []string{"127.0.0.1:0"}
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln.Close()
		listens = append(listens, "[::1]:0")
	} else {
		t.Logf("no IPv6 loopback, IPv6 case skipped: %v", err)
	}
	for _, listen := range listens {
		cl := startAgent(t, "client "+listen, nil, withFlag(k.clientArgs(srvAddr), "--listen", listen)...)
		addr := cl.listening(t)
		app := echoFrom(t, addr)
		dst, err := netip.ParseAddrPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		// HAProxy writes host:port without brackets, also for IPv6.
		want := fmt.Sprintf("pp src=%s:%d dst=%s:%d", app.Addr(), app.Port(), dst.Addr(), dst.Port())
		if _, err := hap.await(1, func(r record) bool { return r.msg == want }); err != nil {
			t.Fatalf("HAProxy did not log %q: %v\nHAProxy:\n%s\nserver:\n%s", want, err, hap.out.dump(), srv.out.dump())
		}
	}

	appSock := filepath.Join(dir, "app.sock")
	startAgent(t, "client unix", nil, withFlag(k.clientArgs(srvAddr), "--listen", "unix:"+appSock)...).listening(t)
	echoFrom(t, "unix:"+appSock)
	// LOCAL: HAProxy keeps the addresses of its own connection, a unix one.
	if _, err := hap.await(1, func(r record) bool { return strings.HasPrefix(r.msg, "pp src=unix") }); err != nil {
		t.Fatalf("HAProxy did not log the unix app's stream: %v\nHAProxy:\n%s", err, hap.out.dump())
	}
	if out := hap.out.dump(); strings.Contains(out, "PROXY protocol") {
		t.Fatalf("HAProxy complained about a PROXY header:\n%s", out)
	}
}
