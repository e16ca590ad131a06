package client

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/mtunnel/mtunnel/tunnel"
)

// ErrSocketInUse is a unix socket path on which another process listens.
var ErrSocketInUse = errors.New("another process is listening on this socket")

// listen binds a route's listener: TCP, or a unix socket for unix:/path.
func listen(r Route) (net.Listener, error) {
	network, address, err := tunnel.SplitNetwork(r.Listen)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		return listenUnix(address, r.ListenMode)
	}
	lc := net.ListenConfig{KeepAlive: tunnel.KeepAlive(address)}
	return lc.Listen(context.Background(), network, address)
}

// listenUnix listens on a unix stream socket at path, a socket file with
// the permission bits mode.
//
// Whoever can connect to the socket uses the agent's identity, so the file
// must never be open wider than mode, not even for a moment: a connection
// made then would wait in the backlog and be served later. The socket is
// therefore bound in a new private folder (0700) beside path, given its
// mode there, and linked into place. link(2) refuses an existing path, so
// a socket another process put there meanwhile is never replaced.
//
// A socket file left at path by an agent that did not exit cleanly is
// removed first, but only once connecting to it has been refused, which
// means that nothing listens there (see removeStale).
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// A short folder name: the path bound inside it must still fit in
	// sun_path.
	dir, err := os.MkdirTemp(filepath.Dir(path), ".m")
	if err != nil {
		return nil, fmt.Errorf("unix socket %s: private folder to bind in: %w", path, err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "s")
	if len(tmp) > tunnel.MaxUnixPath {
		return nil, fmt.Errorf("unix socket %s: path too long to bind safely: keep it under %d bytes", path, len(path)-(len(tmp)-tunnel.MaxUnixPath))
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(false) // the bound name is gone with dir; Close removes path
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("unix socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("another process created it while we started: %w", err)
		}
		return fail(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		os.Remove(path)
		return fail(err)
	}
	return &unixListener{UnixListener: ln, addr: &net.UnixAddr{Name: path, Net: "unix"}, file: fi}, nil
}

// removeStale removes a socket file at path that nothing listens on. It
// refuses a path that is not a socket, one on which a process accepts
// connections (it sees our probe as an empty connection), and one it
// cannot tell about (a full backlog, no permission to connect).
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("unix socket %s: %w", path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("unix socket %s: the path exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("unix socket %s: %w", path, ErrSocketInUse)
	case !errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("unix socket %s: cannot tell whether another process listens on it, so not removing it: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unix socket %s: remove stale socket: %w", path, err)
	}
	return nil
}

// unixListener is a listener on a socket file that it removes on Close,
// unless the file has been replaced by then.
type unixListener struct {
	*net.UnixListener
	addr *net.UnixAddr // the path; the socket was bound under another name
	file fs.FileInfo
	once sync.Once
	err  error
}

func (l *unixListener) Addr() net.Addr { return l.addr }

func (l *unixListener) Close() error {
	l.once.Do(func() {
		l.err = l.UnixListener.Close()
		if fi, err := os.Lstat(l.addr.Name); err == nil && os.SameFile(fi, l.file) {
			os.Remove(l.addr.Name)
		}
	})
	return l.err
}
