package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/urfave/cli/v2"
)

// pki is a certificate directory for the agents: one CA and, per role, a
// pair named after where the test passes it ("file", "env", "flag"), so a
// test can tell from the loaded certificate's common name which source won.
type pki struct {
	dir, ca string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	ca := certstest.New(t)
	p := pki{dir: dir, ca: ca.WriteFiles(t, dir)}
	for _, src := range []string{"file", "env", "flag"} {
		certstest.WriteKeyPair(t, dir, "server-"+src, ca.Server(t, "server-"+src, "localhost"))
		certstest.WriteKeyPair(t, dir, "client-"+src, ca.Client(t, "client-"+src))
	}
	return p
}

// pair returns the certificate and key files of the pair named name.
func (p pki) pair(name string) (certFile, keyFile string) {
	return filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
}

// flags returns --cert, --key and --ca for the pair named name.
func (p pki) flags(name string) []string {
	c, k := p.pair(name)
	return []string{"--cert", c, "--key", k, "--ca", p.ca}
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// runAction runs "mtunnel NAME args..." with the command's Action replaced
// by action, so tests can reach the *cli.Context that flags, environment
// and files were parsed into.
func runAction(t *testing.T, name string, action cli.ActionFunc, args []string) error {
	t.Helper()
	app := newApp(io.Discard, io.Discard)
	found := false
	for _, cmd := range app.Commands {
		if cmd.Name == name {
			cmd.Action, found = action, true
		}
	}
	if !found {
		t.Fatalf("no command %q", name)
	}
	return app.Run(append([]string{"mtunnel", name}, args...))
}

func resolveServer(t *testing.T, args []string) (server.Config, error) {
	t.Helper()
	var cfg server.Config
	err := runAction(t, "server", func(c *cli.Context) (err error) {
		cfg, err = serverConfig(c)
		return err
	}, args)
	return cfg, err
}

func resolveClient(t *testing.T, args []string) (client.Config, error) {
	t.Helper()
	var cfg client.Config
	err := runAction(t, "client", func(c *cli.Context) (err error) {
		cfg, err = clientConfig(c)
		return err
	}, args)
	return cfg, err
}

// leafCN is the common name of the certificate a TLS policy presents.
func leafCN(t *testing.T, p tunnel.TLSPolicy) string {
	t.Helper()
	if p.Credentials == nil {
		t.Fatal("TLS policy has no credentials")
	}
	cr := p.Credentials()
	if cr == nil || cr.Certificate.Leaf == nil || cr.Roots == nil {
		t.Fatalf("incomplete credentials %+v", cr)
	}
	return cr.Certificate.Leaf.Subject.CommonName
}

const serverYAML = `# server agent
listen: 127.0.0.1:8443
tls:
  cert: server-file.crt
  key: server-file.key
  ca: ca.crt
  min_version: "1.2"
routes:
  db:
    target: db.internal:5432
    allow:
      - cn: app
      - uri: spiffe://example.org/app
  web:
    target: web.internal:80
    allow_all: true
`

// fileRoutes are the routes of serverYAML.
func fileRoutes() map[string]server.Route {
	return map[string]server.Route{
		"db": {Target: "db.internal:5432", ACL: tunnel.ACL{Rules: []tunnel.Rule{
			{CN: "app"}, {URI: "spiffe://example.org/app"},
		}}},
		"web": {Target: "web.internal:80", ACL: tunnel.ACL{AllowAll: true}},
	}
}

func withRoute(routes map[string]server.Route, name string, r server.Route) map[string]server.Route {
	routes[name] = r
	return routes
}

func TestServerConfig(t *testing.T) {
	p := newPKI(t)
	file := writeFile(t, p.dir, "server.yaml", serverYAML)
	empty := writeFile(t, p.dir, "empty.yaml", "")
	ppFile := writeFile(t, p.dir, "pp.yaml", "listen: :1\nroutes:\n"+
		"  pg: {target: 'unix:/var/run/postgresql/.s.PGSQL.5432', allow_all: true, proxy_protocol: v2}\n"+
		"  web: {target: 'web:80', allow_all: true, proxy_protocol: none}\n"+
		"  api: {target: 'api:80', allow_all: true}\n")
	envCert, envKey := p.pair("server-env")
	tests := []struct {
		name string
		env  map[string]string
		args []string

		wantListen string
		wantRoutes map[string]server.Route
		wantCN     string
		wantMin    uint16
		wantDial   time.Duration
	}{{
		name:       "file only",
		args:       []string{"--config", file},
		wantListen: "127.0.0.1:8443",
		wantRoutes: fileRoutes(),
		wantCN:     "server-file",
		wantMin:    tls.VersionTLS12,
	}, {
		name: "flags override file",
		args: append([]string{"--config", file, "--listen", "127.0.0.1:9000", "--tls-min", "1.3",
			"--target", "flag.internal:1", "--allow-cn", "flag-app", "--dial-timeout", "3s"}, p.flags("server-flag")...),
		wantListen: "127.0.0.1:9000",
		wantRoutes: withRoute(fileRoutes(), "default", server.Route{Target: "flag.internal:1",
			ACL: tunnel.ACL{Rules: []tunnel.Rule{{CN: "flag-app"}}}}),
		wantCN:   "server-flag",
		wantMin:  tls.VersionTLS13,
		wantDial: 3 * time.Second,
	}, {
		name: "env overrides file",
		env: map[string]string{
			"MTUNNEL_CONFIG": file, "MTUNNEL_LISTEN": "127.0.0.1:9001", "MTUNNEL_TLS_MIN": "1.3",
			"MTUNNEL_CERT": envCert, "MTUNNEL_KEY": envKey,
			"MTUNNEL_TARGET": "env.internal:2", "MTUNNEL_ALLOW_OU": "ops,dev", "MTUNNEL_DIAL_TIMEOUT": "4s",
		},
		wantListen: "127.0.0.1:9001",
		wantRoutes: withRoute(fileRoutes(), "default", server.Route{Target: "env.internal:2",
			ACL: tunnel.ACL{Rules: []tunnel.Rule{{OU: "ops"}, {OU: "dev"}}}}),
		wantCN:   "server-env",
		wantMin:  tls.VersionTLS13,
		wantDial: 4 * time.Second,
	}, {
		name: "flags override env",
		env: map[string]string{
			"MTUNNEL_CONFIG": file, "MTUNNEL_LISTEN": "127.0.0.1:9001", "MTUNNEL_TLS_MIN": "1.3",
			"MTUNNEL_CERT": envCert, "MTUNNEL_KEY": envKey,
			"MTUNNEL_TARGET": "env.internal:2", "MTUNNEL_ALLOW_CN": "env-app", "MTUNNEL_DIAL_TIMEOUT": "4s",
		},
		args: append([]string{"--listen", "127.0.0.1:9002", "--tls-min", "1.2",
			"--target", "flag.internal:3", "--allow-cn", "flag-app", "--dial-timeout", "5s"}, p.flags("server-flag")...),
		wantListen: "127.0.0.1:9002",
		wantRoutes: withRoute(fileRoutes(), "default", server.Route{Target: "flag.internal:3",
			ACL: tunnel.ACL{Rules: []tunnel.Rule{{CN: "flag-app"}}}}),
		wantCN:   "server-flag",
		wantMin:  tls.VersionTLS12,
		wantDial: 5 * time.Second,
	}, {
		name:       "flags only, defaults",
		args:       append([]string{"--listen", ":8443", "--target", "db:5432", "--allow-all"}, p.flags("server-flag")...),
		wantListen: ":8443",
		wantRoutes: map[string]server.Route{"default": {Target: "db:5432", ACL: tunnel.ACL{AllowAll: true}}},
		wantCN:     "server-flag",
		wantMin:    tls.VersionTLS13,
	}, {
		name: "every allow flag",
		args: append([]string{"--listen", ":8443", "--target", "db:5432", "--allow-cn", "a", "--allow-ou", "b",
			"--allow-dns", "c.example", "--allow-uri", "spiffe://d/e", "--allow-cn", "f"}, p.flags("server-flag")...),
		wantListen: ":8443",
		wantRoutes: map[string]server.Route{"default": {Target: "db:5432", ACL: tunnel.ACL{Rules: []tunnel.Rule{
			{CN: "a"}, {CN: "f"}, {OU: "b"}, {DNS: "c.example"}, {URI: "spiffe://d/e"},
		}}}},
		wantCN:  "server-flag",
		wantMin: tls.VersionTLS13,
	}, {
		name:       "unix target",
		args:       append([]string{"--listen", ":8443", "--target", "unix:/var/run/postgresql/.s.PGSQL.5432", "--allow-all"}, p.flags("server-flag")...),
		wantListen: ":8443",
		wantRoutes: map[string]server.Route{"default": {Target: "unix:/var/run/postgresql/.s.PGSQL.5432", ACL: tunnel.ACL{AllowAll: true}}},
		wantCN:     "server-flag",
		wantMin:    tls.VersionTLS13,
	}, {
		name:       "proxy protocol per route",
		args:       append([]string{"--config", ppFile, "--target", "db:5432", "--allow-all", "--proxy-protocol", "v2"}, p.flags("server-flag")...),
		wantListen: ":1",
		wantRoutes: map[string]server.Route{
			"default": {Target: "db:5432", ACL: tunnel.ACL{AllowAll: true}, ProxyProtocol: server.ProxyV2},
			"pg":      {Target: "unix:/var/run/postgresql/.s.PGSQL.5432", ACL: tunnel.ACL{AllowAll: true}, ProxyProtocol: server.ProxyV2},
			"web":     {Target: "web:80", ACL: tunnel.ACL{AllowAll: true}},
			"api":     {Target: "api:80", ACL: tunnel.ACL{AllowAll: true}},
		},
		wantCN:  "server-flag",
		wantMin: tls.VersionTLS13,
	}, {
		name:       "empty file, everything from flags",
		args:       append([]string{"--config", empty, "--listen", ":1", "--target", "db:5432", "--allow-all"}, p.flags("server-flag")...),
		wantListen: ":1",
		wantRoutes: map[string]server.Route{"default": {Target: "db:5432", ACL: tunnel.ACL{AllowAll: true}}},
		wantCN:     "server-flag",
		wantMin:    tls.VersionTLS13, // the file says nothing: the default
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, err := resolveServer(t, tt.args)
			if err != nil {
				t.Fatalf("serverConfig: %v", err)
			}
			if cfg.Listen != tt.wantListen {
				t.Errorf("Listen = %q, want %q", cfg.Listen, tt.wantListen)
			}
			if !reflect.DeepEqual(cfg.Routes, tt.wantRoutes) {
				t.Errorf("Routes = %+v\nwant     %+v", cfg.Routes, tt.wantRoutes)
			}
			if got := leafCN(t, cfg.TLS); got != tt.wantCN {
				t.Errorf("certificate CN = %q, want %q", got, tt.wantCN)
			}
			if cfg.TLS.MinVersion != tt.wantMin {
				t.Errorf("MinVersion = %s, want %s", tls.VersionName(cfg.TLS.MinVersion), tls.VersionName(tt.wantMin))
			}
			if cfg.DialTimeout != tt.wantDial {
				t.Errorf("DialTimeout = %v, want %v", cfg.DialTimeout, tt.wantDial)
			}
		})
	}
}

