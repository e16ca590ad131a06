package integration

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unitFiles are the systemd units shipped in contrib/systemd.
var unitFiles = []string{"mtunnel-server.service", "mtunnel-client.service"}

// TestSystemdUnits: the shipped units pass `systemd-analyze verify` (with
// ExecStart pointed at the binary under test) and keep the sandboxing and
// lifecycle settings the README promises.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		skipOrFailExternal(t, "systemd-analyze is not on PATH; install the Debian package systemd")
	}
	bin := mtunnelBinary(t)
	required := []string{
		"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "KillSignal=SIGTERM",
		"User=mtunnel", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "PrivateDevices=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter=@system-service", "UMask=0077",
	}
	for _, name := range unitFiles {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "contrib", "systemd", name))
			if err != nil {
				t.Fatal(err)
			}
			unit := string(data)
			for _, line := range required {
				if !strings.Contains(unit, "\n"+line+"\n") {
					t.Errorf("%s lacks %q", name, line)
				}
			}
			// CAP_SYS_NICE and nothing else: --bulk-nice gives threads
			// their priority back with it.
			for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
				if !regexp.MustCompile(`(?m)^` + key + `=CAP_SYS_NICE$`).MatchString(unit) {
					t.Errorf("%s: %s must be CAP_SYS_NICE alone", name, key)
				}
			}
			// The filter denies @resources, which holds setpriority: the
			// agent calls it at start (--bulk-nice), and a denied call
			// must fail, not kill the agent.
			for _, line := range []string{"SystemCallFilter=setpriority", "SystemCallErrorNumber=EPERM"} {
				if !strings.Contains(unit, "\n"+line+"\n") {
					t.Errorf("%s lacks %q", name, line)
				}
			}
			start := regexp.MustCompile(`(?m)^ExecStart=(\S+) (server|client) --config (\S+)$`).FindStringSubmatch(unit)
			if start == nil {
				t.Fatalf("%s: no ExecStart=BINARY server|client --config FILE line", name)
			}
			if role := strings.TrimSuffix(strings.TrimPrefix(name, "mtunnel-"), ".service"); start[2] != role {
				t.Errorf("%s starts the %s agent", name, start[2])
			}
			// verify checks that ExecStart's program exists: point it at
			// the binary under test.
			local := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(local, []byte(strings.ReplaceAll(unit, start[1], bin)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", local).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "" {
				t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
			}
		})
	}
}

// notifySocket is a NOTIFY_SOCKET as systemd provides it to a Type=notify
// service: a unix datagram socket whose messages the test reads.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifySocket{path: path, conn: conn}
}

// next returns the next message, failing the test after 20 s.
func (n *notifySocket) next(t *testing.T) string {
	t.Helper()
	n.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	k, err := n.conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:k])
}

// TestSdNotifyBinary: under a service manager that set NOTIFY_SOCKET each
// agent says READY=1 once it listens (so a unit ordered after it finds the
// port open) and STOPPING=1 when SIGTERM starts its drain.
func TestSdNotifyBinary(t *testing.T) {
	k := newBinPKI(t, t.TempDir())
	target := backend(t, echo)
	srvNotify, cliNotify := newNotifySocket(t), newNotifySocket(t)
	server := startAgent(t, "server", []string{"NOTIFY_SOCKET=" + srvNotify.path}, k.serverArgs("127.0.0.1:0", target)...)
	msg := srvNotify.next(t)
	addr := server.listening(t)
	if msg != "READY=1\nSTATUS=listening on "+addr {
		t.Errorf("server's first notification %q, want READY=1 with its address %s", msg, addr)
	}
	client := startAgent(t, "client", []string{"NOTIFY_SOCKET=" + cliNotify.path}, k.clientArgs(addr)...)
	msg = cliNotify.next(t)
	local := client.listening(t)
	if !strings.HasPrefix(msg, "READY=1\nSTATUS=listening on ") || !strings.Contains(msg, local) {
		t.Errorf("client's first notification %q, want READY=1 with its address %s", msg, local)
	}
	// READY means listening: the app can connect at once.
	if err := echoCheck(t, local, 1<<10); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		proc   *childProc
		notify *notifySocket
	}{{client, cliNotify}, {server, srvNotify}} {
		p.proc.handled = true
		p.proc.cmd.Process.Signal(syscall.SIGTERM)
		if msg := p.notify.next(t); !strings.HasPrefix(msg, "STOPPING=1") {
			t.Errorf("%s: after SIGTERM %q, want STOPPING=1", p.proc.name, msg)
		}
		<-p.proc.done
		if p.proc.err != nil {
			t.Errorf("%s exit: %v", p.proc.name, p.proc.err)
		}
	}
}
