package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/mtunnel/mtunnel/bench/pgbench"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The pgbench workloads: TPC-B-like transactions (pgbench's built-in
// script, scale 1) from pgbenchClients connections on pgbenchThreads
// threads, through each contender to a PostgreSQL the bench starts.
const (
	pgbenchClients = 8
	pgbenchThreads = 2
	pgbenchScale   = 1
)

// errNoPostgres says PostgreSQL is not installed or cannot run; the bench
// then skips the pgbench workloads.
var errNoPostgres = errors.New("no usable PostgreSQL")

// postgres is a PostgreSQL server the bench runs for the pgbench
// workloads: trust authentication, superuser postgres, listening on
// 127.0.0.1.
type postgres struct {
	bin     string // folder with postgres, initdb, pgbench
	version string
	addr    string
	dir     string // cluster and socket folder, removed by stop
	cred    *syscall.Credential
	proc    *agent
	logs    *logStats
}

// findPostgres returns Debian's newest PostgreSQL folder that has the
// server, initdb and pgbench, and the user to run it as: PostgreSQL
// refuses to run as root, so as root it runs as the system user postgres.
func findPostgres() (string, *syscall.Credential, error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	found = slices.DeleteFunc(found, func(p string) bool {
		for _, tool := range []string{"initdb", "pgbench"} {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), tool)); err != nil {
				return true
			}
		}
		return false
	})
	if len(found) == 0 {
		return "", nil, fmt.Errorf("%w: none with pgbench in /usr/lib/postgresql/*/bin (Debian package postgresql)", errNoPostgres)
	}
	major := func(p string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
		return v
	}
	slices.SortFunc(found, func(a, b string) int { return cmp.Compare(major(a), major(b)) })
	bin := filepath.Dir(found[len(found)-1])
	if os.Geteuid() != 0 {
		return bin, nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return "", nil, fmt.Errorf("%w: running as root and no user postgres to run it as: %v", errNoPostgres, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return bin, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// startPostgres initialises a cluster in a fresh folder, starts PostgreSQL
// on a free port and fills pgbench's tables. It returns errNoPostgres
// when PostgreSQL is not installed or cannot run.
func startPostgres(progress io.Writer) (*postgres, error) {
	bin, cred, err := findPostgres()
	if err != nil {
		return nil, err
	}
	// Not under the bench's temporary folder: that one is private to us,
	// and the postgres user must reach this one.
	dir, err := os.MkdirTemp("", "mtunnel-bench-pg-")
	if err != nil {
		return nil, err
	}
	pg := &postgres{bin: bin, dir: dir, cred: cred, logs: newLogStats()}
	if err := pg.init(progress); err != nil {
		pg.stop()
		return nil, err
	}
	return pg, nil
}

func (pg *postgres) init(progress io.Writer) error {
	if pg.cred != nil {
		if err := os.Chown(pg.dir, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			return err
		}
	}
	v, _ := pg.command("postgres", "--version").Output()
	pg.version = strings.TrimSpace(string(v))
	data := filepath.Join(pg.dir, "data")
	if out, err := pg.command("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8").CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if err := pg.run(data); err != nil {
		return err
	}
	fmt.Fprintf(progress, "bench: %s on %s; pgbench -i -s %d\n", pg.version, pg.addr, pgbenchScale)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := pg.pgbench(ctx, pg.addr, "-i", "-s", strconv.Itoa(pgbenchScale), "-q").CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	return nil
}

// run starts the server. PostgreSQL takes a port number, not port 0: it
// gets one the kernel just handed out, and another should that one be
// taken before PostgreSQL binds it.
func (pg *postgres) run(data string) error {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		port := strconv.Itoa(ports[0])
		// No logical replication: its launcher logs a FATAL line at every
		// shutdown, which the report would list as a problem.
		cmd := pg.command("postgres", "-D", data, "-p", port, "-k", pg.dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_logical_replication_workers=0")
		if pg.proc, err = startCmd("postgres", cmd, parsePostgres, pg.logs); err != nil {
			return err
		}
		if _, err = pg.proc.waitReady(60 * time.Second); err == nil {
			pg.addr = net.JoinHostPort("127.0.0.1", port)
			return nil
		}
		if pg.proc.alive() {
			pg.proc.stopWith(syscall.SIGINT, 10*time.Second)
		}
		if attempt == 5 || !strings.Contains(pg.logs.tail(), "could not bind") {
			return fmt.Errorf("start PostgreSQL: %w", err)
		}
	}
}

func (pg *postgres) command(tool string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.bin, tool), args...)
	cmd.Dir = pg.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LANG=C")
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	return cmd
}