const clientYAML = `server: tunnel.example.com:8443
tls:
  cert: client-file.crt
  key: client-file.key
  ca: ca.crt
  server_name: file.example.com
  min_version: 1.2 # unquoted: a YAML float, read as the string "1.2"
routes:
  - listen: 127.0.0.1:15432
    route: db
  - listen: 127.0.0.1:18080
`

func TestClientConfig(t *testing.T) {
	p := newPKI(t)
	file := writeFile(t, p.dir, "client.yaml", clientYAML)
	// With one route in the file, --listen and --route override its fields.
	one := writeFile(t, p.dir, "client1.yaml", strings.Replace(clientYAML, "  - listen: 127.0.0.1:18080\n", "", 1))
	several := writeFile(t, p.dir, "client-several.yaml", strings.Replace(clientYAML, "server: tunnel.example.com:8443\n",
		"servers:\n  - tunnel-a.example.com:8443\n  - tunnel-b.example.com:8443\n", 1))
	unixFile := writeFile(t, p.dir, "client-unix.yaml", "server: tunnel.example.com:8443\nroutes:\n"+
		"  - listen: unix:/run/mtunnel/pg.sock\n    route: db\n    listen_mode: \"0660\"\n"+
		"  - listen: unix:/run/mtunnel/web.sock\n    listen_mode: 0640 # unquoted: read as written\n")
	unixOne := writeFile(t, p.dir, "client-unix1.yaml", "server: tunnel.example.com:8443\nroutes:\n"+
		"  - listen: unix:/run/mtunnel/pg.sock\n    route: db\n    listen_mode: \"0660\"\n")
	envCert, envKey := p.pair("client-env")
	yamlRoutes := []client.Route{{Listen: "127.0.0.1:15432", Route: "db"}, {Listen: "127.0.0.1:18080"}}
	tests := []struct {
		name string
		env  map[string]string
		args []string

		wantServers    []string
		wantServerName string
		wantRoutes     []client.Route
		wantCN         string
		wantMin        uint16
		wantSessions   int
		wantReconnect  time.Duration
	}{{
		name:           "file only",
		args:           []string{"--config", file},
		wantServers:    []string{"tunnel.example.com:8443"},
		wantServerName: "file.example.com",
		wantRoutes:     yamlRoutes,
		wantCN:         "client-file",
		wantMin:        tls.VersionTLS12,
	}, {
		name: "flags override file",
		args: append([]string{"--config", one, "--server", "flag.example.com:1", "--server-name", "flag.example.com",
			"--listen", "127.0.0.1:7000", "--tls-min", "1.3", "--sessions", "2", "--reconnect-max", "5s"}, p.flags("client-flag")...),
		wantServers:    []string{"flag.example.com:1"},
		wantServerName: "flag.example.com",
		wantRoutes:     []client.Route{{Listen: "127.0.0.1:7000", Route: "db"}}, // the file's route name stays
		wantCN:         "client-flag",
		wantMin:        tls.VersionTLS13,
		wantSessions:   2,
		wantReconnect:  5 * time.Second,
	}, {
		name: "env overrides file",
		env: map[string]string{
			"MTUNNEL_CONFIG": one, "MTUNNEL_SERVER": "env.example.com:2", "MTUNNEL_SERVER_NAME": "env.example.com",
			"MTUNNEL_LISTEN": "127.0.0.1:7001", "MTUNNEL_ROUTE": "web", "MTUNNEL_TLS_MIN": "1.3",
			"MTUNNEL_CERT": envCert, "MTUNNEL_KEY": envKey, "MTUNNEL_SESSIONS": "3",
		},
		wantServers:    []string{"env.example.com:2"},
		wantServerName: "env.example.com",
		wantRoutes:     []client.Route{{Listen: "127.0.0.1:7001", Route: "web"}},
		wantCN:         "client-env",
		wantMin:        tls.VersionTLS13,
		wantSessions:   3,
	}, {
		name: "flags override env",
		env: map[string]string{
			"MTUNNEL_CONFIG": one, "MTUNNEL_SERVER": "env.example.com:2", "MTUNNEL_SERVER_NAME": "env.example.com",
			"MTUNNEL_LISTEN": "127.0.0.1:7001", "MTUNNEL_ROUTE": "web", "MTUNNEL_TLS_MIN": "1.3",
			"MTUNNEL_CERT": envCert, "MTUNNEL_KEY": envKey, "MTUNNEL_SESSIONS": "3",
		},
		args: append([]string{"--server", "flag.example.com:1", "--server-name", "flag.example.com",
			"--listen", "127.0.0.1:7002", "--route", "api", "--tls-min", "1.2", "--sessions", "4"}, p.flags("client-flag")...),
		wantServers:    []string{"flag.example.com:1"},
		wantServerName: "flag.example.com",
		wantRoutes:     []client.Route{{Listen: "127.0.0.1:7002", Route: "api"}},
		wantCN:         "client-flag",
		wantMin:        tls.VersionTLS12,
		wantSessions:   4,
	}, {
		// No --server-name: left empty so that client.Config applies its
		// default, the host of Server (see TestClientServerNameDefault).
		name:        "flags only, defaults",
		args:        append([]string{"--server", "tunnel.example.com:8443", "--listen", "127.0.0.1:7003"}, p.flags("client-flag")...),
		wantServers: []string{"tunnel.example.com:8443"},
		wantRoutes:  []client.Route{{Listen: "127.0.0.1:7003", Route: "default"}},
		wantCN:      "client-flag",
		wantMin:     tls.VersionTLS13,
	}, {
		name:           "several servers from flags, over the file's",
		args:           append([]string{"--config", several, "--server", "a.example.com:1", "--server", "b.example.com:2"}, p.flags("client-flag")...),
		wantServers:    []string{"a.example.com:1", "b.example.com:2"},
		wantServerName: "file.example.com",
		wantRoutes:     yamlRoutes,
		wantCN:         "client-flag",
		wantMin:        tls.VersionTLS12,
	}, {
		name:        "several servers from the environment",
		env:         map[string]string{"MTUNNEL_SERVER": "a.example.com:1,b.example.com:2"},
		args:        append([]string{"--listen", "127.0.0.1:7004"}, p.flags("client-flag")...),
		wantServers: []string{"a.example.com:1", "b.example.com:2"},
		wantRoutes:  []client.Route{{Listen: "127.0.0.1:7004", Route: "default"}},
		wantCN:      "client-flag",
		wantMin:     tls.VersionTLS13,
	}, {
		name:        "unix listener with a mode from the file",
		args:        append([]string{"--config", unixFile}, p.flags("client-flag")...),
		wantServers: []string{"tunnel.example.com:8443"},
		wantRoutes: []client.Route{{Listen: "unix:/run/mtunnel/pg.sock", Route: "db", ListenMode: 0o660},
			{Listen: "unix:/run/mtunnel/web.sock", ListenMode: 0o640}},
		wantCN:  "client-flag",
		wantMin: tls.VersionTLS13,
	}, {
		name:        "unix listener with a mode from flags",
		args:        append([]string{"--server", "tunnel.example.com:8443", "--listen", "unix:/run/mtunnel/pg.sock", "--listen-mode", "0666"}, p.flags("client-flag")...),
		wantServers: []string{"tunnel.example.com:8443"},
		wantRoutes:  []client.Route{{Listen: "unix:/run/mtunnel/pg.sock", Route: "default", ListenMode: 0o666}},
		wantCN:      "client-flag",
		wantMin:     tls.VersionTLS13,
	}, {
		name:        "--listen-mode overrides the file's one route",
		args:        append([]string{"--config", unixOne, "--listen-mode", "0600"}, p.flags("client-flag")...),
		wantServers: []string{"tunnel.example.com:8443"},
		wantRoutes:  []client.Route{{Listen: "unix:/run/mtunnel/pg.sock", Route: "db", ListenMode: 0o600}},
		wantCN:      "client-flag",
		wantMin:     tls.VersionTLS13,
	}, {
		name:           "several servers in the file",
		args:           []string{"--config", several},
		wantServers:    []string{"tunnel-a.example.com:8443", "tunnel-b.example.com:8443"},
		wantServerName: "file.example.com",
		wantRoutes:     yamlRoutes,
		wantCN:         "client-file",
		wantMin:        tls.VersionTLS12,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			cfg, err := resolveClient(t, tt.args)
			if err != nil {
				t.Fatalf("clientConfig: %v", err)
			}
			if !slices.Equal(cfg.Servers, tt.wantServers) {
				t.Errorf("Servers = %q, want %q", cfg.Servers, tt.wantServers)
			}
			if cfg.TLS.ServerName != tt.wantServerName {
				t.Errorf("TLS.ServerName = %q, want %q", cfg.TLS.ServerName, tt.wantServerName)
			}
			if !reflect.DeepEqual(cfg.Routes, tt.wantRoutes) {
				t.Errorf("Routes = %+v, want %+v", cfg.Routes, tt.wantRoutes)
			}
			if got := leafCN(t, cfg.TLS); got != tt.wantCN {
				t.Errorf("certificate CN = %q, want %q", got, tt.wantCN)
			}
			if cfg.TLS.MinVersion != tt.wantMin {
				t.Errorf("MinVersion = %s, want %s", tls.VersionName(cfg.TLS.MinVersion), tls.VersionName(tt.wantMin))
			}
			if cfg.Sessions != tt.wantSessions {
				t.Errorf("Sessions = %d, want %d", cfg.Sessions, tt.wantSessions)
			}
			if cfg.Reconnect.Max != tt.wantReconnect {
				t.Errorf("Reconnect.Max = %v, want %v", cfg.Reconnect.Max, tt.wantReconnect)
			}
		})
	}
}

