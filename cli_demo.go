package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/urfave/cli/v2"
)

func demoCommand() *cli.Command {
	return &cli.Command{
		Name:         "demo",
		Usage:        "run a PKI, an echo backend and both agents in one process, check them, then serve",
		OnUsageError: onUsageError,
		Flags: append(logFlags(),
			&cli.BoolFlag{Name: "once", Usage: "exit after the self-check (0 if it passed)", EnvVars: env("DEMO_ONCE")},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:0", Usage: "client agent's local `ADDR`", EnvVars: env("DEMO_LISTEN")},
		),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			return runDemo(c.Context, c.App.Writer, log, c.String("listen"), c.Bool("once"))
		},
	}
}

// demo is everything the demo runs, so it can be stopped in order.
type demo struct {
	dir        string
	echo       net.Listener
	serverAddr net.Addr
	clientAddr net.Addr
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	errs       chan error
}

func runDemo(ctx context.Context, out io.Writer, log *slog.Logger, listen string, once bool) error {
	d, err := startDemo(ctx, log, listen)
	if err != nil {
		return err
	}
	defer d.stop()
	fmt.Fprintf(out, "mtunnel demo\n  PKI:           %s (CA, server \"localhost\", client \"demo-app\")\n", d.dir)
	fmt.Fprintf(out, "  echo backend:  %s\n  server agent:  %s  (mTLS, route \"default\" -> echo, allows CN=demo-app)\n", d.echo.Addr(), d.serverAddr)
	fmt.Fprintf(out, "  client agent:  %s  (app side, plain TCP)\n\n", d.clientAddr)
	if err := selfCheck(out, d.clientAddr.String()); err != nil {
		fmt.Fprintf(out, "self-check FAILED: %v\n", err)
		return fmt.Errorf("demo self-check: %w", err)
	}
	fmt.Fprintln(out, "self-check passed")
	if once {
		return nil
	}
	fmt.Fprintf(out, "\nTry it by hand (type a line, it comes back through the tunnel):\n  nc 127.0.0.1 %d\nPress Ctrl-C to stop.\n", d.clientAddr.(*net.TCPAddr).Port)
	select {
	case <-ctx.Done():
		return nil
	case err := <-d.errs:
		return err
	}
}

func startDemo(ctx context.Context, log *slog.Logger, listen string) (*demo, error) {
	dir, err := os.MkdirTemp("", "mtunnel-demo-")
	if err != nil {
		return nil, err
	}
	d := &demo{dir: dir, errs: make(chan error, 3)}
	ctx, d.cancel = context.WithCancel(ctx)
	serverCreds, clientCreds, err := demoPKI(dir)
	if err == nil {
		d.echo, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		d.stop()
		return nil, err
	}
	d.goRun(func() error { return serveEcho(d.echo) })
	srv, err := server.New(server.Config{
		Listen: "127.0.0.1:0",
		TLS:    tunnel.TLSPolicy{Credentials: static(serverCreds)},
		Routes: map[string]server.Route{"default": {
			Target: d.echo.Addr().String(),
			ACL:    tunnel.ACL{Rules: []tunnel.Rule{{CN: "demo-app"}}},
		}},
		Logger: log.With("agent", "server"),
	})
	if err == nil {
		d.serverAddr, err = srv.Listen()
	}
	if err != nil {
		d.stop()
		return nil, err
	}
	d.goRun(func() error { return srv.Serve(ctx) })
	cl, err := client.New(client.Config{
		Servers: []string{d.serverAddr.String()},
		TLS:     tunnel.TLSPolicy{Credentials: static(clientCreds), ServerName: "localhost"},
		Routes:  []client.Route{{Listen: listen}},
		Logger:  log.With("agent", "client"),
	})
	var addrs []net.Addr
	if err == nil {
		addrs, err = cl.Listen()
	}
	if err != nil {
		d.stop()
		return nil, configErr(err)
	}
	d.clientAddr = addrs[0]
	d.goRun(func() error { return cl.Serve(ctx) })
	return d, nil
}

