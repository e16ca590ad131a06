package integration

// Real databases behind the built agents: PostgreSQL and Redis from
// Debian's packages, started by the tests on loopback, with their own
// clients and load generators (psql, pgbench, redis-cli, redis-benchmark)
// as the apps.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"github.com/mtunnel/mtunnel/bench/pgbench"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dbEndpoints are the two ways to reach a database a test started.
type dbEndpoints struct {
	tcp    string // 127.0.0.1:port
	socket string // absolute path of its unix socket
}

// targetKinds are the server agent's --target values the database tests
// run with, a subtest each.
var targetKinds = []struct {
	name   string
	target func(dbEndpoints) string
}{
	{"tcp", func(e dbEndpoints) string { return e.tcp }},
	{"unix", func(e dbEndpoints) string { return "unix:" + e.socket }},
}

// TestPostgresThroughTunnel runs PostgreSQL's own clients through the
// built agents, once per kind of target: psql queries; pgbench's
// initialisation and two short runs, with persistent connections and with
// a new connection per transaction; and a session cut mid-transaction,
// which psql must report as a lost connection and PostgreSQL must roll
// back.
func TestPostgresThroughTunnel(t *testing.T) {
	pg := findPostgres(t)
	db := pg.start(t)
	k := newBinPKI(t, filepath.Join(t.TempDir(), "pki"))
	for _, kind := range targetKinds {
		t.Run(kind.name, func(t *testing.T) {
			// A database per kind, made directly, not through the tunnel.
			name := "via_" + kind.name
			pgApp{bin: pg.bin, addr: db.addr, db: "postgres"}.psql(t, "create database "+name)
			serverArgs := k.serverArgs("127.0.0.1:0", kind.target(db.endpoints()))
			server := startAgent(t, "server", nil, serverArgs...)
			serverAddr := server.listening(t)
			client := startAgent(t, "client", nil, k.clientArgs(serverAddr)...)
			app := pgApp{bin: pg.bin, addr: client.listening(t), db: name, server: server}

			t.Run("psql", func(t *testing.T) { checkQueries(t, app) })
			t.Run("pgbench", func(t *testing.T) { checkPgbench(t, app) })
			// Last: it kills the server agent and starts another.
			t.Run("session dies mid-transaction", func(t *testing.T) {
				checkBrokenTransaction(t, app, db, withFlag(serverArgs, "--listen", serverAddr))
			})
		})
	}
}

func (s pgServer) endpoints() dbEndpoints { return dbEndpoints{tcp: s.addr, socket: s.socket} }

// checkPgbench initialises pgbench's tables at scale 1 through the tunnel,
// then runs TPC-B-like transactions for 3 s on 4 connections, persistent
// and then new for each transaction (-C). Every transaction must succeed;
// with -C each one must have been a stream of its own.
func checkPgbench(t *testing.T, app pgApp) {
	app.run(t, "pgbench", "-i", "-s", "1", "-q")
	for _, mode := range []struct {
		name string
		args []string
	}{
		{"persistent connections", nil},
		{"a new connection per transaction", []string{"-C"}},
	} {
		streams := app.server.count("stream ended", "route", "default", "result", "ok")
		out := app.run(t, "pgbench", append([]string{"-T", "3", "-c", "4", "-j", "2"}, mode.args...)...)
		r, err := pgbench.Parse(out)
		if err != nil {
			t.Fatalf("pgbench, %s: %v\n%s", mode.name, err, out)
		}
		// pgbench 15 reports failures; no line would not mean none failed.
		if r.Processed == 0 || !r.FailedReported || r.Failed != 0 || !(r.TPS > 0) {
			t.Fatalf("pgbench, %s: %d transactions, %d failed (reported: %v), %v tps; want some, none failed\n%s",
				mode.name, r.Processed, r.Failed, r.FailedReported, r.TPS, out)
		}
		if slices.Contains(mode.args, "-C") {
			app.server.waitLogN(t, streams+r.Processed, "stream ended", "route", "default", "result", "ok")
		}
		t.Logf("pgbench through the tunnel, %s: %d transactions, %.0f tps", mode.name, r.Processed, r.TPS)
	}
}

