package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the ping helper too: the bench starts
// it with os.Executable.
func TestMain(m *testing.M) {
	if os.Getenv(pingHelperEnv) == "1" {
		os.Exit(pingHelperMain())
	}
	os.Exit(m.Run())
}

// TestPingHelper pings the helper's echo server from the helper, then an
// echo server that is not the helper's, which it must refuse to count.
func TestPingHelper(t *testing.T) {
	h, err := startPingHelper()
	if err != nil {
		t.Fatal(err)
	}
	rtts, err := h.ping(h.echo, 2, 20, 20, time.Minute)
	if err != nil || len(rtts) != 20 || !(rtts[0] > 0) {
		t.Errorf("ping own echo server: %d round trips, first %v, err %v", len(rtts), rtts[:min(1, len(rtts))], err)
	}
	// Held: connected and warmed up (2 round trips) before the ready
	// reply, measured only after release; the helper then takes requests
	// as before.
	if err := h.hold(h.echo, 2, 10, 10, time.Minute); err != nil {
		t.Fatalf("hold: %v", err)
	}
	if rtts, err := h.release(); err != nil || len(rtts) != 10 {
		t.Errorf("release: %d round trips, err %v; want 10", len(rtts), err)
	}
	if _, err := h.ping(h.echo, 0, 3, 3, time.Minute); err != nil {
		t.Errorf("a ping after a held one: %v", err)
	}
	other, err := startBackend()
	if err != nil {
		t.Fatal(err)
	}
	defer other.close()
	if _, err := h.ping(other.addr(), 0, 5, 5, time.Minute); err == nil || !strings.Contains(err.Error(), "did not reach") {
		t.Errorf("ping another echo server: err %v, want \"did not reach\"", err)
	}
	if err := h.close(); err != nil {
		t.Error(err)
	}
}

// TestHeadOfLineAgents runs head-of-line through mtunnel (built from this
// module) and stunnel (if installed): each gets a second route to the ping
// helper, which checks that the ping arrived there.
func TestHeadOfLineAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mtunnel and starts agents")
	}
	res, progress := benchRun(t, "-contenders", "mtunnel,stunnel", "-rounds", "1", "-duration", "300ms",
		"-pings", "200", "-workloads", "head")
	if len(res.Errors) > 0 || len(res.Shutdown) > 0 {
		t.Errorf("errors: %+v; shutdown: %q\n%s", res.Errors, res.Shutdown, progress)
	}
	for _, f := range res.Figures {
		if !strings.HasPrefix(f.Key, "hol-") {
			continue
		}
		for _, name := range res.Contenders {
			if got := f.Samples[name]; len(got) != 1 || !(got[0] > 0) {
				t.Errorf("%s %s: want one positive sample, got %v", name, f.Key, got)
			}
		}
	}
	t.Logf("\n%s", progress)
}

// TestRunDirect runs the whole measuring path but pgbench against direct
// only (no processes to start) with tiny settings, writes the outputs and
// checks that every figure direct can have came out positive.
func TestRunDirect(t *testing.T) {
	res, progress := benchRun(t, "-quick", "-contenders", "direct", "-rounds", "1", "-duration", "200ms",
		"-idle", "100", "-burst", "4096", "-pings", "200", "-workers", "4",
		"-workloads", "idle,connection,round,upload,download,head")
	dir := t.TempDir()
	if _, err := writeOutputs(res, renderTable(res), dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Errors) > 0 {
		t.Errorf("errors: %+v", back.Errors)
	}
	for _, f := range back.Figures {
		got := f.Samples["direct"]
		switch {
		case strings.HasPrefix(f.Key, "pgbench"):
			if len(got) > 0 {
				t.Errorf("%s: not asked for, got %v", f.Key, got)
			}
		case f.AgentsOnly && len(got) > 0:
			t.Errorf("%s: direct has no agents, got %v", f.Key, got)
		case !f.AgentsOnly && (len(got) != 1 || !(got[0] > 0)):
			t.Errorf("%s: want one positive sample, got %v", f.Key, got)
		}
	}
	if !strings.Contains(progress, "round 1/1  direct    head-of-line") {
		t.Errorf("no progress line for the last step:\n%s", progress)
	}
	if _, err := os.Stat(filepath.Join(dir, "latest.svg")); err != nil {
		t.Error(err)
	}
}

