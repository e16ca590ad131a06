package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the bench's settings; main fills them from flags.
type options struct {
	rounds     int
	duration   time.Duration // each timed run: connection rate, throughput, head-of-line
	idle       int           // idle connections held for the memory figure
	burst      int           // bytes echoed on each idle connection for the second memory figure
	pings      int           // round trips for the latency figure
	workers    int           // connection-rate workers
	out        string
	mtunnel    string // built binary; "" builds one
	baseline   string // a second binary, measured as mtunnel-base; "": none
	stunnel    string
	sessions   int
	gomaxprocs []int // one mtunnel contender per value; 0: runtime default
	contenders []string
	workloads  []string // name prefixes to run; empty: all
	from       string   // re-render this results file instead of measuring
}

// results is everything a run measured; it is written as JSON.
type results struct {
	Meta       map[string]any        `json:"meta"`
	Contenders []string              `json:"contenders"`
	Figures    []figureSamples       `json:"figures"`
	Errors     map[string][]errEntry `json:"errors"` // by contender
	Logs       map[string]*logStats  `json:"logs"`   // by contender, all rounds; and "postgres"
	Shutdown   []string              `json:"shutdown_problems"`
}

type figureSamples struct {
	figure
	Samples map[string][]float64 `json:"samples"` // contender -> one value per round
}

type errEntry struct {
	Round    int    `json:"round"`
	Workload string `json:"workload"`
	Count    int    `json:"count"`
	First    string `json:"first"`
}

func (r *results) add(contender, key string, v float64) {
	for i := range r.Figures {
		if r.Figures[i].Key == key {
			r.Figures[i].Samples[contender] = append(r.Figures[i].Samples[contender], v)
			return
		}
	}
}

// spec says how to start one contender for a round: forwarding to target
// and, unless echo is "", on a second route to echo.
type spec struct {
	name  string
	logs  *logStats
	start func(target, echo string) (*contender, error)
}

type workload struct {
	name string
	run  func(c *contender, errs *errTally) map[string]float64
}

// phase is a group of workloads run on the same freshly started
// contenders, which forward to target, and to echo on a second route if
// echo is set. probe checks a contender's whole path once before the
// workloads run.
type phase struct {
	target    string
	echo      string
	probe     func(*contender) error
	workloads []workload
}

// selects reports whether the workload name was asked for (-workloads).
func (o options) selects(name string) bool {
	return len(o.workloads) == 0 || slices.ContainsFunc(o.workloads, func(p string) bool { return strings.HasPrefix(name, p) })
}

// selectsAny reports whether some workload whose name starts with prefix
// is selected: "head-of-line first" alone needs the ping helper too.
func (o options) selectsAny(prefix string) bool {
	return len(o.workloads) == 0 || slices.ContainsFunc(o.workloads, func(p string) bool {
		return strings.HasPrefix(prefix, p) || strings.HasPrefix(p, prefix)
	})
}

