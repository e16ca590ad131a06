package client

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// sockPath returns a socket path in a fresh folder.
func sockPath(t *testing.T) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "app.sock")
}

// connects reports whether a client can connect to the socket at path.
func connects(path string) bool {
	c, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestListenUnixMode(t *testing.T) {
	for _, mode := range []os.FileMode{0o600, 0o660, 0o666, 0o700} {
		t.Run(mode.String(), func(t *testing.T) {
			path := sockPath(t)
			ln, err := listenUnix(path, mode)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != mode {
				t.Fatalf("socket file mode = %v, want a socket with %v", fi.Mode(), mode)
			}
			if got := ln.Addr().String(); got != path {
				t.Fatalf("Addr() = %q, want the socket's path %q", got, path)
			}
			entries, err := os.ReadDir(filepath.Dir(path))
			if err != nil || len(entries) != 1 {
				t.Fatalf("folder holds %v (%v); want the socket only, no private folder left behind", entries, err)
			}
			accepted := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err == nil {
					c.Close()
				}
				accepted <- err
			}()
			if !connects(path) {
				t.Fatal("cannot connect to the socket")
			}
			if err := <-accepted; err != nil {
				t.Fatalf("accept: %v", err)
			}
			if err := ln.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("socket file still there after Close: %v", err)
			}
		})
	}
}

// staleSocket leaves a socket file at path that nothing listens on, as an
// agent killed with SIGKILL does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("no stale socket: %v", err)
	}
}

func TestListenUnixRemovesStaleSocket(t *testing.T) {
	path := sockPath(t)
	staleSocket(t, path)
	ln, err := listenUnix(path, 0o600)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	if !connects(path) {
		t.Fatal("cannot connect to the new socket")
	}
}

func TestListenUnixRefusesLiveSocket(t *testing.T) {
	path := sockPath(t)
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ln, err := listenUnix(path, 0o600)
	if !errors.Is(err, ErrSocketInUse) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("listenUnix on a live socket: err = %v, want ErrSocketInUse", err)
	}
	// The other process's socket is untouched: our probe is in its backlog.
	if c, err := other.Accept(); err != nil {
		t.Fatalf("the live listener lost its socket: %v", err)
	} else {
		c.Close()
	}
	if !connects(path) {
		t.Fatal("the live socket was removed")
	}
}

func TestListenUnixRefusesOtherFiles(t *testing.T) {
	path := sockPath(t)
	if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ln, err := listenUnix(path, 0o600); err == nil {
		ln.Close()
		t.Fatal("listenUnix replaced a regular file")
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "data" {
		t.Fatalf("the file was touched: %q, %v", data, err)
	}
}

// A socket file that another process put in place of ours after we
// started is not ours to remove.
func TestUnixListenerCloseKeepsReplacedFile(t *testing.T) {
	path := sockPath(t)
	ln, err := listenUnix(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed a file that was not its socket: %v", err)
	}
}
