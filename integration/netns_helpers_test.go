package integration

// Two hosts on one machine for the tests that need real, non-loopback
// addresses and a link that can be cut: network namespaces "app" and "db"
// joined by a veth pair, made with iproute2 and removed when the test ends.
// The agents run in them as the built binary (`ip netns exec`); the test
// process makes its app and backend sockets in them (enterNetns).

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// netnsPrefix starts every namespace name; the test process's pid and a
// counter follow, so parallel runs and tests never share a name.
const netnsPrefix = "mtu-"

// netnsSeq numbers the pairs one test process makes.
var netnsSeq atomic.Int32

// netnsHost is one namespace: its name, its end of the veth pair and the
// IPv4 address on that end.
type netnsHost struct {
	name, dev, ip string
}

// netnsPair is the app host and the database host, 10.201.X.N/30 apart,
// X taken from the pid and N from the pair's number. The addresses exist
// only inside the two namespaces, so even a clash would stay private.
type netnsPair struct {
	app, db netnsHost
}

// newNetnsPair makes the two namespaces and their link, up, and removes
// them when the test ends, also after a failure; the veth pair goes with
// its namespaces. Where namespaces are not permitted (not root, a
// container without CAP_SYS_ADMIN) or iproute2 is missing the test skips,
// or fails under CI (MTUNNEL_REQUIRE_EXTERNAL=1).
func newNetnsPair(t *testing.T) netnsPair {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("network namespaces are Linux-only")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipOrFailExternal(t, "ip (Debian package iproute2) not found: %v", err)
	}
	removeStaleNetns()
	n := int(netnsSeq.Add(1))
	tag := fmt.Sprintf("%d-%d", os.Getpid(), n)
	x, base := os.Getpid()%256, 4*(n%64)
	p := netnsPair{
		app: netnsHost{name: netnsPrefix + "app-" + tag, dev: "veth-app", ip: fmt.Sprintf("10.201.%d.%d", x, base+1)},
		db:  netnsHost{name: netnsPrefix + "db-" + tag, dev: "veth-db", ip: fmt.Sprintf("10.201.%d.%d", x, base+2)},
	}
	for _, h := range []netnsHost{p.app, p.db} {
		out, err := exec.Command("ip", "netns", "add", h.name).CombinedOutput()
		if err != nil {
			msg := strings.TrimSpace(string(out))
			if strings.Contains(msg, "Operation not permitted") || strings.Contains(msg, "Permission denied") {
				skipOrFailExternal(t, "network namespaces not permitted here (ip netns add: %s): "+
					"the test needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN", msg)
			}
			t.Fatalf("ip netns add %s: %v: %s", h.name, err, msg)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", h.name).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", h.name, err, out)
			}
		})
		if err := enterNetns(h.path(), func() error { return nil }); errors.Is(err, syscall.EPERM) {
			skipOrFailExternal(t, "joining a network namespace is not permitted here: %v", err)
		} else if err != nil {
			t.Fatal(err)
		}
		h.run(t, "link", "set", "lo", "up")
	}
	p.app.run(t, "link", "add", p.app.dev, "type", "veth", "peer", "name", p.db.dev, "netns", p.db.name)
	for _, h := range []netnsHost{p.app, p.db} {
		h.run(t, "addr", "add", h.ip+"/30", "dev", h.dev)
		h.setLink(t, true)
	}
	return p
}

// removeStaleNetns removes the namespaces that test processes which have
// ended (killed, say, before their cleanup ran) left behind.
func removeStaleNetns() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(line, " ") // "NAME (id: N)"
		rest, ok := strings.CutPrefix(name, netnsPrefix)
		if !ok {
			continue
		}
		parts := strings.Split(rest, "-") // app-PID-N or db-PID-N
		if len(parts) != 3 || (parts[0] != "app" && parts[0] != "db") {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err == nil && pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// path is the namespace's file, which setns(2) takes.
func (h netnsHost) path() string { return filepath.Join("/var/run/netns", h.name) }

// run runs `ip -n NAME args...` and fails the test if it fails.
func (h netnsHost) run(t testing.TB, args ...string) {
	t.Helper()
	args = append([]string{"-n", h.name}, args...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// setLink brings the host's end of the veth pair up or down. Down, the
// other end loses its carrier too: nothing passes either way, and neither
// side gets a FIN or a reset.
func (h netnsHost) setLink(t testing.TB, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	h.run(t, "link", "set", h.dev, state)
}

// agent runs an mtunnel agent in the namespace until the test ends. `ip
// netns exec` execs mtunnel in place, so the process startProc signals is
// the agent itself.
func (h netnsHost) agent(t testing.TB, name string, args ...string) *childProc {
	t.Helper()
	cmd := agentCmd(t, nil, args...)
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Path = ip
	cmd.Args = append([]string{"ip", "netns", "exec", h.name}, cmd.Args...)
	return startProc(t, name+" ("+h.name+")", cmd, syscall.SIGTERM)
}

// listen returns a listener on 127.0.0.1:0 inside the namespace, e.g. for
// serveBackend.
func (h netnsHost) listen(t testing.TB) net.Listener {
	t.Helper()
	var ln net.Listener
	err := enterNetns(h.path(), func() (err error) {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", h.name, err)
	}
	return ln
}

// dial connects from inside the namespace, as an app on that host.
func (h netnsHost) dial(addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := enterNetns(h.path(), func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 10*time.Second)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s in %s: %w", addr, h.name, err)
	}
	return c.(*net.TCPConn), nil
}
