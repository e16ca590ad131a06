package integration

// Helpers for the tests that drive the built mtunnel binary as a user would:
// build it once, run short commands to completion, make a PKI the README's
// way. Long-running agents are procs (binary_proc_test.go).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binaryVersion is stamped into the test build, so TestVersionBinary can
// tell that it talks to the binary under test.
const binaryVersion = "e2e-test"

var builtBinary struct {
	once sync.Once
	path string
	err  error
}

// buildDirPrefix names the per-process build folders in os.TempDir; the
// process id follows it.
const buildDirPrefix = "mtunnel-e2e-"

// mtunnelBinary builds the mtunnel command once per test process, as `make
// build` does, and returns its path. The build lives in a per-process folder
// under os.TempDir that is left behind, since only TestMain (env_test.go)
// could remove it after the last test; the next run removes it instead.
func mtunnelBinary(t testing.TB) string {
	t.Helper()
	builtBinary.once.Do(func() {
		// go test caches a result by the files the test opened. Listing the
		// module root records package main's files, which no test imports,
		// so editing the CLI invalidates cached results of these tests.
		os.ReadDir("..")
		removeStaleBuilds()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildDirPrefix, os.Getpid()))
		if err != nil {
			builtBinary.err = err
			return
		}
		path := filepath.Join(dir, "mtunnel")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+binaryVersion,
			"-o", path, "github.com/mtunnel/mtunnel")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			builtBinary.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		builtBinary.path = path
	})
	if builtBinary.err != nil {
		t.Fatal(builtBinary.err)
	}
	return builtBinary.path
}

// removeStaleBuilds removes the build folders of test processes that have
// ended (a process that runs has a pid that kill(pid, 0) finds).
func removeStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*-*"))
	for _, dir := range dirs {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), buildDirPrefix), "-")
		n, err := strconv.Atoi(pid)
		if err == nil && n > 0 && errors.Is(syscall.Kill(n, 0), syscall.ESRCH) {
			os.RemoveAll(dir)
		}
	}
}

// binaryEnv is the test's environment without any MTUNNEL_* variable, plus
// extra ("KEY=value"), so only what a test sets reaches the binary.
func binaryEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "MTUNNEL_") })
	return append(env, extra...)
}

// binaryResult is a finished command.
type binaryResult struct {
	code           int
	stdout, stderr string
}

// runBinary runs mtunnel with args to completion (bounded by 2 minutes).
func runBinary(t testing.TB, env []string, args ...string) binaryResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, mtunnelBinary(t), args...)
	cmd.Env = binaryEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("mtunnel %s: %v", strings.Join(args, " "), err)
	}
	return binaryResult{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// mustRunBinary runs mtunnel and requires exit status 0; it returns stdout.
func mustRunBinary(t testing.TB, args ...string) string {
	t.Helper()
	r := runBinary(t, nil, args...)
	if r.code != 0 {
		t.Fatalf("mtunnel %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// readmeServerName is the server certificate's name in the README's worked
// example, which the tests follow.
const readmeServerName = "db.example.com"

// binPKI is a certificate folder made by `mtunnel certs` with the README's
// commands: a CA, a server certificate for db.example.com, localhost and
// 127.0.0.1, and a client certificate "app".
type binPKI struct {
	dir, ca, serverCert, serverKey, appCert, appKey string
	out                                             string // what the commands printed
}

func newBinPKI(t testing.TB, dir string) binPKI {
	t.Helper()
	out := mustRunBinary(t, "certs", "init", "--dir", dir)
	out += mustRunBinary(t, "certs", "issue", "--dir", dir, "--name", readmeServerName, "--server",
		"--dns", readmeServerName, "--dns", "localhost", "--ip", "127.0.0.1")
	out += mustRunBinary(t, "certs", "issue", "--dir", dir, "--name", "app", "--client")
	f := func(name string) string { return filepath.Join(dir, name) }
	return binPKI{dir, f("ca.crt"), f(readmeServerName + ".crt"), f(readmeServerName + ".key"), f("app.crt"), f("app.key"), out}
}

// serverArgs is the README's server agent: route "default" to target,
// allowed for CN=app.
func (k binPKI) serverArgs(listen, target string) []string {
	return []string{"server", "--listen", listen, "--cert", k.serverCert, "--key", k.serverKey, "--ca", k.ca,
		"--target", target, "--allow-cn", "app"}
}

// clientArgs is the README's client agent "on one machine": it dials the
// loopback address and requires the server certificate to carry
// db.example.com. It listens on 127.0.0.1:0 for route "default".
func (k binPKI) clientArgs(server string) []string {
	return []string{"client", "--listen", "127.0.0.1:0", "--server", server, "--server-name", readmeServerName,
		"--cert", k.appCert, "--key", k.appKey, "--ca", k.ca}
}

// withFlag returns args with the value after flag replaced.
func withFlag(args []string, flag, value string) []string {
	out := slices.Clone(args)
	i := slices.Index(out, flag)
	if i < 0 || i+1 >= len(out) {
		panic("withFlag: no flag " + flag)
	}
	out[i+1] = value
	return out
}

// withoutFlag returns args without flag and its value.
func withoutFlag(args []string, flag string) []string {
	i := slices.Index(args, flag)
	if i < 0 {
		panic("withoutFlag: no flag " + flag)
	}
	return slices.Concat(args[:i], args[i+2:])
}

// agentCmd is mtunnel with JSON logs, ready for startProc.
func agentCmd(t testing.TB, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(mtunnelBinary(t), append([]string{"--log-format", "json"}, args...)...)
	cmd.Env = binaryEnv(env...)
	return cmd
}

// startAgent runs an mtunnel agent until the test ends.
func startAgent(t testing.TB, name string, env []string, args ...string) *childProc {
	t.Helper()
	return startProc(t, name, agentCmd(t, env, args...), syscall.SIGTERM)
}

// transferSum sends payload through addr (host:port or unix:/path),
// half-closes, reads to EOF and returns the SHA-256 and length of what came
// back.
func transferSum(addr string, payload []byte) ([32]byte, int64, error) {
	c, err := dialAddr(addr)
	if err != nil {
		return [32]byte{}, 0, err
	}
	return transferSumConn(c, payload)
}

// transferSumConn is transferSum on a connection the caller made (on
// another host, say); it closes c.
func transferSumConn(c net.Conn, payload []byte) ([32]byte, int64, error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = closeWrite(c)
		}
		werr <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err2 := <-werr; err == nil {
		err = err2
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}