// run runs one of PostgreSQL's client programs to completion (2 minutes
// at most) and returns what it printed; it must exit 0.
func (a pgApp) run(t *testing.T, tool string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := a.command(ctx, tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", tool, strings.Join(args, " "), err, out, a.agentOutput())
	}
	return string(out)
}

// Messages with which libpq and psql report a connection that broke.
var lostConnection = []string{
	"server closed the connection unexpectedly",
	"connection to server was lost",
	"terminated abnormally",
	"SSL SYSCALL",
}

// checkBrokenTransaction kills the server agent between a transaction's
// INSERT and its COMMIT. psql must say the connection was lost (exit
// status 2), not that it committed; PostgreSQL must see its client go
// mid-transaction; and once a new server agent runs, the row must be
// absent and its key free, so the transaction was rolled back, not left
// open.
func checkBrokenTransaction(t *testing.T, app pgApp, db pgServer, restartArgs []string) {
	app.psql(t, "create table ledger (id int primary key, note text)")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Without -q psql prints each command's tag, so "INSERT 0 1" says the
	// row is in and not committed.
	cmd := app.command(ctx, "psql", "-X", "-v", "ON_ERROR_STOP=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "BEGIN;\nINSERT INTO ledger VALUES (1, 'in flight');\n")
	lines := bufio.NewScanner(stdout)
	var before []string
	for lines.Scan() && lines.Text() != "INSERT 0 1" {
		before = append(before, lines.Text())
	}
	if lines.Text() != "INSERT 0 1" {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("psql never confirmed the INSERT: stdout %q, stderr:\n%s", before, stderr.String())
	}

	clientGone := logContains("on client connection with an open transaction")
	gone := db.proc.out.count(clientGone)
	app.server.kill(t)
	io.WriteString(stdin, "COMMIT;\n")
	stdin.Close()
	after, _ := io.ReadAll(stdout)
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Errorf("psql after COMMIT on a cut session: %v, want exit status 2 (connection to the server went bad)", err)
	}
	if strings.Contains(string(after), "COMMIT") {
		t.Errorf("psql reports the COMMIT as done: %q", after)
	}
	if !slices.ContainsFunc(lostConnection, func(m string) bool { return strings.Contains(stderr.String(), m) }) {
		t.Errorf("psql's error does not say the connection broke (want one of %q):\n%s", lostConnection, stderr.String())
	}
	t.Logf("psql, COMMIT after the server agent was killed: %v\n%s", err, stderr.String())
	if _, err := db.proc.await(gone+1, clientGone); err != nil {
		t.Fatalf("PostgreSQL did not log losing a client mid-transaction: %v\n%s", err, db.proc.out.dump())
	}

	restartServer(t, restartArgs)
	if got := app.psql(t, "select count(*) from ledger"); got != "0" {
		t.Fatalf("rows in ledger after the cut: %s, want 0", got)
	}
	// Had the transaction stayed open, this would wait on its lock.
	app.psql(t, "set lock_timeout = '10s'; insert into ledger values (1, 'after the cut')")
}

// TestRedisThroughTunnel runs Redis's own clients through the built
// agents, once per kind of target: redis-cli commands, among them a 1 MiB
// binary value, and a short redis-benchmark.
func TestRedisThroughTunnel(t *testing.T) {
	rd := findRedis(t)
	db := rd.start(t)
	k := newBinPKI(t, filepath.Join(t.TempDir(), "pki"))
	for _, kind := range targetKinds {
		t.Run(kind.name, func(t *testing.T) {
			server := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", kind.target(db.endpoints()))...)
			client := startAgent(t, "client", nil, k.clientArgs(server.listening(t))...)
			app := redisApp{redisInstall: rd, addr: client.listening(t), server: server}
			t.Run("redis-cli", func(t *testing.T) { checkRedisCLI(t, app, kind.name+":") })
			t.Run("redis-benchmark", func(t *testing.T) { checkRedisBenchmark(t, app) })
		})
	}
}

