package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"
)

// The YAML config files. Unknown keys are errors; relative paths resolve
// against the file's folder. Flags and MTUNNEL_* variables override what a
// file says (flag > env > file > default).

type fileTLS struct {
	Cert          string   `yaml:"cert"`
	Key           string   `yaml:"key"`
	CA            string   `yaml:"ca"`
	Intermediates string   `yaml:"intermediates"`
	ServerName    string   `yaml:"server_name"` // client only
	LegacyCN      bool     `yaml:"legacy_cn"`   // client only
	MinVersion    string   `yaml:"min_version"`
	CRL           []string `yaml:"crl"`
	CRLStale      string   `yaml:"crl_stale"`
	OCSP          string   `yaml:"ocsp"`
}

type serverFile struct {
	Listen string                     `yaml:"listen"`
	TLS    fileTLS                    `yaml:"tls"`
	Routes map[string]serverFileRoute `yaml:"routes"`
	Admin  fileAdmin                  `yaml:"admin"`
}

type serverFileRoute struct {
	Target        string        `yaml:"target"`
	Allow         []tunnel.Rule `yaml:"allow"`
	AllowAll      bool          `yaml:"allow_all"`
	ProxyProtocol string        `yaml:"proxy_protocol"` // v2 or none
}

type clientFile struct {
	Server  string            `yaml:"server"`  // one server
	Servers []string          `yaml:"servers"` // or several, serving the same routes
	TLS     fileTLS           `yaml:"tls"`
	Routes  []clientFileRoute `yaml:"routes"`
	Admin   fileAdmin         `yaml:"admin"`
}

type clientFileRoute struct {
	Listen     string `yaml:"listen"`
	Route      string `yaml:"route"`
	ListenMode string `yaml:"listen_mode"` // octal, for unix: listeners
}

// loadYAML decodes path into v strictly and makes the relative paths that
// paths() returns absolute against the file's folder.
func loadYAML(path string, v interface{ paths() []*string }) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return configErrorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return configErrorf("config %s: %s", path, yamlPlaces.Replace(err.Error()))
	}
	dir := filepath.Dir(path)
	for _, p := range v.paths() {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return nil
}

func (f *serverFile) paths() []*string { return f.TLS.paths() }
func (f *clientFile) paths() []*string { return f.TLS.paths() }
func (t *fileTLS) paths() []*string {
	p := []*string{&t.Cert, &t.Key, &t.CA, &t.Intermediates}
	for i := range t.CRL {
		p = append(p, &t.CRL[i])
	}
	return p
}

// yamlPlaces turns the Go types in yaml's messages ("field alow not found
// in type main.serverFileRoute", "cannot unmarshal !!str into
// []tunnel.Rule") into the part of the file a user edits. Longer names come
// first: the replacer tries them in order.
var yamlPlaces = strings.NewReplacer(
	"in type main.serverFileRoute", "in a route",
	"in type main.clientFileRoute", "in a route",
	"in type main.serverFile", "at the top level",
	"in type main.clientFile", "at the top level",
	"in type main.fileTLS", "in tls",
	"in type main.fileAdmin", "in admin",
	"in type tunnel.Rule", "in an allow rule",
	"into map[string]main.serverFileRoute", "into routes (a mapping from route name to target and allow)",
	"into []main.clientFileRoute", "into routes (a list of listen and route)",
	"into main.serverFileRoute", "into a route (target, allow, allow_all, proxy_protocol)",
	"into main.clientFileRoute", "into a route (listen, route, listen_mode)",
	"into main.serverFile", "into the top level (a mapping of settings)",
	"into main.clientFile", "into the top level (a mapping of settings)",
	"into main.fileTLS", "into tls (a mapping of settings)",
	"into main.fileAdmin", "into admin (a mapping of settings)",
	"into []tunnel.Rule", `into allow (a list of rules like "- cn: app")`,
	"into tunnel.Rule", `into an allow rule (like "cn: app")`,
	"into []string", "into a list of strings",
	"into main.", "into ",
)

