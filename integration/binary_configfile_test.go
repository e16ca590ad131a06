package integration

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
)

// digestBackend answers the hex SHA-256 of everything it reads.
func digestBackend(c *net.TCPConn) {
	h := sha256.New()
	io.Copy(h, c)
	fmt.Fprintf(c, "%x", h.Sum(nil))
	c.CloseWrite()
}

// TestConfigFilesTwoRoutesBinary runs both agents from YAML files with two
// routes each. Certificate paths in the files are relative and the agents
// run in another folder, so they only load if resolved against the file's
// folder.
func TestConfigFilesTwoRoutesBinary(t *testing.T) {
	confDir := t.TempDir()
	newBinPKI(t, filepath.Join(confDir, "pki"))
	echoAddr, digestAddr := backend(t, echo), backend(t, digestBackend)
	serverConf := writeConfigFile(t, confDir, "server.yaml", serverYAMLTemplate, "127.0.0.1:0",
		fmt.Sprintf("  echo:\n    target: %s\n    allow:\n      - cn: app\n", echoAddr)+
			fmt.Sprintf("  digest:\n    target: %s\n    allow_all: true\n", digestAddr))
	cmd := agentCmd(t, nil, "server", "--config", serverConf)
	cmd.Dir = t.TempDir()
	server := startProc(t, "server", cmd, syscall.SIGTERM)
	server.waitLog(t, "listening", "routes", "2")

	clientConf := writeConfigFile(t, confDir, "client.yaml", `server: %s
tls:
  cert: pki/app.crt
  key: pki/app.key
  ca: pki/ca.crt
  server_name: db.example.com
routes:
  - listen: 127.0.0.1:0
    route: echo
  - listen: 127.0.0.1:0
    route: digest
`, server.listening(t))
	cmd = agentCmd(t, nil, "client", "--config", clientConf)
	cmd.Dir = t.TempDir()
	client := startProc(t, "client", cmd, syscall.SIGTERM)
	echoLocal := client.listening(t, "route", "echo")
	digestLocal := client.listening(t, "route", "digest")

	if err := echoCheck(t, echoLocal, 1<<20); err != nil {
		t.Fatalf("route echo: %v", err)
	}
	payload := random(t, 1<<20)
	c, err := net.Dial("tcp", digestLocal)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(payload); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if want := fmt.Sprintf("%x", sha256.Sum256(payload)); err != nil || string(got) != want {
		t.Fatalf("route digest answered %q, %v; want %s", got, err, want)
	}
	server.waitLog(t, "stream ended", "route", "echo", "result", "ok")
	server.waitLog(t, "stream ended", "route", "digest", "result", "ok")
}

// TestPrecedenceBinary: a flag beats its MTUNNEL_* variable, which beats
// the config file.
func TestPrecedenceBinary(t *testing.T) {
	dir := t.TempDir()
	k := newBinPKI(t, filepath.Join(dir, "pki"))
	echoAddr := backend(t, echo)
	var decoyHits atomic.Int32
	decoy := backend(t, func(c *net.TCPConn) { decoyHits.Add(1) })
	// A port the test holds: an agent told to listen there fails to start.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	t.Run("flag beats env", func(t *testing.T) {
		server := startAgent(t, "server", []string{"MTUNNEL_TARGET=" + decoy, "MTUNNEL_LISTEN=" + held.Addr().String()},
			k.serverArgs("127.0.0.1:0", echoAddr)...)
		client := startAgent(t, "client", nil, k.clientArgs(server.listening(t))...)
		if err := echoCheck(t, client.listening(t), 64<<10); err != nil {
			t.Fatalf("echo through the flag's --target: %v", err)
		}
		if n := decoyHits.Load(); n > 0 {
			t.Fatalf("MTUNNEL_TARGET's backend got %d connections; the flag must win", n)
		}
	})

	t.Run("env beats file", func(t *testing.T) {
		conf := writeConfigFile(t, dir, "server.yaml", serverYAMLTemplate, held.Addr().String(),
			fmt.Sprintf("  default:\n    target: %s\n    allow:\n      - cn: app\n", echoAddr))
		server := startAgent(t, "server", []string{"MTUNNEL_LISTEN=127.0.0.1:0"}, "server", "--config", conf)
		addr := server.listening(t)
		if addr == held.Addr().String() {
			t.Fatalf("server listens on the file's address %s", addr)
		}
		client := startAgent(t, "client", nil, k.clientArgs(addr)...)
		if err := echoCheck(t, client.listening(t), 64<<10); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("env alone", func(t *testing.T) {
		server := startAgent(t, "server", []string{
			"MTUNNEL_LISTEN=127.0.0.1:0", "MTUNNEL_CERT=" + k.serverCert, "MTUNNEL_KEY=" + k.serverKey,
			"MTUNNEL_CA=" + k.ca, "MTUNNEL_TARGET=" + echoAddr, "MTUNNEL_ALLOW_CN=someone,app",
		}, "server")
		client := startAgent(t, "client", []string{
			"MTUNNEL_LISTEN=127.0.0.1:0", "MTUNNEL_SERVER=" + server.listening(t), "MTUNNEL_SERVER_NAME=" + readmeServerName,
			"MTUNNEL_CERT=" + k.appCert, "MTUNNEL_KEY=" + k.appKey, "MTUNNEL_CA=" + k.ca,
		}, "client")
		if err := echoCheck(t, client.listening(t), 64<<10); err != nil {
			t.Fatal(err)
		}
	})
}
