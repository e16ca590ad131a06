package tunnel

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what both agents do, for Prometheus. Build it with
// NewMetrics on a registry of the caller's (there is no global one). Every
// method works on a nil *Metrics and records nothing, so tests and library
// users that want no metrics pass nil.
//
// Labels stay low-cardinality: route (configured names only), result,
// reason and direction. A peer's identity or address is never a label;
// those are in the logs and the status report.
type Metrics struct {
	sessionsOpen        prometheus.Gauge
	sessionsEstablished prometheus.Counter
	sessionsEnded       *prometheus.CounterVec
	handshakeFailures   *prometheus.CounterVec
	handshakeSeconds    prometheus.Histogram
	streamOpenSeconds   *prometheus.HistogramVec
	reconnects          prometheus.Counter

	mu     sync.Mutex
	routes map[string]*RouteMeter
}

// Stream results besides the tunnel.Status names (forbidden,
// unknown_route, target_unreachable, bad_request, unavailable).
const (
	ResultOK        = "ok"
	ResultReset     = "reset"      // the stream ended with a failure; both ends were reset
	ResultError     = "error"      // the stream broke before data could flow
	ResultNoSession = "no_session" // client: no session within the connect wait
)

// Directions of the byte counters: up is from the app to the target, down
// from the target to the app, on both agents.
const (
	DirectionUp   = "up"
	DirectionDown = "down"
)

// NewMetrics creates the metrics and registers them with reg (none when
// reg is nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessionsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mtunnel_sessions_open", Help: "Tunnel sessions open now.",
		}),
		sessionsEstablished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mtunnel_sessions_established_total", Help: "Tunnel sessions established (handshake verified, session in use).",
		}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtunnel_sessions_ended_total", Help: "Tunnel sessions ended, by reason.",
		}, []string{"reason"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mtunnel_handshake_failures_total", Help: "Connections refused or failed before a session was up, by reason (the certificate verification reasons, unreachable, ...).",
		}, []string{"reason"}),
		handshakeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mtunnel_handshake_duration_seconds", Help: "Time to set up a session: TLS handshake (client: TCP connect, handshake and confirming ping).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms to 16 s
		}),
		streamOpenSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mtunnel_stream_open_duration_seconds", Help: "Time to open a stream, by route: client, from the app's connection to the server's answer; server, from the stream header to the target connected and answered.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18), // 0.1 ms to 13 s
		}, []string{"route"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mtunnel_reconnects_total", Help: "Client: dials to a server to replace a session that ended or drained, or to retry a failed dial.",
		}),
		routes: map[string]*RouteMeter{},
	}
	if reg != nil {
		reg.MustRegister(m.sessionsOpen, m.sessionsEstablished, m.sessionsEnded, m.handshakeFailures,
			m.handshakeSeconds, m.streamOpenSeconds, m.reconnects, routeCollector{m},
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "mtunnel_sessions_lowered",
				Help: "Busy sessions whose loops run on threads at a lower priority now, because quiet streams talk beside them (--bulk-nice).",
			}, func() float64 { return float64(priority.lowered.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "mtunnel_copiers_lowered",
				Help: "Bulk streams' copiers running on threads at a lower priority now, because quiet streams talk (--bulk-nice).",
			}, func() float64 { return float64(copiers.lowered.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "mtunnel_tunnel_windows_held",
				Help: "Tunnel sockets whose receive window is held small now (TCP_WINDOW_CLAMP), because a stream talks beside bulk data in their session (--tunnel-recv-buffer auto).",
			}, func() float64 { return float64(heldWindows.Load()) }))
	}
	return m
}

// HandshakeFailed counts a connection that failed before it became a
// session, by Classify's reason.
func (m *Metrics) HandshakeFailed(r Reason) {
	if m != nil {
		m.handshakeFailures.WithLabelValues(string(r)).Inc()
	}
}

// SessionUp counts a session that is now in use; setup is how long its
// handshake took.
func (m *Metrics) SessionUp(setup time.Duration) {
	if m != nil {
		m.handshakeSeconds.Observe(setup.Seconds())
		m.sessionsEstablished.Inc()
		m.sessionsOpen.Inc()
	}
}

// SessionDown counts the end of a session counted by SessionUp, with
// ClassifyEnd's reason.
func (m *Metrics) SessionDown(reason string) {
	if m != nil {
		m.sessionsOpen.Dec()
		m.sessionsEnded.WithLabelValues(reason).Inc()
	}
}

// Reconnect counts a dial made to replace a session that ended or
// drained, or to retry a failed dial.
func (m *Metrics) Reconnect() {
	if m != nil {
		m.reconnects.Inc()
	}
}