// phases groups the workloads; each phase starts fresh agents. Idle memory
// goes alone and first: RSS growth is clearest on fresh agents, and holding
// then dropping 10,000 connections leaves stunnel tearing down thousands of
// threads for tens of seconds, which must not land in other figures. The
// echo backend at backend serves all but pgbench, which runs against pg
// (nil: not installed, no pgbench phase). Head-of-line pings from the
// helper ping through each contender's second route to ping's echo server
// (ping is nil if head-of-line is not asked for).
func phases(o options, backend string, pg *postgres, ping *pingHelper) []phase {
	tput := func(name, key string, n int, mode byte) workload {
		return workload{name, func(c *contender, e *errTally) map[string]float64 {
			return throughput(c, key, n, mode, o.duration, e)
		}}
	}
	echo := ""
	if ping != nil {
		echo = ping.echo
	}
	all := []phase{
		{backend, "", probeEcho, []workload{
			{"idle memory", func(c *contender, e *errTally) map[string]float64 { return idleMemory(c, o.idle, o.burst, e) }},
		}},
		{backend, echo, probeEcho, []workload{
			{"connection rate", func(c *contender, e *errTally) map[string]float64 { return connRate(c, o.workers, o.duration, e) }},
			{"round trip", func(c *contender, e *errTally) map[string]float64 { return latency(c.addr, o.pings, 60*time.Second, e) }},
			tput("upload x1", "up-1", 1, modeSink),
			tput("download x1", "down-1", 1, modeSource),
			tput("upload x8", "up-8", 8, modeSink),
			tput("download x8", "down-8", 8, modeSource),
			{"head-of-line", func(c *contender, e *errTally) map[string]float64 {
				return headOfLine(c, ping, o.pings, o.duration, holAfter, e)
			}},
			{"head-of-line first", func(c *contender, e *errTally) map[string]float64 {
				return headOfLine(c, ping, o.pings, o.duration, holFirst, e)
			}},
			{"head-of-line floor", func(c *contender, e *errTally) map[string]float64 {
				return headOfLine(c, ping, o.pings, o.duration, holFloor, e)
			}},
		}},
	}
	if pg != nil {
		all = append(all, phase{pg.addr, "", probePostgres, pgbenchWorkloads(o, pg)})
	}
	var out []phase
	for _, ph := range all {
		ph.workloads = slices.DeleteFunc(ph.workloads, func(w workload) bool { return !o.selects(w.name) })
		if len(ph.workloads) > 0 {
			out = append(out, ph)
		}
	}
	return out
}

// pgbenchWorkloads run pgbench through each contender, with a new
// connection per transaction and with persistent connections.
func pgbenchWorkloads(o options, pg *postgres) []workload {
	return []workload{
		{"pgbench -C", func(c *contender, e *errTally) map[string]float64 {
			return pg.runPgbench(c, "pgbench-tps-C", true, o.duration, e)
		}},
		{"pgbench persistent", func(c *contender, e *errTally) map[string]float64 {
			return pg.runPgbench(c, "pgbench-tps", false, o.duration, e)
		}},
	}
}

