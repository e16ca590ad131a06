package integration

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// metricFamilies are the metrics of an agent, by name.
type metricFamilies map[string]*dto.MetricFamily

func gather(t testing.TB, g prometheus.Gatherer) metricFamilies {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := metricFamilies{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// scrape reads an agent's /metrics page in the Prometheus text format.
func scrape(t testing.TB, url string) metricFamilies {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Close = true // no idle connection left for goleak to find
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return fams
}

// value returns the value of the series name{kv...} (a histogram's sample
// count), and whether the series exists. Labels not named are ignored,
// but exactly one series must match.
func (f metricFamilies) value(name string, kv ...string) (float64, bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
	var found []*dto.Metric
	for _, m := range fam.GetMetric() {
		if hasLabels(m, kv) {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		return 0, false
	}
	m := found[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}

func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == kv[i] && l.GetValue() == kv[i+1] }) {
			return false
		}
	}
	return true
}

// expect checks that the series name{kv...} has the value want.
func (f metricFamilies) expect(t testing.TB, agent string, want float64, name string, kv ...string) {
	t.Helper()
	got, ok := f.value(name, kv...)
	switch {
	case !ok:
		t.Errorf("%s: no series %s%q", agent, name, kv)
	case got != want:
		t.Errorf("%s: %s%q = %v, want %v", agent, name, kv, got, want)
	}
}