// TestClientServerNameDefault checks that a client configured without
// --server-name asks the server for a certificate naming the host of
// --server: the name it sends in its ClientHello.
func TestClientServerNameDefault(t *testing.T) {
	p := newPKI(t)
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	cfg, err := resolveClient(t, append([]string{"--server", "localhost:" + port, "--listen", "127.0.0.1:0"}, p.flags("client-flag")...))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- cl.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	// Serve dials the server at once, before any app connects.
	conn, err := srv.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sni := make(chan string, 1)
	errRefuse := errors.New("test server refuses every handshake")
	tconn := tls.Server(conn, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		sni <- h.ServerName
		return nil, errRefuse
	}})
	tconn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tconn.Handshake(); !errors.Is(err, errRefuse) {
		t.Fatalf("handshake error = %v, want the test's refusal", err)
	}
	if got := <-sni; got != "localhost" {
		t.Errorf("client sent server name %q, want %q (the host of --server)", got, "localhost")
	}
}

// TestConfigRelativePaths runs from another working directory with a
// relative --config: the certificate paths in the file must resolve
// against the file's folder, not the working directory.
func TestConfigRelativePaths(t *testing.T) {
	p := newPKI(t)
	root := t.TempDir()
	confDir := filepath.Join(root, "conf")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Files one level below the config's folder, and the CA given as an
	// absolute path, which must be kept as it is.
	pkiDir := filepath.Join(confDir, "pki")
	if err := os.Mkdir(pkiDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"server-file.crt", "server-file.key", "client-file.crt", "client-file.key"} {
		data, err := os.ReadFile(filepath.Join(p.dir, name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, pkiDir, name, string(data))
	}
	writeFile(t, confDir, "server.yaml", "listen: :8443\ntls:\n  cert: pki/server-file.crt\n  key: pki/server-file.key\n  ca: "+p.ca+
		"\nroutes:\n  db:\n    target: db:5432\n    allow_all: true\n")
	writeFile(t, confDir, "client.yaml", "server: localhost:8443\ntls:\n  cert: ./pki/client-file.crt\n  key: pki/client-file.key\n  ca: "+p.ca+
		"\nroutes:\n  - listen: 127.0.0.1:0\n")
	work := filepath.Join(root, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(work)

	scfg, err := resolveServer(t, []string{"--config", "../conf/server.yaml"})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	if got := leafCN(t, scfg.TLS); got != "server-file" {
		t.Errorf("server certificate CN = %q, want server-file", got)
	}
	ccfg, err := resolveClient(t, []string{"--config", "../conf/client.yaml"})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if got := leafCN(t, ccfg.TLS); got != "client-file" {
		t.Errorf("client certificate CN = %q, want client-file", got)
	}
}

// TestConfigErrors runs the real command line: every case must exit 2 (a
// configuration error) and say what is wrong and where.
func TestConfigErrors(t *testing.T) {
	p := newPKI(t)
	listen := busyAddr(t)
	t.Setenv("MTUNNEL_LISTEN", listen) // in case a configuration is accepted by mistake
	srvFlags := p.flags("server-flag")
	cliFlags := p.flags("client-flag")
	unknownTop := writeFile(t, p.dir, "unknown-top.yaml", serverYAML+"tls_min: 1.2\n")
	unknownNested := writeFile(t, p.dir, "unknown-nested.yaml",
		"listen: :1\nroutes:\n  db:\n    target: db:1\n    alow:\n      - cn: app\n")
	unknownRule := writeFile(t, p.dir, "unknown-rule.yaml",
		"listen: :1\nroutes:\n  db:\n    target: db:1\n    allow:\n      - common_name: app\n")
	unknownClient := writeFile(t, p.dir, "unknown-client.yaml", clientYAML+"sessions: 2\n")
	routesOnly := writeFile(t, p.dir, "routes-only.yaml", "routes:\n  db: {target: 'db:1', allow_all: true}\n")
	badMin := writeFile(t, p.dir, "bad-min.yaml", strings.Replace(serverYAML, `min_version: "1.2"`, `min_version: "1.0"`, 1))
	nobody := writeFile(t, p.dir, "nobody.yaml", "listen: :1\nroutes:\n  db:\n    target: db:5432\n")
	empty := writeFile(t, p.dir, "empty.yaml", "")
	notYAML := writeFile(t, p.dir, "list.yaml", "- listen: :1\n")
	twoRoutes := writeFile(t, p.dir, "two-routes.yaml", clientYAML)
	bothServerKeys := writeFile(t, p.dir, "both-server-keys.yaml", "servers: [a:1, b:1]\n"+clientYAML)
	noServer := writeFile(t, p.dir, "no-server.yaml", strings.Replace(clientYAML, "server: tunnel.example.com:8443\n", "", 1))
	// Found by FuzzConfig: yaml's type errors named Go types
	// (map[string]main.serverFileRoute, tunnel.Rule).
	listRoutes := writeFile(t, p.dir, "list-routes.yaml", "listen: :1\nroutes:\n  - listen: :2\n")
	scalarRule := writeFile(t, p.dir, "scalar-rule.yaml", "listen: :1\nroutes:\n  db:\n    target: db:1\n    allow: [app]\n")
	badMode := writeFile(t, p.dir, "bad-mode.yaml", "server: a:1\nroutes:\n  - listen: unix:/run/a.sock\n  - listen: unix:/run/b.sock\n    listen_mode: rw-rw----\n")
	badPP := writeFile(t, p.dir, "bad-pp.yaml", "listen: :1\nroutes:\n  pg:\n    target: db:1\n    allow_all: true\n    proxy_protocol: v1\n")
	relativeTarget := writeFile(t, p.dir, "relative-target.yaml", "listen: :1\nroutes:\n  pg:\n    target: unix:pg.sock\n    allow_all: true\n")

	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string // substrings of stderr
	}{
		{"unknown top-level key", nil, []string{"server", "--config", unknownTop}, []string{unknownTop, "tls_min"}},
		{"unknown route key", nil, []string{"server", "--config", unknownNested}, []string{unknownNested, "alow"}},
		{"unknown rule key", nil, []string{"server", "--config", unknownRule}, []string{unknownRule, "common_name"}},
		{"unknown client key", nil, []string{"client", "--config", unknownClient}, []string{unknownClient, "sessions"}},
		{"listen with a two-route file", nil, []string{"client", "--config", twoRoutes}, []string{"set one route", twoRoutes + " has 2"}},
		{"not a mapping", nil, []string{"server", "--config", notYAML}, []string{notYAML, "into the top level"}},
		{"server routes as a list", nil, []string{"server", "--config", listRoutes}, []string{listRoutes, "into routes (a mapping"}},
		{"allow rule not a mapping", nil, []string{"server", "--config", scalarRule}, []string{scalarRule, `into an allow rule (like "cn: app")`}},
		{"empty file names the missing key", nil, []string{"server", "--config", empty}, []string{empty + ": tls.cert is required"}},
		{"tls-min 1.1", nil, append([]string{"server", "--tls-min", "1.1", "--target", "db:1", "--allow-all"}, srvFlags...), []string{`--tls-min "1.1"`}},
		{"tls-min 1.0 in env", map[string]string{"MTUNNEL_TLS_MIN": "1.0"}, append([]string{"client", "--server", "localhost:1"}, cliFlags...), []string{`--tls-min "1.0"`}},
		{"min_version 1.0 in file", nil, []string{"server", "--config", badMin}, []string{badMin + `: tls.min_version "1.0"`}},
		{"allow without target", nil, append([]string{"server", "--allow-cn", "app"}, srvFlags...), []string{"--target"}},
		{"allow-all without target", nil, append([]string{"server", "--config", routesOnly, "--allow-all"}, srvFlags...), []string{"--target"}},
		{"target allows nobody", nil, append([]string{"server", "--target", "db:5432"}, srvFlags...), []string{`route "default" allows nobody`, "deny by default"}},
		{"file route allows nobody", nil, append([]string{"server", "--config", nobody}, srvFlags...), []string{`route "db" allows nobody`, nobody}},
		{"server without route", nil, append([]string{"server"}, srvFlags...), []string{"no route"}},
		{"client without server", nil, append([]string{"client"}, cliFlags...), []string{"--server is required"}},
		{"file without server", nil, []string{"client", "--config", noServer}, []string{noServer + ": server or servers is required"}},
		{"server and servers in the file", nil, []string{"client", "--config", bothServerKeys}, []string{bothServerKeys, "not both"}},
		{"same server twice", nil, slices.Concat([]string{"client", "--listen", "127.0.0.1:0", "--server", "a:1", "--server", "a:1"}, cliFlags), []string{"server a:1 given twice"}},
		{"negative reconnect-max", nil, slices.Concat([]string{"client", "--listen", "127.0.0.1:0", "--server", "a:1", "--reconnect-max", "-1s"}, cliFlags), []string{"reconnect delays must not be negative"}},
		{"client without key", nil, []string{"client", "--server", "localhost:1", "--cert", p.ca, "--ca", p.ca}, []string{"--key is required"}},
		{"server certificate as client", nil, append([]string{"client", "--server", "localhost:1"}, srvFlags...), []string{"--cert"}},
		{"stray server argument", nil, slices.Concat([]string{"server", "--target", "db:1"}, srvFlags, []string{"extra", "--allow-all"}), []string{`unexpected argument "extra"`}},
		{"stray client argument", nil, slices.Concat([]string{"client", "--server", "localhost:1"}, cliFlags, []string{"db"}), []string{`unexpected argument "db"`}},
		{"bad duration in env", map[string]string{"MTUNNEL_HANDSHAKE_TIMEOUT": "soon"}, []string{"client"}, []string{"MTUNNEL_HANDSHAKE_TIMEOUT"}},
		{"bad number in env", map[string]string{"MTUNNEL_SESSIONS": "many"}, []string{"client"}, []string{"MTUNNEL_SESSIONS"}},
		{"listen_mode not octal", nil, append([]string{"client", "--config", badMode}, cliFlags...), []string{badMode + `: routes[1].listen_mode "rw-rw----"`, "octal"}},
		{"--listen-mode too wide", nil, slices.Concat([]string{"client", "--server", "a:1", "--listen", "unix:/run/a.sock", "--listen-mode", "4755"}, cliFlags), []string{`--listen-mode "4755"`}},
		{"--listen-mode on TCP", nil, slices.Concat([]string{"client", "--server", "a:1", "--listen", "127.0.0.1:0", "--listen-mode", "0660"}, cliFlags), []string{"unix: listeners only"}},
		{"relative unix listen", nil, slices.Concat([]string{"client", "--server", "a:1", "--listen", "unix:a.sock"}, cliFlags), []string{`"unix:a.sock"`, "must be absolute"}},
		{"relative unix target", nil, append([]string{"server", "--config", relativeTarget}, srvFlags...), []string{`route "pg"`, "must be absolute", relativeTarget}},
		{"proxy_protocol v1 in the file", nil, append([]string{"server", "--config", badPP}, srvFlags...), []string{badPP + `: routes.pg.proxy_protocol "v1": want v2 or none`}},
		{"--proxy-protocol bogus", nil, append([]string{"server", "--target", "db:1", "--allow-all", "--proxy-protocol", "yes"}, srvFlags...), []string{`--proxy-protocol "yes": want v2 or none`}},
		{"--proxy-protocol without target", nil, append([]string{"server", "--config", routesOnly, "--proxy-protocol", "v2"}, srvFlags...), []string{"--proxy-protocol", "give --target too"}},
		{"--tunnel-recv-buffer tiny", nil, slices.Concat([]string{"server", "--target", "db:1", "--allow-all", "--tunnel-recv-buffer", "1KiB"}, srvFlags), []string{`--tunnel-recv-buffer "1KiB": want auto, kernel or a size`}},
		{"bad tunnel recv buffer in env", map[string]string{"MTUNNEL_TUNNEL_RECV_BUFFER": "big"}, slices.Concat([]string{"client", "--listen", "127.0.0.1:0", "--server", "a:1"}, cliFlags), []string{`--tunnel-recv-buffer "big"`}},
		{"client certificate as server", nil, append([]string{"server", "--target", "db:1", "--allow-all"}, cliFlags...), []string{"--cert"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			code, _, stderr := runCLI(t, tt.args...)
			if code != 2 {
				t.Errorf("exit code = %d, want 2; stderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr = %q\nwant it to contain %q", stderr, w)
				}
			}
		})
	}
}