// runBench measures every contender in o.rounds interleaved rounds: each
// round starts fresh agents, then runs each workload on every contender in
// turn, the order rotated per round.
func runBench(o options, progress io.Writer) (*results, error) {
	begin := time.Now()
	res := &results{Errors: map[string][]errEntry{}, Logs: map[string]*logStats{}}
	for _, f := range figureTable() {
		res.Figures = append(res.Figures, figureSamples{f, map[string][]float64{}})
	}
	limit, err := raiseFileLimit(uint64(2*o.idle + 4096))
	if err != nil {
		fmt.Fprintln(progress, "bench: warning:", err)
	}
	if n := maxIdle(limit); o.idle > n {
		fmt.Fprintf(progress, "bench: -idle %d does not fit in %d file descriptors (2 per connection in this process and in each stunnel): measuring %d\n",
			o.idle, limit, n)
		o.idle = n
	}
	tmp, err := os.MkdirTemp("", "mtunnel-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	specs, meta, err := prepare(o, tmp, progress)
	if err != nil {
		return nil, err
	}
	res.Meta = meta
	meta["idle_conns"], meta["nofile_limit"] = o.idle, limit
	for _, s := range specs {
		res.Contenders = append(res.Contenders, s.name)
		res.Logs[s.name] = s.logs
	}
	be, err := startBackend()
	if err != nil {
		return nil, err
	}
	defer be.close()
	pg, err := startPostgresIfAsked(o, res, progress)
	if err != nil {
		return nil, err
	}
	if pg != nil {
		defer pg.stop() // on the way out with an error; stopping twice is harmless
	}
	var ping *pingHelper
	if o.selectsAny("head-of-line") {
		// Started before the contenders: their configs name its echo server.
		if ping, err = startPingHelper(); err != nil {
			return nil, err
		}
		defer func() {
			if err := ping.close(); err != nil {
				res.Shutdown = append(res.Shutdown, err.Error())
			}
		}()
	}
	phs := phases(o, be.addr(), pg, ping)
	for round := range o.rounds {
		if err := runRound(o, round, phs, specs, res, progress, begin); err != nil {
			return nil, err
		}
	}
	if pg != nil {
		if err := pg.stop(); err != nil {
			res.Shutdown = append(res.Shutdown, err.Error())
		}
	}
	res.Meta["elapsed_s"] = time.Since(begin).Seconds()
	return res, nil
}

// startPostgresIfAsked starts PostgreSQL if a pgbench workload is to run
// and PostgreSQL is installed; else it returns nil, with a line on
// progress if it is not installed.
func startPostgresIfAsked(o options, res *results, progress io.Writer) (*postgres, error) {
	if !slices.ContainsFunc(pgbenchWorkloads(o, nil), func(w workload) bool { return o.selects(w.name) }) {
		return nil, nil
	}
	pg, err := startPostgres(progress)
	if errors.Is(err, errNoPostgres) {
		fmt.Fprintf(progress, "bench: %v: skipping the pgbench workloads\n", err)
		res.Meta["postgres"] = err.Error()
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	res.Meta["postgres"] = pg.version
	res.Meta["pgbench"] = fmt.Sprintf("built-in TPC-B-like script, scale %d, %d clients, %d threads",
		pgbenchScale, pgbenchClients, pgbenchThreads)
	res.Logs["postgres"] = pg.logs
	return pg, nil
}

// runRound runs each phase on freshly started contenders, each workload
// on every contender in turn, the order rotated per round.
func runRound(o options, round int, phs []phase, specs []spec, res *results, progress io.Writer, begin time.Time) error {
	for _, ph := range phs {
		if err := runPhase(o, round, ph, specs, res, progress, begin); err != nil {
			return err
		}
	}
	return nil
}

func runPhase(o options, round int, ph phase, specs []spec, res *results, progress io.Writer, begin time.Time) error {
	var cs []*contender
	defer func() {
		for _, c := range cs {
			for _, err := range c.stop() {
				res.Shutdown = append(res.Shutdown, fmt.Sprintf("round %d: %v", round+1, err))
			}
		}
	}()
	for _, s := range specs {
		c, err := s.start(ph.target, ph.echo)
		if err != nil {
			return fmt.Errorf("round %d: start %s: %w", round+1, s.name, err)
		}
		cs = append(cs, c)
		if err := ph.probe(c); err != nil {
			return fmt.Errorf("round %d: %w", round+1, err)
		}
	}
	order := slices.Concat(cs[round%len(cs):], cs[:round%len(cs)])
	for _, w := range ph.workloads {
		for _, c := range order {
			if err := c.alive(); err != nil {
				return fmt.Errorf("round %d, before %s: %w", round+1, w.name, err)
			}
			var errs errTally
			out := w.run(c, &errs)
			keys := slices.Sorted(maps.Keys(out))
			line := fmt.Sprintf("[%5.0fs] round %d/%d  %-9s %-18s", time.Since(begin).Seconds(), round+1, o.rounds, c.name, w.name)
			for _, k := range keys {
				res.add(c.name, k, out[k])
				line += fmt.Sprintf(" %s=%s", k, fmtNum(out[k]))
			}
			if errs.n > 0 {
				line += fmt.Sprintf("  ERRORS=%d (first: %v)", errs.n, errs.first)
				res.Errors[c.name] = append(res.Errors[c.name], errEntry{round + 1, w.name, errs.n, errs.first.Error()})
			}
			fmt.Fprintln(progress, line)
		}
	}
	return nil
}

// prepare finds or builds the binaries, makes the PKI, and returns the
// contenders to start each round, in the order asked for.
func prepare(o options, tmp string, progress io.Writer) ([]spec, map[string]any, error) {
	meta := map[string]any{
		"start": time.Now().UTC().Format(time.RFC3339), "go": runtime.Version(), "cpus": runtime.NumCPU(),
		"bench_gomaxprocs": runtime.GOMAXPROCS(0), "rounds": o.rounds, "duration_s": o.duration.Seconds(),
		"idle_conns": o.idle, "burst_bytes": o.burst, "pings": o.pings, "workers": o.workers,
		"sessions": o.sessions, "agent_gomaxprocs": o.gomaxprocs,
	}
	var specs []spec
	needPKI := slices.Contains(o.contenders, "mtunnel") || slices.Contains(o.contenders, "stunnel")
	var k pki
	if needPKI {
		bin, err := mtunnelBinary(o.mtunnel, tmp)
		if err != nil {
			return nil, nil, err
		}
		v, _ := exec.Command(bin, "version").Output()
		meta["mtunnel"] = strings.TrimSpace(string(v))
		meta["mtunnel_bin"] = bin
		if k, err = makePKI(bin, filepath.Join(tmp, "pki")); err != nil {
			return nil, nil, err
		}
		o.mtunnel = bin
		if o.baseline != "" {
			if o.baseline, err = filepath.Abs(o.baseline); err != nil {
				return nil, nil, err
			}
			v, _ := exec.Command(o.baseline, "version").Output()
			meta["mtunnel_base"] = strings.TrimSpace(string(v))
			meta["mtunnel_base_bin"] = o.baseline
		}
	}
	for _, name := range o.contenders {
		switch name {
		case "direct":
			specs = append(specs, spec{name, newLogStats(), func(target, echo string) (*contender, error) {
				return &contender{name: "direct", addr: target, echoAddr: echo}, nil
			}})
		case "mtunnel":
			specs = append(specs, mtunnelSpecs(o, k, tmp)...)
		case "stunnel":
			bin, err := exec.LookPath(o.stunnel)
			if err != nil {
				fmt.Fprintln(progress, "stunnel4 not installed (Debian package stunnel4): skipping")
				meta["stunnel"] = "not installed"
				continue
			}
			v, _ := exec.Command(bin, "-version").CombinedOutput()
			meta["stunnel"] = "unknown version"
			for line := range strings.Lines(string(v)) {
				if strings.HasPrefix(line, "stunnel ") {
					meta["stunnel"] = strings.TrimSpace(line)
					break
				}
			}
			logs := newLogStats()
			specs = append(specs, spec{"stunnel", logs, func(target, echo string) (*contender, error) {
				return startStunnel(bin, tmp, k, target, echo, logs)
			}})
		default:
			return nil, nil, fmt.Errorf("unknown contender %q: want direct, mtunnel or stunnel", name)
		}
	}
	if len(specs) == 0 {
		return nil, nil, errors.New("no contender to measure")
	}
	return specs, meta, nil
}

func mtunnelSpecs(o options, k pki, dir string) []spec {
	procs := o.gomaxprocs
	if len(procs) == 0 {
		procs = []int{0}
	}
	check := flagChecker(o.mtunnel)
	var specs []spec
	for _, p := range procs {
		name := "mtunnel"
		if len(procs) > 1 && p > 0 {
			name += "-gmp" + strconv.Itoa(p)
		}
		s := mtunnelSpec{bin: o.mtunnel, pki: k, dir: dir, sessions: o.sessions, gomaxprocs: p, flagOK: check}
		specs = append(specs, mtunnelContender(name, s))
		if o.baseline != "" {
			b := s
			b.bin, b.flagOK = o.baseline, flagChecker(o.baseline)
			specs = append(specs, mtunnelContender(strings.Replace(name, "mtunnel", baseName, 1), b))
		}
	}
	return specs
}

// baseName names the -baseline binary's contender.
const baseName = "mtunnel-base"

func mtunnelContender(name string, s mtunnelSpec) spec {
	logs := newLogStats()
	return spec{name, logs, func(target, echo string) (*contender, error) {
		return startMtunnel(name, s, target, echo, logs)
	}}
}

// mtunnelBinary returns path if given, else builds the module's command
// into dir as `make build` does.
func mtunnelBinary(path, dir string) (string, error) {
	if path != "" {
		return filepath.Abs(path)
	}
	out := filepath.Join(dir, "mtunnel")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "github.com/mtunnel/mtunnel")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build mtunnel: %w\n%s", err, b)
	}
	return out, nil
}
