// Command bench measures mtunnel against a direct TCP connection and
// against stunnel in mutual TLS, side by side on loopback: connection rate,
// round-trip latency, throughput and CPU per GiB, head-of-line latency under
// bulk load, memory per idle connection, and pgbench's transactions per
// second against a PostgreSQL the bench starts (skipped when PostgreSQL is
// not installed), with a new connection per transaction and with
// persistent ones.
//
// Every figure is measured in several rounds, the contenders interleaved
// within each round (these 2-core machines are 30-50% noisy from run to
// run), and reported as the median and the min-max spread. Output: a table
// on stdout, raw samples in DIR/latest.json, a chart of mtunnel's ratios in
// DIR/latest.svg, progress on stderr.
//
//	go run ./bench -mtunnel bin/mtunnel         # make bench
//	go run ./bench -quick                        # a smoke test
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if os.Getenv(pingHelperEnv) == "1" {
		os.Exit(pingHelperMain())
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	var res *results
	if o.from != "" {
		res, err = loadResults(o.from)
	} else {
		res, err = runBench(o, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	table := renderTable(res)
	fmt.Print(table)
	paths, err := writeOutputs(res, table, o.out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Println("\nwrote", strings.Join(paths, ", "))
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke test: 2 rounds of 1s runs (pgbench too), 1,000 idle connections, 1,000 round trips")
	rounds := fs.Int("rounds", 3, "rounds; each measures every contender once per figure")
	duration := fs.Duration("duration", 3*time.Second, "length of each timed run (connection rate, throughput, head-of-line; pgbench in whole seconds)")
	idle := fs.Int("idle", 10000, "idle connections held for the memory figures")
	burst := fs.Int("burst", 64<<10, "bytes echoed on each idle connection before the second memory figure (0: skip)")
	pings := fs.Int("pings", 5000, "64-byte round trips for the latency figures")
	workers := fs.Int("workers", 16, "concurrent workers for the connection rate")
	out := fs.String("out", "bench/results", "`DIR` for latest.json, latest.svg and latest.txt")
	mt := fs.String("mtunnel", "", "mtunnel binary `PATH` (default: go build the module into a temp dir)")
	st := fs.String("stunnel", "stunnel4", "stunnel binary")
	base := fs.String("baseline", "", "a second mtunnel binary `PATH`, measured in the same rounds as contender mtunnel-base (an A/B of two builds)")
	sessions := fs.Int("sessions", 0, "--sessions for the mtunnel client agent (0: its default)")
	gmp := fs.String("gomaxprocs", "", "GOMAXPROCS of the mtunnel agents; a comma list (e.g. 0,1) measures one mtunnel per value, 0 = runtime default")
	only := fs.String("contenders", "direct,mtunnel,stunnel", "comma list of contenders to measure")
	from := fs.String("from", "", "measure nothing: re-render the table and chart from a saved results `JSON` file")
	work := fs.String("workloads", "", "comma list of workload name prefixes to run (default: all), e.g. \"round,head\" or \"pgbench\"")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o := options{rounds: *rounds, duration: *duration, idle: *idle, burst: *burst, pings: *pings, workers: *workers,
		out: *out, mtunnel: *mt, baseline: *base, stunnel: *st, sessions: *sessions, contenders: strings.Split(*only, ",")}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		// -quick changes only what was not set explicitly.
		for name, apply := range map[string]func(){
			"rounds": func() { o.rounds = 2 }, "duration": func() { o.duration = time.Second },
			"idle": func() { o.idle = 1000 }, "pings": func() { o.pings = 1000 },
		} {
			if !set[name] {
				apply()
			}
		}
	}
	o.from = *from
	if *work != "" {
		o.workloads = strings.Split(*work, ",")
	}
	for _, s := range strings.Split(*gmp, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return options{}, fmt.Errorf("-gomaxprocs %q: want a comma list of numbers >= 0", *gmp)
		}
		o.gomaxprocs = append(o.gomaxprocs, n)
	}
	if o.rounds < 1 || o.duration <= 0 || o.idle < 1 || o.pings < 1 || o.workers < 1 {
		return options{}, fmt.Errorf("-rounds, -duration, -idle, -pings and -workers must be positive")
	}
	return o, nil
}

func loadResults(path string) (*results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &res, nil
}
