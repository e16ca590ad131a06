package integration

import (
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// unixBackend runs handle for every connection on a unix socket at path
// until the test ends, and waits for the handlers.
func unixBackend(t testing.TB, path string, handle func(net.Conn)) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	serveConns(t, ln, handle)
}

// echoConn echoes until EOF and then half-closes, on any connection that
// can.
func echoConn(c net.Conn) {
	io.Copy(c, c)
	closeWrite(c)
}

// checkSocketMode fails unless path is a socket file with mode's
// permission bits.
func checkSocketMode(t testing.TB, path string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != mode {
		t.Fatalf("%s: mode %v, want a socket with %v", path, fi.Mode(), mode)
	}
}

// staleSocket leaves a socket file at path that nothing listens on, as a
// client agent killed with SIGKILL does.
func staleSocket(t testing.TB, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

// TestUnixSockets: an app connects to the client agent on a unix socket,
// and the server agent's target is a unix socket. Bytes arrive intact both
// ways with half-close, the socket file has the configured mode, a stale
// socket file is replaced at start, and the file is gone after the agent
// stops.
func TestUnixSockets(t *testing.T) {
	ca := certstest.New(t)
	dir := t.TempDir()
	echoPath := filepath.Join(dir, "echo.sock")
	unixBackend(t, echoPath, echoConn)
	serverAddr := startServer(t, server.Config{
		TLS:    tunnel.TLSPolicy{Credentials: creds(ca.Server(t, "localhost"), ca.Pool())},
		Routes: map[string]server.Route{"pg": {Target: "unix:" + echoPath, ACL: tunnel.ACL{Rules: []tunnel.Rule{{CN: "app"}}}}},
	})
	appPath := filepath.Join(dir, "app.sock")
	staleSocket(t, appPath)
	cl, err := client.New(client.Config{
		Servers: []string{serverAddr},
		TLS:     tunnel.TLSPolicy{Credentials: creds(ca.Client(t, "app"), ca.Pool()), ServerName: "localhost"},
		Routes:  []client.Route{{Listen: "unix:" + appPath, Route: "pg", ListenMode: 0o660}},
	})
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := cl.Listen()
	if err != nil {
		t.Fatalf("listen over a stale socket file: %v", err)
	}
	if addrs[0].Network() != "unix" || addrs[0].String() != appPath {
		t.Fatalf("listening on %s %s, want unix %s", addrs[0].Network(), addrs[0], appPath)
	}
	stop := runUntilCleanup(t, cl.Serve)
	checkSocketMode(t, appPath, 0o660)
	for _, n := range []int{1, 64 << 10, 4 << 20} {
		if err := echoCheck(t, "unix:"+appPath, n); err != nil {
			t.Fatalf("%d bytes through unix sockets at both ends: %v", n, err)
		}
	}
	stop()
	if _, err := os.Lstat(appPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left after the client agent stopped: %v", err)
	}
}

// TestUnixSocketInUse: a client agent refuses a socket path another
// process listens on, and leaves that socket alone.
func TestUnixSocketInUse(t *testing.T) {
	ca := certstest.New(t)
	path := filepath.Join(t.TempDir(), "app.sock")
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	cl, err := client.New(client.Config{
		Servers: []string{"127.0.0.1:1"},
		TLS:     tunnel.TLSPolicy{Credentials: creds(ca.Client(t, "app"), ca.Pool()), ServerName: "localhost"},
		Routes:  []client.Route{{Listen: "unix:" + path}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Listen(); !errors.Is(err, client.ErrSocketInUse) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Listen on a live socket: err = %v, want ErrSocketInUse naming %s", err, path)
	}
	if c, err := net.Dial("unix", path); err != nil {
		t.Fatalf("the other process's socket is gone: %v", err)
	} else {
		c.Close()
	}
}