// Route returns the meter of a route, creating it on first use. Agents
// ask for their configured routes at start, so those are reported from
// the start with zero counts. A nil Metrics gives a nil meter, which
// records nothing.
func (m *Metrics) Route(name string) *RouteMeter {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.routes[name]
	if r == nil {
		r = &RouteMeter{name: name, openSeconds: m.streamOpenSeconds.WithLabelValues(name), results: map[string]int64{}}
		m.routes[name] = r
	}
	return r
}

// Routes returns every route's counts, sorted by name.
func (m *Metrics) Routes() []RouteStats {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	routes := slices.Collect(maps.Values(m.routes))
	m.mu.Unlock()
	out := make([]RouteStats, 0, len(routes))
	for _, r := range routes {
		out = append(out, r.Stats())
	}
	slices.SortFunc(out, func(a, b RouteStats) int { return cmp.Compare(a.Route, b.Route) })
	return out
}

// RouteMeter counts one route's streams and bytes. The byte counters are
// atomics because the copy loop adds to them on every write, so a
// long-lived stream's traffic shows before it ends. Its methods do nothing
// on a nil meter.
type RouteMeter struct {
	name        string
	open        atomic.Int64
	up, down    atomic.Int64
	openSeconds prometheus.Observer

	mu      sync.Mutex
	results map[string]int64 // ended streams by result
}

// RouteStats is a snapshot of a route's counts.
type RouteStats struct {
	Route    string
	Open     int64            // streams open now
	Results  map[string]int64 // streams ended (or refused), by result
	Up, Down int64            // bytes, app to target and target to app
}

// Total is the number of streams that ended or were refused.
func (s RouteStats) Total() int64 {
	var n int64
	for _, v := range s.Results {
		n += v
	}
	return n
}

// Opened counts a stream that is now open; end it with Ended. took is how
// long opening it took.
func (r *RouteMeter) Opened(took time.Duration) {
	if r != nil {
		r.open.Add(1)
		r.openSeconds.Observe(took.Seconds())
	}
}

// Ended counts the end of a stream counted by Opened.
func (r *RouteMeter) Ended(result string) {
	if r != nil {
		r.open.Add(-1)
		r.count(result)
	}
}

// Refused counts a stream that never opened, with its result (a Status
// name, or ResultNoSession).
func (r *RouteMeter) Refused(result string) {
	if r != nil {
		r.count(result)
	}
}

func (r *RouteMeter) count(result string) {
	r.mu.Lock()
	r.results[result]++
	r.mu.Unlock()
}

// Up adds n bytes sent from the app towards the target.
func (r *RouteMeter) Up(n int64) {
	if r != nil {
		r.up.Add(n)
	}
}

// Down adds n bytes sent from the target towards the app.
func (r *RouteMeter) Down(n int64) {
	if r != nil {
		r.down.Add(n)
	}
}

// Stats returns the route's counts now.
func (r *RouteMeter) Stats() RouteStats {
	if r == nil {
		return RouteStats{}
	}
	r.mu.Lock()
	results := maps.Clone(r.results)
	r.mu.Unlock()
	return RouteStats{Route: r.name, Open: r.open.Load(), Results: results, Up: r.up.Load(), Down: r.down.Load()}
}

// routeCollector exports the route meters at scrape time.
type routeCollector struct{ m *Metrics }

var (
	streamsOpenDesc = prometheus.NewDesc("mtunnel_streams_open",
		"Streams open now, by route.", []string{"route"}, nil)
	streamsTotalDesc = prometheus.NewDesc("mtunnel_streams_total",
		"Streams ended or refused, by route and result (ok, reset, error, no_session, or the server's refusal: forbidden, unknown_route, target_unreachable, bad_request, unavailable).",
		[]string{"route", "result"}, nil)
	bytesDesc = prometheus.NewDesc("mtunnel_stream_bytes_total",
		"Bytes carried by streams, by route and direction (up: app to target; down: target to app).",
		[]string{"route", "direction"}, nil)
)

func (c routeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamsOpenDesc
	ch <- streamsTotalDesc
	ch <- bytesDesc
}

func (c routeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.m.Routes() {
		ch <- prometheus.MustNewConstMetric(streamsOpenDesc, prometheus.GaugeValue, float64(r.Open), r.Route)
		for result, n := range r.Results {
			ch <- prometheus.MustNewConstMetric(streamsTotalDesc, prometheus.CounterValue, float64(n), r.Route, result)
		}
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(r.Up), r.Route, DirectionUp)
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(r.Down), r.Route, DirectionDown)
	}
}
