package integration

import (
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestVersionBinary(t *testing.T) {
	r := runBinary(t, nil, "version")
	if want := "mtunnel " + binaryVersion + "\n"; r.code != 0 || r.stdout != want {
		t.Fatalf("mtunnel version: exit %d, stdout %q; want 0, %q\nstderr:\n%s", r.code, r.stdout, want, r.stderr)
	}
}

// TestDemoOnceBinary is what CI runs first: the demo's self-check.
func TestDemoOnceBinary(t *testing.T) {
	r := runBinary(t, nil, "demo", "--once")
	if r.code != 0 || !strings.Contains(r.stdout, "self-check passed") {
		t.Fatalf("mtunnel demo --once: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
}

// TestLogFlagsBinary: the log flags work before and after the command
// name, and from the environment.
func TestLogFlagsBinary(t *testing.T) {
	k := newBinPKI(t, filepath.Join(t.TempDir(), "pki"))
	args := k.serverArgs("127.0.0.1:0", "127.0.0.1:5432")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"before the command", nil, append([]string{"--log-format", "json"}, args...)},
		{"after the command", nil, slices.Concat(args[:1], []string{"--log-format", "json"}, args[1:])},
		{"environment", []string{"MTUNNEL_LOG_FORMAT=json"}, args},
		{"flag after the command beats env", []string{"MTUNNEL_LOG_FORMAT=text"}, slices.Concat(args[:1], []string{"--log-format", "json"}, args[1:])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := agentCmd(t, tc.env)
			cmd.Args = append(cmd.Args[:1], tc.args...) // no --log-format from agentCmd
			p := startProc(t, "server", cmd, syscall.SIGTERM)
			p.waitLog(t, "listening") // a JSON line: text lines never match
		})
	}
}