// TestPgbenchDirect runs the pgbench workloads against direct: the bench
// starts PostgreSQL, fills pgbench's tables, runs 1 s with -C and 1 s
// without, and stops it again.
func TestPgbenchDirect(t *testing.T) {
	if _, _, err := findPostgres(); err != nil {
		if os.Getenv("MTUNNEL_REQUIRE_EXTERNAL") == "1" {
			t.Fatalf("%v (required: MTUNNEL_REQUIRE_EXTERNAL=1)", err)
		}
		t.Skip(err)
	}
	res, progress := benchRun(t, "-contenders", "direct", "-rounds", "1", "-duration", "1s", "-workloads", "pgbench")
	if len(res.Errors) > 0 || len(res.Shutdown) > 0 {
		t.Errorf("errors: %+v; shutdown: %q\n%s", res.Errors, res.Shutdown, progress)
	}
	for _, f := range res.Figures {
		got := f.Samples["direct"]
		if want := strings.HasPrefix(f.Key, "pgbench"); want != (len(got) == 1 && got[0] > 0) {
			t.Errorf("%s: got %v, want one positive sample: %v", f.Key, got, want)
		}
	}
	if !strings.HasPrefix(fmt.Sprint(res.Meta["postgres"]), "postgres (PostgreSQL)") {
		t.Errorf("meta postgres: %v", res.Meta["postgres"])
	}
	t.Logf("\n%s%s", progress, renderTable(res))
}

