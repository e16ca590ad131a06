package main

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runCLI runs the command line args (without the program name) the way
// main does and returns the exit code and what was printed.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(append([]string{"mtunnel"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// busyAddr returns the address of a listener the test holds open. Tests of
// configuration errors pass it as the agents' listen address: should the
// configuration be accepted by mistake, the agent then fails to bind
// instead of serving until the test times out.
func busyAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func TestExitCodes(t *testing.T) {
	listen := busyAddr(t)
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string // substring; "" checks nothing
	}{
		{"unknown global flag", []string{"--bogus", "version"}, 2, "bogus"},
		{"unknown server flag", []string{"server", "--bogus"}, 2, "bogus"},
		{"unknown client flag", []string{"client", "--bogus"}, 2, "bogus"},
		{"bad duration value", []string{"server", "--dial-timeout", "soon"}, 2, "dial-timeout"},
		{"unknown certs init flag", []string{"certs", "init", "--bogus"}, 2, "bogus"},
		{"bad log format", []string{"--log-format", "xml", "server", "--listen", listen}, 2, `--log-format "xml"`},
		{"bad log level", []string{"--log-level", "loud", "client", "--listen", listen}, 2, `--log-level "loud"`},
		{"missing config file", []string{"server", "--config", "/nonexistent/mtunnel.yaml"}, 2, "/nonexistent/mtunnel.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.wantStderr)
			}
		})
	}
}

func TestUnknownCommandFails(t *testing.T) {
	code, stdout, stderr := runCLI(t, "tunnelize")
	if code == 0 {
		t.Fatalf("exit code = 0, want non-zero; stdout %q stderr %q", stdout, stderr)
	}
	if !strings.Contains(stdout+stderr, "tunnelize") {
		t.Errorf("output does not name the unknown command: stdout %q stderr %q", stdout, stderr)
	}
}

func TestVersion(t *testing.T) {
	old := version
	version = "1.2.3-test"
	t.Cleanup(func() { version = old })
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 {
			t.Errorf("%v: exit code = %d, want 0; stderr %q", args, code, stderr)
		}
		if !strings.HasPrefix(stdout, "mtunnel") || !strings.Contains(stdout, "1.2.3-test") {
			t.Errorf("%v: stdout = %q, want \"mtunnel ... 1.2.3-test\"", args, stdout)
		}
	}
}

func TestHelpExitsZero(t *testing.T) {
	code, stdout, _ := runCLI(t, "--help")
	if code != 0 {
		t.Fatalf("exit code = %d, want 0", code)
	}
	for _, cmd := range []string{"server", "client", "certs", "demo", "version"} {
		if !strings.Contains(stdout, cmd) {
			t.Errorf("help does not list %q:\n%s", cmd, stdout)
		}
	}
}

func TestBuildLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := buildLogger(&buf, "JSON", -4) // slog.LevelDebug
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", "k", "v")
	if got := buf.String(); !strings.HasPrefix(got, "{") || !strings.Contains(got, `"msg":"hello"`) {
		t.Errorf("json logger wrote %q", got)
	}
	if _, err := buildLogger(&buf, "logfmt", 0); err == nil {
		t.Error("buildLogger accepted format \"logfmt\"")
	}
}
