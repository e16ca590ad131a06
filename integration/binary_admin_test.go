package integration

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs"
)

// parseTextLine reads one line of slog's text format: key=value pairs,
// values quoted (Go syntax) when they hold spaces or quotes.
func parseTextLine(line string) (record, bool) {
	r := record{attrs: map[string]string{}}
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimLeft(line, " ") {
		key, rest, ok := strings.Cut(line, "=")
		if !ok || key == "" || strings.Contains(key, " ") {
			return record{}, false
		}
		var value string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return record{}, false
			}
			value, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			value, rest, _ = strings.Cut(rest, " ")
		}
		r.attrs[key], line = value, rest
	}
	r.msg = r.attrs["msg"]
	r.level.UnmarshalText([]byte(r.attrs["level"]))
	delete(r.attrs, "msg")
	delete(r.attrs, "level")
	return r, r.msg != ""
}

// textMatch matches a text-format log line by message and attributes.
func textMatch(msg string, kv ...string) func(record) bool {
	return func(raw record) bool {
		r, ok := parseTextLine(raw.msg) // a line that is not JSON keeps its text in msg
		return ok && msgAttr(msg, kv...)(r)
	}
}

// waitText waits for the nth text-format line with msg and kv, parsed.
func (p *childProc) waitText(t testing.TB, n int, msg string, kv ...string) record {
	t.Helper()
	raw, err := p.await(n, textMatch(msg, kv...))
	if err != nil {
		p.handled = true
		t.Fatalf("waiting for text log line #%d %q %q: %v\noutput:\n%s", n, msg, kv, err, p.out.dump())
	}
	r, _ := parseTextLine(raw.msg)
	return r
}

// statusJSON is the part of `mtunnel status --json` this test reads.
type statusJSON struct {
	Agent     string `json:"agent"`
	Readiness struct {
		Ready bool `json:"ready"`
	} `json:"readiness"`
	Sessions []struct {
		ID           string `json:"id"`
		Peer         string `json:"peer"`
		StreamsTotal int64  `json:"streams_total"`
		BytesUp      int64  `json:"bytes_up"`
		BytesDown    int64  `json:"bytes_down"`
	} `json:"sessions"`
	Routes []struct {
		Route string `json:"route"`
		Total int64  `json:"total"`
		OK    int64  `json:"ok"`
		Up    int64  `json:"bytes_up"`
		Down  int64  `json:"bytes_down"`
	} `json:"routes"`
	Certificates []struct {
		Role     string `json:"role"`
		Subject  string `json:"subject"`
		DaysLeft int    `json:"days_left"`
	} `json:"certificates"`
	CRLs []struct {
		Issuer string `json:"issuer"`
	} `json:"crls"`
}

