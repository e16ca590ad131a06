package integration

import (
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnixSocketsBinary runs the built agents the way issue 6 describes:
// the server agent's target is a unix socket (as PostgreSQL's is) and the
// client agent listens on one with --listen-mode. A stale socket file from
// an earlier run is replaced; a second client agent on the same path is
// refused with exit status 2 and leaves the first one working; on SIGTERM
// the socket file is removed.
func TestUnixSocketsBinary(t *testing.T) {
	dir := t.TempDir()
	k := newBinPKI(t, filepath.Join(dir, "pki"))
	echoPath := filepath.Join(dir, "echo.sock")
	unixBackend(t, echoPath, echoConn)
	srv := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", "unix:"+echoPath)...)
	srvAddr := srv.listening(t)

	appPath := filepath.Join(dir, "app.sock")
	staleSocket(t, appPath)
	args := append(withFlag(k.clientArgs(srvAddr), "--listen", "unix:"+appPath), "--listen-mode", "0660")
	cl := startAgent(t, "client", nil, args...)
	if got := cl.listening(t); got != appPath {
		t.Fatalf("client listens on %q, want %q", got, appPath)
	}
	checkSocketMode(t, appPath, 0o660)
	transfer := func() {
		t.Helper()
		payload := random(t, 1<<20)
		sum, n, err := transferSum("unix:"+appPath, payload)
		if want := sha256.Sum256(payload); err != nil || n != int64(len(payload)) || sum != want {
			t.Fatalf("1 MiB through unix sockets: %d bytes back, checksum match %v, err %v\nclient:\n%s\nserver:\n%s",
				n, sum == want, err, cl.out.dump(), srv.out.dump())
		}
	}
	transfer()

	r := runBinary(t, nil, args...)
	if r.code != 2 || !strings.Contains(r.stderr, "another process is listening") || !strings.Contains(r.stderr, appPath) {
		t.Fatalf("second client on %s: exit %d, stderr:\n%s\nwant exit 2 saying another process listens there", appPath, r.code, r.stderr)
	}
	transfer()

	cl.stop(t)
	if _, err := os.Lstat(appPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket file left after SIGTERM: %v", err)
	}
}