// setting is one resolved value and where it came from, so errors can
// name the flag or the config key at fault.
type setting struct {
	value  string
	source string // "--cert" or "server.yaml: tls.cert"
}

// pick resolves one string setting: flag or env if set, else the file.
func pick(c *cli.Context, flag, fileValue, file, key string) setting {
	if c.IsSet(flag) || file == "" {
		return setting{c.String(flag), "--" + flag}
	}
	return setting{fileValue, file + ": " + key}
}

// tlsSettings are the TLS inputs shared by both agents.
type tlsSettings struct {
	cert, key, ca, intermediates, minVersion setting
}

func pickTLS(c *cli.Context, f fileTLS, file string) tlsSettings {
	return tlsSettings{
		cert:          pick(c, "cert", f.Cert, file, "tls.cert"),
		key:           pick(c, "key", f.Key, file, "tls.key"),
		ca:            pick(c, "ca", f.CA, file, "tls.ca"),
		intermediates: pick(c, "intermediates", f.Intermediates, file, "tls.intermediates"),
		minVersion:    pick(c, "tls-min", f.MinVersion, file, "tls.min_version"),
	}
}

// credentials loads and checks the key pair, the trust bundle and the
// optional intermediates. usage is the role of our own certificate: a server
// certificate must allow ServerAuth. It also returns every CA certificate it
// read (where CRL issuers are looked up). Start-up and reloads
// (cli_reload.go) both use it, so a reload passes the checks of a start.
// A file's error is a *fileError naming it.
func (t tlsSettings) credentials(usage x509.ExtKeyUsage) (*tunnel.Credentials, uint16, []*x509.Certificate, error) {
	fail := func(file string, err error) (*tunnel.Credentials, uint16, []*x509.Certificate, error) {
		return nil, 0, nil, configErr(&fileError{file: file, err: err})
	}
	for _, s := range []setting{t.cert, t.key, t.ca} {
		if s.value == "" {
			return nil, 0, nil, configErrorf("%s is required", s.source)
		}
	}
	pair, err := certs.LoadKeyPair(t.cert.value, t.key.value)
	if err != nil {
		return fail(pairFile(err, t.cert.value, t.key.value), fmt.Errorf("%s / %s: %w", t.cert.source, t.key.source, err))
	}
	roots, cas, err := certs.LoadPool(t.ca.value)
	if err != nil {
		return fail(t.ca.value, fmt.Errorf("%s: %w", t.ca.source, err))
	}
	var extra []*x509.Certificate
	if t.intermediates.value != "" {
		if _, extra, err = certs.LoadPool(t.intermediates.value); err != nil {
			return fail(t.intermediates.value, fmt.Errorf("%s: %w", t.intermediates.source, err))
		}
	}
	var sent []*x509.Certificate
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fail(t.cert.value, fmt.Errorf("%s: intermediate certificate: %w", t.cert.source, err))
		}
		sent = append(sent, c)
	}
	if err := certs.VerifyChain(pair.Leaf, append(sent, extra...), roots, usage); err != nil {
		return fail(t.cert.value, fmt.Errorf("%s checked against %s: %w", t.cert.source, t.ca.source, err))
	}
	mv, err := parseTLSVersion(t.minVersion)
	if err != nil {
		return nil, 0, nil, err
	}
	all := append(append(append([]*x509.Certificate(nil), cas...), extra...), sent...)
	return &tunnel.Credentials{
		Certificate:   pair,
		Roots:         roots,
		CAs:           cas,
		Intermediates: extra,
		Issuer:        ownIssuer(pair.Leaf, all),
	}, mv, all, nil
}

// fileError is a credential file that failed to load, and why. Its message
// is err's; file is there for the reload log's "file" attribute.
type fileError struct {
	file string
	err  error
}

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// pairFile names the file of a key pair that a certs.LoadKeyPair error is
// about.
func pairFile(err error, cert, key string) string {
	var pathErr *fs.PathError
	switch {
	case errors.As(err, &pathErr):
		return pathErr.Path
	case errors.Is(err, certs.ErrKeyMismatch):
		return cert + " + " + key
	case errors.Is(err, certs.ErrNoKey), errors.Is(err, certs.ErrInvalidKey):
		return key
	}
	return cert
}