func TestParsePostgresLog(t *testing.T) {
	for line, want := range map[string][3]string{
		"2026-11-30 08:18:22.910 UTC [29072] LOG:  database system is ready to accept connections": {"INFO", "database system is ready to accept connections", "ok"},
		"2026-11-30 08:18:23.001 UTC [29080] FATAL:  role \"x\" does not exist":                    {"ERROR", "role \"x\" does not exist", ""},
		"initdb: something": {"OTHER", "initdb: something", ""},
	} {
		level, key, ready := parsePostgres(line)
		if got := [3]string{level, key, ready}; got != want {
			t.Errorf("parsePostgres(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestSummarizePercentile(t *testing.T) {
	s := summarize([]float64{5, 1, 3, 2})
	if s != (summary{Median: 2.5, Min: 1, Max: 5, N: 4}) {
		t.Errorf("summarize: %+v", s)
	}
	sorted := make([]float64, 100)
	for i := range sorted {
		sorted[i] = float64(i + 1)
	}
	for _, c := range []struct{ p, want float64 }{{50, 50}, {99, 99}, {100, 100}, {0.1, 1}} {
		if got := percentile(sorted, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := micros([]time.Duration{3 * time.Microsecond, time.Microsecond}); got[0] != 1 || got[1] != 3 {
		t.Errorf("micros: %v", got)
	}
}

// TestReport checks the ratios in the table and the bars in the chart on
// made-up samples.
func TestReport(t *testing.T) {
	res := &results{
		Meta:       map[string]any{"rounds": 3},
		Contenders: []string{"direct", "mtunnel", "stunnel"},
		Figures: []figureSamples{
			{figure{Key: "conn-rate", Label: "connection rate", Unit: "conn/s", Higher: true},
				map[string][]float64{"direct": {100, 90, 110}, "mtunnel": {50, 40, 60}, "stunnel": {10, 10, 10}}},
			{figure{Key: "idle-rss", Label: "idle", Unit: "KiB/conn", AgentsOnly: true},
				map[string][]float64{"mtunnel": {40, 40, 40}, "stunnel": {160, 160, 160}}},
		},
		Logs: map[string]*logStats{"mtunnel": newLogStats()},
	}
	res.Logs["mtunnel"].add("WARN", "stream ended result=reset", "{...}")
	table := renderTable(res)
	for _, want := range []string{"50.0 [40.0-60.0]", "0.50x", "5.00x", "0.25x", "1 x stream ended result=reset"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	svg := renderSVG(res)
	if n := strings.Count(svg, "<rect") - 1; n != 3 { // minus the background
		t.Errorf("want 3 bars (idle-rss has no direct), got %d:\n%s", n, svg)
	}
	if !strings.Contains(svg, `fill="#2e7d32"`) || !strings.Contains(svg, `fill="#c62828"`) {
		t.Error("want both a better (green) and a worse (red) bar")
	}
	if r := ratios(res, res.Figures[0]); len(r) != 2 || math.Abs(r[1].value-5) > 1e-9 {
		t.Errorf("ratios: %+v", r)
	}
}

// TestBaselineRatios: with -baseline, each contender of the measured build
// is compared with its counterpart of the baseline build, and the
// baseline's contenders with direct and stunnel only.
func TestBaselineRatios(t *testing.T) {
	res := &results{
		Contenders: []string{"mtunnel", "mtunnel-base", "mtunnel-gmp3", "mtunnel-base-gmp3", "stunnel"},
		Figures: []figureSamples{{figure{Key: "up-8", Label: "upload", Unit: "MB/s", Higher: true},
			map[string][]float64{"mtunnel": {110}, "mtunnel-base": {100}, "mtunnel-gmp3": {90}, "mtunnel-base-gmp3": {120}, "stunnel": {50}}}},
	}
	got := map[string]float64{}
	for _, r := range ratios(res, res.Figures[0]) {
		got[r.mt+"/"+r.ref] = r.value
	}
	want := map[string]float64{
		"mtunnel/stunnel": 2.2, "mtunnel/mtunnel-base": 1.1,
		"mtunnel-gmp3/stunnel": 1.8, "mtunnel-gmp3/mtunnel-base-gmp3": 0.75,
		"mtunnel-base/stunnel": 2, "mtunnel-base-gmp3/stunnel": 2.4,
	}
	if len(got) != len(want) {
		t.Errorf("got ratios %v, want %v", got, want)
	}
	for k, v := range want {
		if math.Abs(got[k]-v) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// TestBaselineAgents measures a build against itself as the -baseline:
// both run as contenders in the same round.
func TestBaselineAgents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds mtunnel and starts agents")
	}
	bin, err := mtunnelBinary("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, progress := benchRun(t, "-mtunnel", bin, "-baseline", bin, "-contenders", "mtunnel", "-rounds", "1",
		"-pings", "200", "-workloads", "round")
	if len(res.Errors) > 0 || len(res.Shutdown) > 0 {
		t.Errorf("errors: %+v; shutdown: %q\n%s", res.Errors, res.Shutdown, progress)
	}
	if !slices.Equal(res.Contenders, []string{"mtunnel", baseName}) {
		t.Errorf("contenders %q", res.Contenders)
	}
	found := false
	for _, f := range res.Figures {
		if f.Key != "rtt-p50" {
			continue
		}
		found = true
		for _, name := range res.Contenders {
			if got := f.Samples[name]; len(got) != 1 || !(got[0] > 0) {
				t.Errorf("%s %s: want one positive sample, got %v", name, f.Key, got)
			}
		}
	}
	if !found {
		t.Error("no round-trip figure")
	}
	if !strings.Contains(renderTable(res), "mtunnel/mtunnel-base") {
		t.Errorf("no baseline ratio column:\n%s", renderTable(res))
	}
}

// benchRun parses args as the bench's flags and runs it, keeping the
// progress lines; it fails the test if the run cannot start.
func benchRun(t *testing.T, args ...string) (*results, string) {
	t.Helper()
	o, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	res, err := runBench(o, &progress)
	if err != nil {
		t.Fatal(err)
	}
	return res, progress.String()
}

// TestSelectsAny: the ping helper is started when any head-of-line
// workload is asked for, "head-of-line first" alone included (it was not,
// and the bench crashed on a nil helper).
func TestSelectsAny(t *testing.T) {
	for list, want := range map[string]bool{
		"":                          true,
		"head":                      true,
		"head-of-line first":        true,
		"upload,head-of-line floor": true,
		"upload,round":              false,
	} {
		var o options
		if list != "" {
			o.workloads = strings.Split(list, ",")
		}
		if got := o.selectsAny("head-of-line"); got != want {
			t.Errorf("workloads %q: selectsAny(head-of-line) = %v, want %v", list, got, want)
		}
	}
}
