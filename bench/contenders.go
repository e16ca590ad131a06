package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// contender is one way from the load generator to the backend: addr is
// where apps connect, agents are the processes in between (none for
// direct). echoAddr, if the phase asked for it, is a second route through
// the same agents to the ping helper's echo server (headOfLine).
type contender struct {
	name     string
	addr     string
	echoAddr string
	agents   []*agent
}

func (c *contender) pids() []int {
	var out []int
	for _, a := range c.agents {
		out = append(out, a.cmd.Process.Pid)
	}
	return out
}

// alive reports an error naming any agent that has exited.
func (c *contender) alive() error {
	for _, a := range c.agents {
		if !a.alive() {
			return fmt.Errorf("%s exited: %v; last lines:\n%s", a.name, a.err, a.logs.tail())
		}
	}
	return nil
}

// stop ends the agents, clients first, and reports slow or failed exits.
func (c *contender) stop() []error {
	var errs []error
	for i := len(c.agents) - 1; i >= 0; i-- {
		if took, err := c.agents[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		} else if took > 2*time.Second {
			errs = append(errs, fmt.Errorf("%s took %v to exit after SIGTERM", c.agents[i].name, took.Round(time.Millisecond)))
		}
	}
	return errs
}

// pki is a certificate folder made with `mtunnel certs`, as the README does.
type pki struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

const serverName = "db.example.com"

