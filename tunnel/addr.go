package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// UnixPrefix marks an address as a unix stream socket: "unix:" and an
// absolute path, like unix:/var/run/postgresql/.s.PGSQL.5432. A client
// route may listen on one and a server route may target one; any other
// address is TCP host:port.
const UnixPrefix = "unix:"

// MaxUnixPath is the longest socket path Linux can bind or connect to:
// sockaddr_un's sun_path holds 108 bytes, the last a NUL (unix(7)). Other
// systems allow less (104 on the BSDs), and bind says so itself there.
const MaxUnixPath = 107

// ErrBadAddress is an address that names neither host:port nor a usable
// unix socket path.
var ErrBadAddress = errors.New("invalid address")

// SplitNetwork returns the network and address to give net.Listen or
// net.Dial for an mtunnel address: "unix" and the path for unix:/path,
// "tcp" and s itself otherwise. It checks unix paths only (absolute, not
// too long); a TCP address is left to the caller and the net package.
func SplitNetwork(s string) (network, address string, err error) {
	path, ok := strings.CutPrefix(s, UnixPrefix)
	if !ok {
		return "tcp", s, nil
	}
	switch {
	case !strings.HasPrefix(path, "/"):
		return "", "", fmt.Errorf("%w %q: a unix socket path must be absolute, like unix:/run/mtunnel/pg.sock", ErrBadAddress, s)
	case len(path) > MaxUnixPath:
		return "", "", fmt.Errorf("%w %q: a unix socket path may be %d bytes at most, this one is %d", ErrBadAddress, s, MaxUnixPath, len(path))
	case strings.IndexByte(path, 0) >= 0:
		return "", "", fmt.Errorf("%w %q: a unix socket path cannot hold a NUL byte", ErrBadAddress, s)
	}
	return "unix", path, nil
}

// KeepAlive is the TCP keepalive period to give net.Dialer or
// net.ListenConfig for a TCP address: off (-1) when its host is a loopback
// address or "localhost", since a peer on the same host cannot vanish
// without the kernel closing its sockets, and Go's default (0: 15 s)
// otherwise. Setting keepalive on a socket costs four setsockopt calls,
// 2-3% of an agent's CPU per connection in the connection-rate bench.
func KeepAlive(address string) time.Duration {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return 0
	}
	if host == "localhost" {
		return -1
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsLoopback() {
		return -1
	}
	return 0
}
