package integration

import (
	"cmp"
	"context"
	"crypto/md5"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestQuickstartPostgres is the README's worked example for real: psql
// talks to a PostgreSQL server through the built client and server agents.
func TestQuickstartPostgres(t *testing.T) {
	pg := findPostgres(t)
	db := pg.start(t)
	k := newBinPKI(t, filepath.Join(t.TempDir(), "pki"))
	server := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", db.addr)...)
	client := startAgent(t, "client", nil, k.clientArgs(server.listening(t))...)
	app := pgApp{bin: pg.bin, addr: client.listening(t), db: "postgres", server: server}
	checkQueries(t, app)
	server.waitLogN(t, 4, "stream ended", "route", "default", "peer", "CN=app", "result", "ok")
	client.waitLogN(t, 4, "stream ended", "route", "default", "result", "ok")
}

// checkQueries runs four psql sessions through app's address: a constant,
// a table of 1,000 rows written, summed, and read back row by row.
func checkQueries(t *testing.T, app pgApp) {
	t.Helper()
	if got := app.psql(t, "select 42"); got != "42" {
		t.Fatalf("select 42 through the tunnel: %q", got)
	}
	app.psql(t, "create table t (i int primary key, s text); insert into t select g, md5(g::text) from generate_series(1, 1000) g")
	if got := app.psql(t, "select count(*), sum(i) from t"); got != "1000|500500" {
		t.Fatalf("count and sum: %q, want 1000|500500", got)
	}
	rows := strings.Split(app.psql(t, "select i, s from t order by i"), "\n")
	if len(rows) != 1000 {
		t.Fatalf("select all: %d rows, want 1000", len(rows))
	}
	for i, row := range rows {
		if want := fmt.Sprintf("%d|%x", i+1, md5.Sum([]byte(strconv.Itoa(i+1)))); row != want {
			t.Fatalf("row %d: %q, want %q", i+1, row, want)
		}
	}
}

// pgApp runs PostgreSQL's client programs (psql, pgbench) as an app
// would: against addr, as user postgres, in database db. server, if set,
// is the server agent whose output a failure shows.
type pgApp struct {
	bin, addr, db string
	server        *childProc
}

// command is tool with args, connecting through libpq's variables.
func (a pgApp) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	host, port, _ := net.SplitHostPort(a.addr)
	cmd := exec.CommandContext(ctx, filepath.Join(a.bin, tool), args...)
	cmd.Env = binaryEnv("PGHOST="+host, "PGPORT="+port, "PGUSER=postgres", "PGDATABASE="+a.db,
		"PGCONNECT_TIMEOUT=10", "LC_ALL=C")
	return cmd
}

// psql runs sql in one session, stopping at the first error, and returns
// its unaligned, tuples-only output.
func (a pgApp) psql(t *testing.T, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := a.command(ctx, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("psql -c %q: %v\n%s%s", sql, err, out, a.agentOutput())
	}
	return strings.TrimSpace(string(out))
}

func (a pgApp) agentOutput() string {
	if a.server == nil {
		return ""
	}
	return "\nserver agent:\n" + a.server.out.dump()
}

// pgInstall is a PostgreSQL installation and the user to run it as.
type pgInstall struct {
	bin  string              // folder with initdb, postgres, psql, pg_isready, pgbench
	cred *syscall.Credential // nil: run as ourselves
}

// skipOrFailExternal skips a test whose external program is missing, or fails
// it under CI (MTUNNEL_REQUIRE_EXTERNAL=1), which installs everything.
func skipOrFailExternal(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("MTUNNEL_REQUIRE_EXTERNAL") == "1" {
		t.Fatalf(format+" (required: MTUNNEL_REQUIRE_EXTERNAL=1)", args...)
	}
	t.Skipf(format, args...)
}

// findPostgres finds Debian's newest PostgreSQL. PostgreSQL refuses to run
// as root, so as root it runs as the system user postgres.
func findPostgres(t *testing.T) pgInstall {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	found = slices.DeleteFunc(found, func(p string) bool {
		for _, tool := range []string{"initdb", "psql", "pg_isready", "pgbench"} {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), tool)); err != nil {
				return true
			}
		}
		return false
	})
	if len(found) == 0 {
		skipOrFailExternal(t, "no PostgreSQL in /usr/lib/postgresql/*/bin: install the Debian package postgresql")
	}
	major := func(p string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
		return v
	}
	slices.SortFunc(found, func(a, b string) int { return cmp.Compare(major(a), major(b)) })
	pg := pgInstall{bin: filepath.Dir(found[len(found)-1])}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			skipOrFailExternal(t, "running as root and there is no user postgres to run PostgreSQL as (%v): install the Debian package postgresql", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return pg
}

func (pg pgInstall) command(dir, tool string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(pg.bin, tool), args...)
	cmd.Dir = dir
	cmd.Env = binaryEnv("LC_ALL=C", "LANG=C")
	if pg.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	}
	return cmd
}

// pgServer is a PostgreSQL server a test started: addr is its TCP address
// on 127.0.0.1, socket its unix socket, proc the postmaster and its log.
type pgServer struct {
	addr, socket string
	proc         *childProc
}

// start initialises a cluster (trust authentication, superuser postgres)
// in a fresh folder and runs PostgreSQL until the test ends, listening on
// 127.0.0.1 and on a unix socket in that folder.
func (pg pgInstall) start(t *testing.T) pgServer {
	t.Helper()
	// Not t.TempDir: its parent folders are private to root, and the
	// postgres user must reach this one.
	dir, err := os.MkdirTemp("", "mtunnel-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after PostgreSQL has stopped
	if pg.cred != nil {
		if err := os.Chown(dir, int(pg.cred.Uid), int(pg.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := pg.command(dir, "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// PostgreSQL takes a port number, not port 0. So: take a free port from
	// the kernel, hand it to PostgreSQL, and should another process grab it
	// in between ("could not bind"), start again with a new one.
	for attempt := 1; ; attempt++ {
		port := freeLoopbackPort(t)
		// -k is unix_socket_directories: the socket is dir/.s.PGSQL.<port>.
		p := startProc(t, "postgres", pg.command(dir, "postgres", "-D", data, "-p", port, "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"), syscall.SIGINT) // SIGINT: fast shutdown
		_, err = p.await(1, logContains("database system is ready to accept connections"))
		if err == nil {
			if out, err := pg.command(dir, "pg_isready", "-h", "127.0.0.1", "-p", port).CombinedOutput(); err != nil {
				t.Fatalf("PostgreSQL said it was ready, pg_isready disagrees: %v\n%s", err, out)
			}
			s := pgServer{addr: net.JoinHostPort("127.0.0.1", port), socket: filepath.Join(dir, ".s.PGSQL."+port), proc: p}
			requireSocket(t, s.socket)
			return s
		}
		p.handled = true
		if attempt == 5 || !strings.Contains(p.out.dump(), "could not bind") {
			t.Fatalf("start PostgreSQL: %v\n%s", err, p.out.dump())
		}
	}
}

// logContains matches a plain output line (not JSON) that contains s.
func logContains(s string) func(record) bool {
	return func(r record) bool { return strings.Contains(r.msg, s) }
}