func makePKI(bin, dir string) (pki, error) {
	cmds := [][]string{
		{"certs", "init", "--dir", dir},
		{"certs", "issue", "--dir", dir, "--name", serverName, "--server", "--dns", serverName, "--ip", "127.0.0.1"},
		{"certs", "issue", "--dir", dir, "--name", "app", "--client"},
	}
	for _, args := range cmds {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			return pki{}, fmt.Errorf("mtunnel %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	f := func(name string) string { return filepath.Join(dir, name) }
	return pki{f("ca.crt"), f(serverName + ".crt"), f(serverName + ".key"), f("app.crt"), f("app.key")}, nil
}

// mtunnelSpec is how to run the mtunnel agents.
type mtunnelSpec struct {
	bin        string
	pki        pki
	dir        string // for the config files of a second route
	sessions   int    // --sessions on the client agent; 0: the binary's default
	gomaxprocs int    // GOMAXPROCS of each agent; 0: the runtime's default
	flagOK     func(cmd, flag string) bool
}

// startMtunnel starts a server agent forwarding route "default" to target
// and a client agent offering it; with echo set, both also carry route
// "echo" to echo.
func startMtunnel(name string, s mtunnelSpec, target, echo string, logs *logStats) (*contender, error) {
	// GOMAXPROCS goes as a flag if the binary has one, else through the
	// variable the Go runtime reads.
	var env, extra []string
	if s.gomaxprocs > 0 && s.flagOK("server", "gomaxprocs") {
		extra = []string{"--gomaxprocs", strconv.Itoa(s.gomaxprocs)}
	} else if s.gomaxprocs > 0 {
		env = []string{"GOMAXPROCS=" + strconv.Itoa(s.gomaxprocs)}
	}
	common := []string{s.bin, "--log-format", "json", "--log-level", "info"}
	srvArgs := slices.Concat(common, []string{"server", "--listen", "127.0.0.1:0", "--cert", s.pki.serverCert,
		"--key", s.pki.serverKey, "--ca", s.pki.ca, "--target", target, "--allow-cn", "app"}, extra)
	cliRoutes := []string{"--listen", "127.0.0.1:0"}
	if echo != "" {
		srvConf, cliConf, err := writeEchoRoute(s.dir, name, echo)
		if err != nil {
			return nil, err
		}
		srvArgs = append(srvArgs, "--config", srvConf)
		cliRoutes = []string{"--config", cliConf}
	}
	c := &contender{name: name}
	srv, err := startAgent(name+" server", srvArgs, env, parseMtunnel, logs)
	if err != nil {
		return nil, err
	}
	c.agents = append(c.agents, srv)
	srvAddr, err := srv.waitReady(10 * time.Second)
	if err != nil {
		c.stop()
		return nil, err
	}
	cliArgs := slices.Concat(common, []string{"client", "--server", srvAddr, "--server-name", serverName,
		"--cert", s.pki.clientCert, "--key", s.pki.clientKey, "--ca", s.pki.ca}, cliRoutes, extra)
	if s.sessions > 0 && s.flagOK("client", "sessions") {
		cliArgs = append(cliArgs, "--sessions", strconv.Itoa(s.sessions))
	}
	cli, err := startAgent(name+" client", cliArgs, env, parseMtunnel, logs)
	if err != nil {
		c.stop()
		return nil, err
	}
	c.agents = append(c.agents, cli)
	routes := 1
	if echo != "" {
		routes = 2
	}
	addrs, err := waitPool(cli, routes, cmp.Or(s.sessions, max(2, runtime.NumCPU())))
	if err != nil {
		c.stop()
		return nil, err
	}
	c.addr = addrs[0]
	if echo != "" {
		c.echoAddr = addrs[1]
	}
	return c, nil
}

// waitPool waits until the client agent listens on each of its routes (one
// "listening" line per route, in the config's order) and has all its
// sessions up (the --sessions it was given, or the agent's default: the
// CPUs, at least 2). The first session comes up soon after the listeners,
// the others a little later; a workload started in between found one
// session only, and measured whatever that gave. The head-of-line figure
// depended on it: the 8 bulk streams all went to the first session and
// the ping, opened later, had the second to itself, or not, from one round
// to the next.
func waitPool(cli *agent, routes, sessions int) ([]string, error) {
	var addrs []string
	up := 0
	for len(addrs) < routes || up < sessions {
		v, err := cli.waitReady(10 * time.Second)
		if err != nil {
			return nil, fmt.Errorf("waiting for %d listeners and %d sessions (have %d and %d): %w", routes, sessions, len(addrs), up, err)
		}
		if strings.HasPrefix(v, sessionReady) {
			up++
		} else {
			addrs = append(addrs, v)
		}
	}
	return addrs, nil
}

// writeEchoRoute writes the config files that add route "echo", to echo,
// to the agents started with flags: the server's routes merge with its
// --target ("default"); the client's list both routes, "default" first.
func writeEchoRoute(dir, name, echo string) (srvConf, cliConf string, err error) {
	srv := fmt.Sprintf("routes:\n  echo:\n    target: %s\n    allow:\n      - cn: app\n", echo)
	cli := "routes:\n" +
		"  - listen: 127.0.0.1:0\n    route: default\n" +
		"  - listen: 127.0.0.1:0\n    route: echo\n"
	srvConf = filepath.Join(dir, name+"-server.yaml")
	cliConf = filepath.Join(dir, name+"-client.yaml")
	if err := os.WriteFile(srvConf, []byte(srv), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(cliConf, []byte(cli), 0o600); err != nil {
		return "", "", err
	}
	return srvConf, cliConf, nil
}

// flagChecker reports whether `bin CMD --help` lists --FLAG, so the bench
// passes only flags the binary under test knows.
func flagChecker(bin string) func(cmd, flag string) bool {
	help := map[string]string{}
	return func(cmd, flag string) bool {
		h, ok := help[cmd]
		if !ok {
			out, _ := exec.Command(bin, cmd, "--help").CombinedOutput()
			h = string(out)
			help[cmd] = h
		}
		return strings.Contains(h, "--"+flag+" ")
	}
}

// startStunnel runs a stunnel client and server in mutual TLS 1.3 with the
// same certificates as mtunnel: service "bench" to target and, with echo
// set, service "echo" to echo. stunnel takes port numbers, so ports are
// picked by binding :0 and closing; a lost race is retried.
func startStunnel(bin, dir string, k pki, target, echo string, logs *logStats) (*contender, error) {
	var err error
	for range 5 {
		var c *contender
		if c, err = tryStunnel(bin, dir, k, target, echo, logs); err == nil {
			return c, nil
		}
	}
	return nil, err
}

// stunnelService is one section of a stunnel config.
type stunnelService struct {
	name, accept, connect string
}

func tryStunnel(bin, dir string, k pki, target, echo string, logs *logStats) (*contender, error) {
	srvSvcs := []stunnelService{{"bench", "", target}}
	if echo != "" {
		srvSvcs = append(srvSvcs, stunnelService{"echo", "", echo})
	}
	n := len(srvSvcs)
	ports, err := freePorts(2 * n) // the server's accept ports, then the client's
	if err != nil {
		return nil, err
	}
	cliSvcs := make([]stunnelService, n)
	for i := range srvSvcs {
		srvSvcs[i].accept = "127.0.0.1:" + strconv.Itoa(ports[i])
		cliSvcs[i] = stunnelService{srvSvcs[i].name, "127.0.0.1:" + strconv.Itoa(ports[n+i]), srvSvcs[i].accept}
	}
	// verify = 2: a peer certificate is required and its chain checked
	// against CAfile; the client also checks the server's name.
	srvConf := stunnelConf(false, srvSvcs, k.serverCert, k.serverKey, k.ca, "verify = 2")
	cliConf := stunnelConf(true, cliSvcs, k.clientCert, k.clientKey, k.ca, "verify = 2\ncheckHost = "+serverName)
	c := &contender{name: "stunnel", addr: cliSvcs[0].accept}
	if echo != "" {
		c.echoAddr = cliSvcs[1].accept
	}
	for i, conf := range []string{srvConf, cliConf} {
		role := []string{"server", "client"}[i]
		path := filepath.Join(dir, "stunnel-"+role+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			c.stop()
			return nil, err
		}
		a, err := startAgent("stunnel "+role, []string{bin, path}, nil, parseStunnel, logs)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.agents = append(c.agents, a)
		if _, err := a.waitReady(10 * time.Second); err != nil {
			c.stop()
			return nil, err
		}
		// "Configuration successful" comes just before the binds: wait for
		// the ports to listen, or for the process to fail binding one.
		for _, port := range ports[i*n : (i+1)*n] {
			if err := waitListening(a, port); err != nil {
				c.stop()
				return nil, err
			}
		}
	}
	return c, nil
}

func stunnelConf(client bool, services []stunnelService, cert, key, ca, verify string) string {
	conf := "foreground = yes\npid =\n"
	for _, s := range services {
		conf += fmt.Sprintf(`[%s]
client = %s
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
%s
sslVersionMin = TLSv1.3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
`, s.name, map[bool]string{true: "yes", false: "no"}[client], s.accept, s.connect, cert, key, ca, verify)
	}
	return conf
}

// waitListening polls /proc/net/tcp for a listening socket on port until a
// exits or 10 s pass.
func waitListening(a *agent, port int) error {
	want := fmt.Sprintf(":%04X 00000000:0000 0A", port)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if !a.alive() {
			return fmt.Errorf("%s exited: %v; last lines:\n%s", a.name, a.err, a.logs.tail())
		}
		b, _ := os.ReadFile("/proc/net/tcp")
		if strings.Contains(string(b), want) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: nothing listens on port %d after 10s", a.name, port)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// probeEcho checks a contender's whole path to the echo backend once: one
// byte echoed within 10 s.
func probeEcho(c *contender) error {
	b, err := probeAnswer(c, []byte{modeEcho})
	if err == nil && b != modeEcho {
		err = errors.New("wrong byte echoed")
	}
	if err != nil {
		return fmt.Errorf("%s: probe echo: %w", c.name, err)
	}
	return nil
}

// probeAnswer sends msg through a new connection to c and reads the first
// byte of the answer, all within 10 s.
func probeAnswer(c *contender, msg []byte) (byte, error) {
	conn, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err = conn.Write(msg); err == nil {
		_, err = io.ReadFull(conn, b[:])
	}
	return b[0], err
}