// pgbench is pgbench with args against addr, database postgres.
func (pg *postgres) pgbench(ctx context.Context, addr string, args ...string) *exec.Cmd {
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.CommandContext(ctx, filepath.Join(pg.bin, "pgbench"), args...)
	cmd.Env = append(os.Environ(), "PGHOST="+host, "PGPORT="+port, "PGUSER=postgres", "PGDATABASE=postgres",
		"PGCONNECT_TIMEOUT=10", "LC_ALL=C")
	return cmd
}

// stop shuts PostgreSQL down (SIGINT: fast shutdown) and removes its
// folder.
func (pg *postgres) stop() error {
	var err error
	if pg.proc != nil && pg.proc.alive() {
		_, err = pg.proc.stopWith(syscall.SIGINT, 30*time.Second)
	}
	os.RemoveAll(pg.dir)
	return err
}

// runPgbench runs pgbench's built-in transactions through c for d (whole
// seconds, at least one), with a new connection per transaction if
// connect (-C), and reports transactions per second under key. A run
// that fails or aborts any transaction reports an error and no figure.
func (pg *postgres) runPgbench(c *contender, key string, connect bool, d time.Duration, errs *errTally) map[string]float64 {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	args := []string{"-T", strconv.Itoa(secs), "-c", strconv.Itoa(pgbenchClients), "-j", strconv.Itoa(pgbenchThreads)}
	if connect {
		args = append(args, "-C")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d+opBound)
	defer cancel()
	out, err := pg.pgbench(ctx, c.addr, args...).CombinedOutput()
	if err != nil {
		errs.add(fmt.Errorf("pgbench %s: %w: %s", strings.Join(args, " "), err, lastLines(out, 3)))
		return nil
	}
	r, err := pgbench.Parse(string(out))
	if err == nil && r.Failed > 0 {
		err = fmt.Errorf("%d of %d transactions failed", r.Failed, r.Failed+r.Processed)
	}
	if err != nil {
		errs.add(fmt.Errorf("pgbench %s: %w", strings.Join(args, " "), err))
		return nil
	}
	return map[string]float64{key: r.TPS}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}

var postgresLevel = regexp.MustCompile(`\] (LOG|WARNING|ERROR|FATAL|PANIC):  (.*)$`)

// parsePostgres reads PostgreSQL's "date time zone [pid] LEVEL:  message"
// lines; it is ready once it accepts connections.
func parsePostgres(line string) (level, key, ready string) {
	m := postgresLevel.FindStringSubmatch(line)
	if m == nil {
		return "OTHER", digits.ReplaceAllString(line, "#"), ""
	}
	switch m[1] {
	case "LOG":
		level = "INFO"
	case "WARNING":
		level = "WARN"
	default:
		level = "ERROR"
	}
	if strings.Contains(m[2], "database system is ready to accept connections") {
		ready = "ok"
	}
	return level, digits.ReplaceAllString(m[2], "#"), ready
}

// probePostgres checks a contender's path to PostgreSQL once: the
// frontend/backend protocol's SSLRequest, answered with 'N' or 'S' within
// 10 s. Closing then is normal for a client that dislikes the
// answer; PostgreSQL does not log it.
func probePostgres(c *contender) error {
	b, err := probeAnswer(c, []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}) // length 8, code 80877103
	if err == nil && b != 'N' && b != 'S' {
		err = fmt.Errorf("answer %q to SSLRequest, want N or S", b)
	}
	if err != nil {
		return fmt.Errorf("%s: probe PostgreSQL: %w", c.name, err)
	}
	return nil
}