// reasons returns the reason labels of a counter by reason, with values.
func (f metricFamilies) reasons(name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "reason" {
				out[l.GetValue()] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// TestMetricsInProcess: after real sessions and streams through both
// agents, each agent's metrics count them: streams by route and result,
// bytes each way equal to what the apps sent, sessions, durations, and a
// client from another CA refused with its reason on both sides. The
// agents' session snapshots (the status report) agree, and both agents'
// stream log lines carry the peer, the route and the same session id.
func TestMetricsInProcess(t *testing.T) {
	ca := certstest.New(t)
	logs := newLogSink(t)
	echoAddr := backend(t, echo)
	sreg, creg := prometheus.NewRegistry(), prometheus.NewRegistry()
	srv, addr, _ := startServerAgent(t, server.Config{
		TLS: tunnel.TLSPolicy{Credentials: creds(ca.Server(t, "localhost"), ca.Pool())},
		Routes: map[string]server.Route{
			"default": {Target: echoAddr, ACL: tunnel.ACL{Rules: []tunnel.Rule{{CN: "app"}}}},
			"admin":   {Target: echoAddr, ACL: tunnel.ACL{Rules: []tunnel.Rule{{CN: "admin"}}}},
		},
		Logger:  logs.logger("server"),
		Metrics: tunnel.NewMetrics(sreg),
	})
	cl, locals := startClientAgent(t, client.Config{
		Servers:  []string{addr},
		TLS:      tunnel.TLSPolicy{Credentials: creds(ca.Client(t, "app"), ca.Pool()), ServerName: "localhost"},
		Routes:   []client.Route{{Route: "default"}, {Route: "admin"}},
		Sessions: 2,
		Logger:   logs.logger("client"),
		Metrics:  tunnel.NewMetrics(creg),
	})
	logs.waitForN(t, "two sessions on the server", 2, msgAttr("session established", "agent", "server"))
	logs.waitForN(t, "two sessions on the client", 2, msgAttr("session established", "agent", "client"))

	sizes := []int{1, 1000, 64 << 10, 300 << 10, 5}
	total := 0
	for _, n := range sizes {
		if err := echoCheck(t, locals[0], n); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	expectReset(t, locals[1]) // route admin: CN=app is not allowed
	// Each agent counts a stream before it logs its end.
	logs.waitForN(t, "5 streams on the server", len(sizes), msgAttr("stream ended", "agent", "server", "result", "ok"))
	logs.waitForN(t, "5 streams on the client", len(sizes), msgAttr("stream ended", "agent", "client", "result", "ok"))
	logs.waitFor(t, "the refusal on the client", msgAttr("stream refused by server", "agent", "client", "result", "forbidden"))

	for agent, reg := range map[string]*prometheus.Registry{"server": sreg, "client": creg} {
		f := gather(t, reg)
		f.expect(t, agent, float64(len(sizes)), "mtunnel_streams_total", "route", "default", "result", "ok")
		f.expect(t, agent, 1, "mtunnel_streams_total", "route", "admin", "result", "forbidden")
		f.expect(t, agent, 0, "mtunnel_streams_open", "route", "default")
		f.expect(t, agent, float64(total), "mtunnel_stream_bytes_total", "route", "default", "direction", "up")
		f.expect(t, agent, float64(total), "mtunnel_stream_bytes_total", "route", "default", "direction", "down")
		f.expect(t, agent, float64(len(sizes)), "mtunnel_stream_open_duration_seconds", "route", "default")
		f.expect(t, agent, 2, "mtunnel_sessions_open")
		f.expect(t, agent, 2, "mtunnel_sessions_established_total")
		f.expect(t, agent, 2, "mtunnel_handshake_duration_seconds")
		if r := f.reasons("mtunnel_handshake_failures_total"); len(r) != 0 {
			t.Errorf("%s: handshake failures %v before any bad client", agent, r)
		}
	}

	// The status report's sessions: both ends list the same two sessions,
	// which carried the six streams and the bytes.
	srvSessions, clSessions := srv.Sessions(), cl.Sessions()
	if len(srvSessions) != 2 || len(clSessions) != 2 {
		t.Fatalf("sessions: server %d, client %d; want 2 each", len(srvSessions), len(clSessions))
	}
	var streams, up int64
	for _, s := range srvSessions {
		streams += s.StreamsTotal
		up += s.Up
		if s.Peer != "CN=app" || !slices.ContainsFunc(clSessions, func(c tunnel.SessionInfo) bool { return c.ID == s.ID }) {
			t.Errorf("server session %+v: want peer CN=app and an id the client knows (%+v)", s, clSessions)
		}
	}
	// Up counts the stream headers too: 10 bytes per "default" header.
	if streams != int64(len(sizes))+1 || up < int64(total) {
		t.Errorf("server sessions carried %d streams and %d bytes up; want %d and at least %d", streams, up, len(sizes)+1, total)
	}

	// Every stream line names the peer, the route and the session; the
	// client's and the server's lines about one stream name the same one.
	for _, r := range []record{
		logs.waitFor(t, "a client stream line", msgAttr("stream ended", "agent", "client")),
		logs.waitFor(t, "a server stream line", msgAttr("stream ended", "agent", "server")),
		logs.waitFor(t, "a client refusal line", msgAttr("stream refused by server", "agent", "client")),
		logs.waitFor(t, "a server refusal line", msgAttr("stream rejected", "agent", "server")),
	} {
		if r.attrs["route"] == "" || r.attrs["peer"] == "" || len(r.attrs["session"]) != 8 {
			t.Errorf("stream line without route, peer or session: %v", r)
		}
		if n := logs.count(msgAttr(r.msg, "session", r.attrs["session"])); n == 0 {
			t.Errorf("no line names session %s", r.attrs["session"])
		}
	}

	// A client from another CA: the server counts unknown_authority, the
	// client rejected_by_peer (under TLS 1.3 it learns of the refusal from
	// the server's alert).
	other := certstest.New(t)
	rreg := prometheus.NewRegistry()
	startClient(t, client.Config{
		Servers: []string{addr},
		TLS:     tunnel.TLSPolicy{Credentials: creds(other.Client(t, "app"), ca.Pool()), ServerName: "localhost"},
		Routes:  []client.Route{{Route: "default"}},
		Logger:  logs.logger("stranger"),
		Metrics: tunnel.NewMetrics(rreg),
	})
	logs.waitFor(t, "the refusal on the server", handshakeFailed(tunnel.ReasonUnknownAuthority))
	logs.waitFor(t, "the failed dial", msgAttr("session dial failed", "agent", "stranger"))
	server := gather(t, sreg).reasons("mtunnel_handshake_failures_total")
	if server["unknown_authority"] < 1 || len(server) != 1 {
		t.Errorf("server handshake failures %v, want unknown_authority only", server)
	}
	stranger := gather(t, rreg).reasons("mtunnel_handshake_failures_total")
	if stranger["rejected_by_peer"] < 1 || len(stranger) != 1 {
		t.Errorf("stranger's handshake failures %v, want rejected_by_peer only", stranger)
	}
	gather(t, rreg).expect(t, "stranger", 0, "mtunnel_sessions_established_total")
}

// TestMetricsSessionEnd: sessions that end are counted by reason on both
// sides, and a client counts its redial as a reconnect.
func TestMetricsSessionEnd(t *testing.T) {
	ca := certstest.New(t)
	logs := newLogSink(t)
	sreg, creg := prometheus.NewRegistry(), prometheus.NewRegistry()
	_, addr, stop := startServerAgent(t, server.Config{
		TLS:     tunnel.TLSPolicy{Credentials: creds(ca.Server(t, "localhost"), ca.Pool())},
		Routes:  map[string]server.Route{"default": {Target: backend(t, echo), ACL: tunnel.ACL{AllowAll: true}}},
		Logger:  logs.logger("server"),
		Metrics: tunnel.NewMetrics(sreg),
	})
	startClient(t, client.Config{
		Servers:   []string{addr},
		TLS:       tunnel.TLSPolicy{Credentials: creds(ca.Client(t, "app"), ca.Pool()), ServerName: "localhost"},
		Routes:    []client.Route{{Route: "default"}},
		Sessions:  1,
		Reconnect: tunnel.Reconnect{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		Logger:    logs.logger("client"),
		Metrics:   tunnel.NewMetrics(creg),
	})
	logs.waitFor(t, "a session", msgAttr("session established", "agent", "client"))
	logs.waitFor(t, "the session on the server", msgAttr("session established", "agent", "server"))
	stop() // drain: GoAway, the client answers, the server closes
	logs.waitFor(t, "the end on the server", msgAttr("session ended", "agent", "server"))
	logs.waitFor(t, "the end on the client", msgAttr("session ended", "agent", "client"))
	logs.waitFor(t, "a failed redial", msgAttr("session dial failed", "agent", "client"))

	s := gather(t, sreg)
	s.expect(t, "server", 0, "mtunnel_sessions_open")
	s.expect(t, "server", 1, "mtunnel_sessions_ended_total", "reason", "closed")
	c := gather(t, creg)
	c.expect(t, "client", 0, "mtunnel_sessions_open")
	c.expect(t, "client", 1, "mtunnel_sessions_ended_total", "reason", "drained")
	if v, _ := c.value("mtunnel_reconnects_total"); v < 1 {
		t.Errorf("client reconnects = %v after its session ended and it redialled", v)
	}
	if v, _ := c.value("mtunnel_handshake_failures_total", "reason", "unreachable"); v < 1 {
		t.Errorf("client: no unreachable handshake failure after the server stopped (%v)", c.reasons("mtunnel_handshake_failures_total"))
	}
}