func (d *demo) goRun(f func() error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := f(); err != nil {
			d.errs <- err
		}
	}()
}

func (d *demo) stop() {
	d.cancel()
	if d.echo != nil {
		d.echo.Close()
	}
	d.wg.Wait()
	os.RemoveAll(d.dir)
}

// demoPKI writes a CA and two leaves to dir (as `mtunnel certs` would) and
// loads them back the way the agents load their files.
func demoPKI(dir string) (server, client *tunnel.Credentials, err error) {
	ca, err := certs.NewCA("mtunnel demo CA", 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	if err := certs.WriteCA(dir, ca, false); err != nil {
		return nil, nil, err
	}
	reqs := []certs.Request{
		{Name: "localhost", Server: true, DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, ValidFor: 24 * time.Hour},
		{Name: "demo-app", Client: true, ValidFor: 24 * time.Hour},
	}
	var creds []*tunnel.Credentials
	caFile, _ := certs.CAFiles(dir)
	for _, r := range reqs {
		leaf, err := ca.Issue(r)
		if err == nil {
			err = certs.WriteLeaf(dir, r.Name, leaf)
		}
		if err != nil {
			return nil, nil, err
		}
		certFile, keyFile := certs.LeafFiles(dir, r.Name)
		t := tlsSettings{cert: setting{certFile, "demo"}, key: setting{keyFile, "demo"}, ca: setting{caFile, "demo"}}
		usage := x509.ExtKeyUsageClientAuth
		if r.Server {
			usage = x509.ExtKeyUsageServerAuth
		}
		cr, _, _, err := t.credentials(usage)
		if err != nil {
			return nil, nil, err
		}
		creds = append(creds, cr)
	}
	return creds[0], creds[1], nil
}

// serveEcho echoes every connection until ln is closed, half-closing each
// reply when the client half-closes.
func serveEcho(ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			io.Copy(conn, conn)
			conn.(*net.TCPConn).CloseWrite()
		}()
	}
}

// selfCheck pushes data through the tunnel and reports what it measured.
func selfCheck(out io.Writer, addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	rtts, err := pingPong(conn, 200)
	if err != nil {
		return fmt.Errorf("ping-pong: %w", err)
	}
	slices.Sort(rtts)
	fmt.Fprintf(out, "  round trip (64 B, %d pings):  p50 %v  p99 %v\n", len(rtts),
		rtts[len(rtts)/2].Round(time.Microsecond), rtts[len(rtts)*99/100].Round(time.Microsecond))
	payload := make([]byte, 8<<20)
	rand.Read(payload)
	start := time.Now()
	got, err := echoAll(conn.(*net.TCPConn), payload)
	if err != nil {
		return fmt.Errorf("bulk echo: %w", err)
	}
	el := time.Since(start)
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		return fmt.Errorf("bulk echo: %d bytes came back but their SHA-256 differs", len(got))
	}
	fmt.Fprintf(out, "  bulk echo:  %d MiB up and back, SHA-256 equal, %v (%.0f MB/s each way)\n",
		len(payload)>>20, el.Round(time.Millisecond), float64(len(payload))/el.Seconds()/1e6)
	return nil
}

func pingPong(conn net.Conn, n int) ([]time.Duration, error) {
	msg := bytes.Repeat([]byte{'p'}, 64)
	buf := make([]byte, 64)
	rtts := make([]time.Duration, 0, n)
	for range n {
		t := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			return nil, err
		}
		rtts = append(rtts, time.Since(t))
	}
	return rtts, nil
}

// echoAll writes payload, half-closes, and reads until EOF.
func echoAll(conn *net.TCPConn, payload []byte) ([]byte, error) {
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.CloseWrite()
		}
		errc <- err
	}()
	got, rerr := io.ReadAll(conn)
	if werr := <-errc; werr != nil {
		return got, werr
	}
	return got, rerr
}