func TestTLSMinVersion(t *testing.T) {
	p := newPKI(t)
	base := append([]string{"--listen", ":1", "--target", "db:1", "--allow-all"}, p.flags("server-flag")...)
	for _, tt := range []struct {
		value string
		want  uint16 // 0: rejected
	}{
		{"1.2", tls.VersionTLS12},
		{"1.3", tls.VersionTLS13},
		{" 1.2 ", tls.VersionTLS12},
		{"1.1", 0},
		{"1.0", 0},
		{"1.4", 0},
		{"tls1.2", 0},
	} {
		cfg, err := resolveServer(t, slices.Concat(base, []string{"--tls-min", tt.value}))
		if tt.want == 0 {
			var ce *configError
			if !errors.As(err, &ce) {
				t.Errorf("--tls-min %q: error = %v, want a configuration error", tt.value, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("--tls-min %q: %v", tt.value, err)
		} else if cfg.TLS.MinVersion != tt.want {
			t.Errorf("--tls-min %q: MinVersion = %s, want %s", tt.value, tls.VersionName(cfg.TLS.MinVersion), tls.VersionName(tt.want))
		}
	}
}

func TestBusyRateFlag(t *testing.T) {
	args := slices.Concat([]string{"--listen", "127.0.0.1:0", "--server", "a:1"}, newPKI(t).flags("client-flag"))
	for v, want := range map[string]int64{"": 0, "off": -1, "1MiB": 1 << 20, "500000": 500000} {
		cfg, err := resolveClient(t, slices.Concat(args, []string{"--busy-rate", v}))
		if err != nil || cfg.BusyRate != want {
			t.Errorf("--busy-rate %q: BusyRate %d, %v; want %d", v, cfg.BusyRate, err, want)
		}
	}
	srvArgs := slices.Concat([]string{"--listen", ":1", "--target", "db:1", "--allow-all"}, newPKI(t).flags("server-flag"))
	for _, v := range []string{"fast", "0", "-1MiB"} {
		_, err := resolveClient(t, slices.Concat(args, []string{"--busy-rate", v}))
		if err == nil || !strings.Contains(err.Error(), "--busy-rate") {
			t.Errorf("--busy-rate %q: error %v, want one naming the flag", v, err)
		}
		// The server has it too, for its priorities (--bulk-nice).
		_, err = resolveServer(t, slices.Concat(srvArgs, []string{"--busy-rate", v}))
		var ce *configError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "--busy-rate") {
			t.Errorf("server --busy-rate %q: error %v, want a configuration error naming the flag", v, err)
		}
	}
	for _, v := range []string{"off", "1MiB"} {
		if _, err := resolveServer(t, slices.Concat(srvArgs, []string{"--busy-rate", v})); err != nil {
			t.Errorf("server --busy-rate %q: %v", v, err)
		}
	}
}

func TestRecvBufferFlag(t *testing.T) {
	for v, want := range map[string]int64{"auto": 0, "kernel": tunnel.RecvBufferKernel, "1MiB": 1 << 20, "65536": 65536} {
		if got, err := recvBufferFlag(v); err != nil || got != want {
			t.Errorf("recvBufferFlag(%q) = %d, %v; want %d", v, got, err, want)
		}
	}
}
