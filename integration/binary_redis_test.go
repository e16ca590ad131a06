package integration

// Redis from Debian's packages for the database tests: a server the test
// starts on loopback and a unix socket, and redis-cli and redis-benchmark
// as the apps.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// redisInstall is where Redis's programs are.
type redisInstall struct {
	server, cli, benchmark string
}

// findRedis finds redis-server (Debian package redis-server) and
// redis-cli and redis-benchmark (redis-tools) on the PATH.
func findRedis(t *testing.T) redisInstall {
	t.Helper()
	var r redisInstall
	for _, p := range []struct {
		name, pkg string
		path      *string
	}{
		{"redis-server", "redis-server", &r.server},
		{"redis-cli", "redis-tools", &r.cli},
		{"redis-benchmark", "redis-tools", &r.benchmark},
	} {
		path, err := exec.LookPath(p.name)
		if err != nil {
			skipOrFailExternal(t, "no %s on the PATH: install the Debian package %s", p.name, p.pkg)
		}
		*p.path = path
	}
	return r
}

// redisServer is a Redis a test started: addr is its TCP address on
// 127.0.0.1, socket its unix socket, proc the server and its log.
type redisServer struct {
	addr, socket string
	proc         *childProc
}

func (s redisServer) endpoints() dbEndpoints { return dbEndpoints{tcp: s.addr, socket: s.socket} }

// start runs redis-server until the test ends, with a configuration file
// in a fresh folder: listening on 127.0.0.1 and on dir/redis.sock, no
// persistence, log on stdout.
func (r redisInstall) start(t *testing.T) redisServer {
	t.Helper()
	dir := t.TempDir()
	socket := filepath.Join(dir, "redis.sock")
	conf := filepath.Join(dir, "redis.conf")
	// Like PostgreSQL, Redis takes a port number ("port 0" turns TCP off),
	// so it gets one the kernel just handed out, and starts again with
	// another should the port have been taken in between.
	for attempt := 1; ; attempt++ {
		port := freeLoopbackPort(t)
		text := fmt.Sprintf(`bind 127.0.0.1
port %s
unixsocket %s
unixsocketperm 700
dir %s
save ""
appendonly no
daemonize no
logfile ""
`, port, socket, dir)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, "redis-server", exec.Command(r.server, conf), syscall.SIGTERM)
		_, err := p.await(1, logContains("Ready to accept connections"))
		if err == nil {
			requireSocket(t, socket)
			return redisServer{addr: net.JoinHostPort("127.0.0.1", port), socket: socket, proc: p}
		}
		p.handled = true
		if attempt == 5 || !strings.Contains(p.out.dump(), "Address already in use") {
			t.Fatalf("start Redis: %v\n%s", err, p.out.dump())
		}
	}
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment
// ago, for servers that cannot listen on port 0 and report the port.
// Another process may take it before the server binds it: callers retry.
func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// redisApp runs redis-cli and redis-benchmark against addr. server is the
// server agent whose output a failure shows.
type redisApp struct {
	redisInstall
	addr   string
	server *childProc
}

// cli runs redis-cli with args, stdin as its input (for -x), and returns
// its output; it must exit 0 and print nothing on stderr.
func (a redisApp) cli(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	return a.run(t, stdin, a.redisInstall.cli, args...)
}

// benchmark runs redis-benchmark with args and returns its output.
func (a redisApp) benchmark(t *testing.T, args ...string) string {
	t.Helper()
	return a.run(t, nil, a.redisInstall.benchmark, args...)
}

func (a redisApp) run(t *testing.T, stdin []byte, bin string, args ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(a.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-h", host, "-p", port}, args...)...)
	cmd.Env = binaryEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("%s %s: %v\nstdout:\n%.2000s\nstderr:\n%s\nserver agent:\n%s", filepath.Base(bin), strings.Join(args, " "),
			err, stdout.String(), stderr.String(), a.server.out.dump())
	}
	return stdout.String()
}

// requireSocket fails the test unless path is a unix socket.
func requireSocket(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("want a unix socket: %v", err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("want a unix socket at %s, found mode %v", path, fi.Mode())
	}
}