func parseTLSVersion(s setting) (uint16, error) {
	switch strings.TrimSpace(s.value) {
	case "", "1.3":
		return tls.VersionTLS13, nil
	case "1.2":
		return tls.VersionTLS12, nil
	}
	return 0, configErrorf("%s %q: want 1.2 or 1.3 (nothing lower is allowed)", s.source, s.value)
}

// noArgs rejects positional arguments. The agents take flags only, and flag
// parsing stops at the first non-flag: in "server db:5432 --allow-cn app"
// the --allow-cn would be dropped without a word.
func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return configErrorf("unexpected argument %q: all inputs are flags, and flags after it were not read", c.Args().First())
	}
	return nil
}

// durationFlag returns a flag's duration, zero when unset (the agent's
// default then applies).
func durationFlag(c *cli.Context, name string) time.Duration {
	if !c.IsSet(name) {
		return 0
	}
	return c.Duration(name)
}

// static returns a Credentials func for a TLSPolicy.
func static(cr *tunnel.Credentials) func() *tunnel.Credentials {
	return func() *tunnel.Credentials { return cr }
}

// sessionFlags reads the yamux tuning flags shared by both agents, and
// applies --gomaxprocs to the process.
func sessionFlags(c *cli.Context) (tunnel.SessionConfig, error) {
	if n := c.Int("gomaxprocs"); n > 0 {
		runtime.GOMAXPROCS(n)
	}
	w, err := parseSize(c.String("stream-window"))
	if err != nil || w < 256<<10 || w > 1<<30 {
		return tunnel.SessionConfig{}, configErrorf("--stream-window %q: want a size from 256KiB to 1GiB, like 4MiB", c.String("stream-window"))
	}
	budget, err := parseSize(c.String("session-memory"))
	if err != nil || budget <= 0 {
		return tunnel.SessionConfig{}, configErrorf("--session-memory %q: want a size like 1GiB", c.String("session-memory"))
	}
	rb, err := recvBufferFlag(c.String("tunnel-recv-buffer"))
	if err != nil {
		return tunnel.SessionConfig{}, err
	}
	sc := tunnel.SessionConfig{
		RecvBuffer:       rb,
		StreamWindow:     uint32(w),
		MemoryBudget:     budget,
		MaxStreams:       c.Int("max-streams"),
		KeepAlive:        durationFlag(c, "keepalive"),
		KeepAliveTimeout: durationFlag(c, "keepalive-timeout"),
		MaxLifetime:      durationFlag(c, "max-lifetime"),
		LifetimeGrace:    durationFlag(c, "drain-timeout"),
	}
	if err := sc.Validate(); err != nil {
		return tunnel.SessionConfig{}, configErrorf("--max-streams, --stream-window, --session-memory: %w", err)
	}
	return sc, nil
}

// recvBufferFlag reads --tunnel-recv-buffer: auto, kernel or a size.
func recvBufferFlag(v string) (int64, error) {
	switch v {
	case "auto", "":
		return 0, nil
	case "kernel":
		return tunnel.RecvBufferKernel, nil
	}
	n, err := parseSize(v)
	if err != nil || n < 4<<10 || n > 1<<30 {
		return 0, configErrorf("--tunnel-recv-buffer %q: want auto, kernel or a size from 4KiB to 1GiB, like 1MiB", v)
	}
	return n, nil
}

// busyRateFlag reads --busy-rate: a size (per second), or off.
func busyRateFlag(v string) (int64, error) {
	switch v {
	case "":
		return 0, nil
	case "off":
		return -1, nil
	}
	n, err := parseSize(v)
	if err != nil || n <= 0 {
		return 0, configErrorf("--busy-rate %q: want off or a size a second, like 10MiB", v)
	}
	return n, nil
}

// parseSize parses a byte count with an optional KiB, MiB or GiB suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional KiB, MiB or GiB suffix", s)
	}
	return n * mult, nil
}