// TestAdminBinary runs both built agents with --admin on 127.0.0.1:0 (the
// server logging JSON, the client text), sends traffic, and checks what an
// operator would: /metrics series and values, a stranger's refusal with
// its reason, /readyz, pprof only where asked for, `mtunnel status` and
// `status --json`, and the peer, route and session on every stream line.
func TestAdminBinary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	k := newBinPKI(t, dir)
	mustRunBinary(t, "certs", "crl", "--dir", dir)
	echoAddr := backend(t, echo)

	server := startAgent(t, "server", nil, append(k.serverArgs("127.0.0.1:0", echoAddr),
		"--crl", filepath.Join(dir, "ca.crl"), "--admin", "127.0.0.1:0")...)
	serverAddr := server.listening(t)
	serverAdmin := server.waitLog(t, "admin listening").attrs["addr"]

	ccmd := exec.Command(mtunnelBinary(t), append(k.clientArgs(serverAddr), "--log-format", "text",
		"--sessions", "2", "--admin", "127.0.0.1:0", "--admin-pprof")...)
	ccmd.Env = binaryEnv()
	client := startProc(t, "client", ccmd, syscall.SIGTERM)
	local := client.waitText(t, 1, "listening").attrs["addr"]
	clientAdmin := client.waitText(t, 1, "admin listening", "pprof", "true").attrs["addr"]
	server.waitLogN(t, 2, "session established")

	sizes := []int{1, 4096, 100 << 10, 1 << 20}
	total := 0
	for _, n := range sizes {
		if err := echoCheck(t, local, n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	// Each agent counts a stream before it logs its end.
	server.waitLogN(t, len(sizes), "stream ended", "result", "ok")
	client.waitText(t, len(sizes), "stream ended", "result", "ok")

	for agent, addr := range map[string]string{"server": serverAdmin, "client": clientAdmin} {
		m := scrape(t, "http://"+addr+"/metrics")
		m.expect(t, agent, float64(len(sizes)), "mtunnel_streams_total", "route", "default", "result", "ok")
		m.expect(t, agent, float64(total), "mtunnel_stream_bytes_total", "route", "default", "direction", "up")
		m.expect(t, agent, float64(total), "mtunnel_stream_bytes_total", "route", "default", "direction", "down")
		m.expect(t, agent, 0, "mtunnel_streams_open", "route", "default")
		m.expect(t, agent, 2, "mtunnel_sessions_open")
		m.expect(t, agent, 2, "mtunnel_handshake_duration_seconds")
		m.expect(t, agent, float64(len(sizes)), "mtunnel_stream_open_duration_seconds", "route", "default")
		if _, ok := m.value("go_goroutines"); !ok {
			t.Errorf("%s: no Go runtime metrics", agent)
		}
		var r struct{ Ready bool }
		if code := getJSONBody(t, "http://"+addr+"/readyz", &r); code != http.StatusOK || !r.Ready {
			t.Errorf("%s /readyz: %d %+v", agent, code, r)
		}
	}
	sm := scrape(t, "http://"+serverAdmin+"/metrics")
	own, ca := loadCert(t, k.serverCert), loadCert(t, k.ca)
	sm.expect(t, "server", float64(own.NotAfter.Unix()), "mtunnel_certificate_expiry_timestamp_seconds", "role", "own", "subject", "CN="+readmeServerName)
	sm.expect(t, "server", float64(ca.NotAfter.Unix()), "mtunnel_certificate_expiry_timestamp_seconds", "role", "ca", "serial", certs.SerialString(ca.SerialNumber))
	if age, ok := sm.value("mtunnel_crl_age_seconds", "issuer", "CN=mtunnel CA"); !ok || age < 0 || age > 3600 {
		t.Errorf("server: CRL age %v (%v), want the age of the CRL made just now", age, ok)
	}
	if _, ok := sm.value("mtunnel_crl_next_update_timestamp_seconds", "issuer", "CN=mtunnel CA"); !ok {
		t.Error("server: no CRL next update")
	}

	// pprof only where --admin-pprof asked for it.
	if code, _ := httpGet(t, "http://"+serverAdmin+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("server without --admin-pprof: /debug/pprof/ = %d", code)
	}
	if code, _ := httpGet(t, "http://"+clientAdmin+"/debug/pprof/"); code != http.StatusOK {
		t.Errorf("client with --admin-pprof: /debug/pprof/ = %d", code)
	}

	// A client whose certificate another CA signed: refused, with the
	// reason, and counted so.
	other := filepath.Join(t.TempDir(), "other")
	mustRunBinary(t, "certs", "init", "--dir", other)
	mustRunBinary(t, "certs", "issue", "--dir", other, "--name", "app", "--client")
	// It trusts both CAs: its own certificate must chain to its bundle.
	bundle := filepath.Join(other, "both.crt")
	if err := os.WriteFile(bundle, append(mustRead(t, filepath.Join(other, "ca.crt")), mustRead(t, k.ca)...), 0o644); err != nil {
		t.Fatal(err)
	}
	args := withFlag(withFlag(k.clientArgs(serverAddr), "--cert", filepath.Join(other, "app.crt")), "--key", filepath.Join(other, "app.key"))
	stranger := startAgent(t, "stranger", nil, withFlag(args, "--ca", bundle)...)
	stranger.waitLog(t, "session dial failed", "reason", "rejected_by_peer")
	server.waitLog(t, "handshake failed", "reason", "unknown_authority")
	refused := server.count("handshake failed", "reason", "unknown_authority")
	if v, ok := scrape(t, "http://"+serverAdmin+"/metrics").value("mtunnel_handshake_failures_total", "reason", "unknown_authority"); !ok || v < float64(refused) {
		t.Errorf("server: handshake failures for unknown_authority = %v (%v), want at least the %d logged", v, ok, refused)
	}
	stranger.stop(t)

	checkStatusText(t, serverAdmin, own, len(sizes))
	checkStatusJSON(t, clientAdmin, len(sizes), total, server)
	checkStreamLines(t, server, client)
}

// checkStatusText runs `mtunnel status` against the server's endpoint
// (given by MTUNNEL_ADMIN, as an operator's shell may) and reads its table.
func checkStatusText(t *testing.T, admin string, own *x509.Certificate, streams int) {
	t.Helper()
	r := runBinary(t, []string{"MTUNNEL_ADMIN=" + admin}, "status")
	if r.code != 0 {
		t.Fatalf("mtunnel status: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	days := int(math.Floor(time.Until(own.NotAfter).Hours() / 24))
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^mtunnel server agent e2e-test, up \S+: ready$`),
		regexp.MustCompile(`(?m)^SESSIONS \(2\)$`),
		regexp.MustCompile(`(?m)^  [0-9a-f]{8}  CN=app  127\.0\.0\.1:\d+ +\S+ +0 +\d+ `),
		regexp.MustCompile(fmt.Sprintf(`(?m)^  default +0 +%d +%d +0 +0 `, streams, streams)),
		regexp.MustCompile(fmt.Sprintf(`(?m)^  own +CN=%s +%s +(%d|%d)$`, regexp.QuoteMeta(readmeServerName), own.NotAfter.UTC().Format(time.DateOnly), days, days-1)),
		regexp.MustCompile(`(?m)^  ca +CN=mtunnel CA +\d{4}-\d\d-\d\d +\d+$`),
		regexp.MustCompile(`(?m)^  CRL CN=mtunnel CA +\S+ca\.crl +age \S+ +next update .* 0 revoked$`),
	} {
		if !want.MatchString(r.stdout) {
			t.Errorf("mtunnel status output does not match %s:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "\x1b") {
		t.Errorf("colour codes in output to a pipe:\n%q", r.stdout)
	}
}

// checkStatusJSON runs `mtunnel status --json` against the client's
// endpoint: its sessions are the server's (same ids in the server's log),
// and the route counts and bytes are what the test sent.
func checkStatusJSON(t *testing.T, admin string, streams, total int, server *childProc) {
	t.Helper()
	r := runBinary(t, nil, "status", "--admin", admin, "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
		t.Fatalf("mtunnel status --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if st.Agent != "client" || !st.Readiness.Ready || len(st.Sessions) != 2 {
		t.Fatalf("status --json: %+v", st)
	}
	var carried int64
	for _, s := range st.Sessions {
		carried += s.StreamsTotal
		if s.Peer != "CN="+readmeServerName || server.count("session established", "session", s.ID) != 1 {
			t.Errorf("client session %+v: want peer %s and an id the server logged", s, readmeServerName)
		}
	}
	if carried != int64(streams) {
		t.Errorf("client sessions carried %d streams, want %d", carried, streams)
	}
	if len(st.Routes) != 1 || st.Routes[0].Route != "default" || st.Routes[0].OK != int64(streams) ||
		st.Routes[0].Up != int64(total) || st.Routes[0].Down != int64(total) {
		t.Errorf("client routes %+v, want default with %d ok and %d bytes each way", st.Routes, streams, total)
	}
	var roles []string
	for _, c := range st.Certificates {
		roles = append(roles, c.Role+" "+c.Subject)
		if c.DaysLeft < 30 {
			t.Errorf("certificate %+v: fresh, yet under 30 days", c)
		}
	}
	if !slices.Equal(roles, []string{"own CN=app", "ca CN=mtunnel CA"}) || len(st.CRLs) != 0 {
		t.Errorf("client certificates %v, CRLs %v", roles, st.CRLs)
	}
}

// checkStreamLines: every stream line of both agents, JSON and text, names
// the peer, the route and the session, and the ids match across agents.
func checkStreamLines(t *testing.T, server, client *childProc) {
	t.Helper()
	var ids []string
	server.out.count(func(r record) bool {
		if r.msg == "stream ended" {
			if r.attrs["peer"] != "CN=app" || r.attrs["route"] != "default" || len(r.attrs["session"]) != 8 {
				t.Errorf("server stream line without peer, route or session: %v", r)
			}
			ids = append(ids, r.attrs["session"])
		}
		return false
	})
	n := 0
	client.out.count(func(raw record) bool {
		if r, ok := parseTextLine(raw.msg); ok && r.msg == "stream ended" {
			n++
			if r.attrs["peer"] != "CN="+readmeServerName || r.attrs["route"] != "default" || !slices.Contains(ids, r.attrs["session"]) {
				t.Errorf("client stream line without peer, route or a session the server knows (%v): %v", ids, r)
			}
		}
		return false
	})
	if n == 0 || len(ids) == 0 {
		t.Errorf("stream lines: %d on the client, %d on the server", n, len(ids))
	}
}

// httpGet fetches url and returns the status code and body.
func httpGet(t testing.TB, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // no idle connection left for goleak
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	if _, err := io.Copy(&body, resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, []byte(body.String())
}

// getJSONBody fetches url, decodes its body into v, and returns the code.
func getJSONBody(t testing.TB, url string, v any) int {
	t.Helper()
	code, body := httpGet(t, url)
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
	return code
}

func mustRead(t testing.TB, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func loadCert(t testing.TB, file string) *x509.Certificate {
	t.Helper()
	cs, err := certs.ParseCertificatesPEM(mustRead(t, file))
	if err != nil || len(cs) == 0 {
		t.Fatalf("%s: %v", file, err)
	}
	return cs[0]
}