// checkRedisCLI sets, gets and increments keys named with prefix, and
// stores a 1 MiB random value and reads it back intact.
func checkRedisCLI(t *testing.T, app redisApp, prefix string) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"SET", prefix + "greeting", "hello through the tunnel"}, "OK"},
		{[]string{"GET", prefix + "greeting"}, "hello through the tunnel"},
		{[]string{"DEL", prefix + "counter"}, "0"},
		{[]string{"INCR", prefix + "counter"}, "1"},
		{[]string{"INCRBY", prefix + "counter", "41"}, "42"},
	} {
		if got := strings.TrimSuffix(app.cli(t, nil, c.args...), "\n"); got != c.want {
			t.Fatalf("redis-cli %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}

	big := random(t, 1<<20)
	if got := app.cli(t, big, "-x", "SET", prefix+"big"); got != "OK\n" {
		t.Fatalf("redis-cli -x SET of 1 MiB: %q", got)
	}
	if got := app.cli(t, nil, "STRLEN", prefix+"big"); got != "1048576\n" {
		t.Fatalf("STRLEN of the 1 MiB value: %q", got)
	}
	// Its output not being a terminal, redis-cli prints the value raw,
	// then a newline.
	back := []byte(strings.TrimSuffix(app.cli(t, nil, "GET", prefix+"big"), "\n"))
	if len(back) != len(big) || sha256.Sum256(back) != sha256.Sum256(big) {
		t.Fatalf("GET of the 1 MiB value: %d bytes, SHA-256 equal %v; want %d bytes, equal",
			len(back), sha256.Sum256(back) == sha256.Sum256(big), len(big))
	}
}

// checkRedisBenchmark runs 2,000 SETs and 2,000 GETs on 10 connections:
// exit 0, a rate for each, and 20 streams through the server agent.
func checkRedisBenchmark(t *testing.T, app redisApp) {
	streams := app.server.count("stream ended", "route", "default", "result", "ok")
	out := app.benchmark(t, "-q", "-n", "2000", "-c", "10", "-t", "set,get")
	rps, err := parseRedisBenchmark(out)
	if err != nil {
		t.Fatalf("redis-benchmark: %v\n%s", err, out)
	}
	for _, test := range []string{"SET", "GET"} {
		if !(rps[test] > 0) {
			t.Fatalf("redis-benchmark: no %s rate in %v\n%s", test, rps, out)
		}
	}
	app.server.waitLogN(t, streams+20, "stream ended", "route", "default", "result", "ok")
	t.Logf("redis-benchmark through the tunnel: SET %.0f, GET %.0f requests/s", rps["SET"], rps["GET"])
}

var redisRate = regexp.MustCompile(`(?m)^\s*([A-Z_]+): ([0-9.]+) requests per second`)

// parseRedisBenchmark reads `redis-benchmark -q`: a "TEST: N requests per
// second" line per test, after progress lines that end in \r.
func parseRedisBenchmark(out string) (map[string]float64, error) {
	rps := map[string]float64{}
	for _, m := range redisRate.FindAllStringSubmatch(strings.ReplaceAll(out, "\r", "\n"), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, err
		}
		rps[m[1]] = v
	}
	if len(rps) == 0 {
		return nil, errors.New("no line with requests per second")
	}
	return rps, nil
}

func TestParseRedisBenchmark(t *testing.T) {
	// As printed by redis-benchmark 7.0.15.
	redisOut := "SET: rps=0.0 (overall: 33000.0) avg_msec=0.111 (overall: 0.111)\r" +
		"                    \rSET: 100000.00 requests per second, p50=0.063 msec\n" +
		"GET: 105263.16 requests per second, p50=0.055 msec\n\n"
	if rps, err := parseRedisBenchmark(redisOut); err != nil || rps["SET"] != 100000 || rps["GET"] != 105263.16 || len(rps) != 2 {
		t.Errorf("parseRedisBenchmark: %v, %v", rps, err)
	}
	if _, err := parseRedisBenchmark("Could not connect to Redis at 127.0.0.1:1: Connection refused\n"); err == nil {
		t.Error("parseRedisBenchmark of an error: no error")
	}
}
