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
	server := startAgent(t, "server", nil, k.serverArgs("127.0.0.1:0", db)...)
	client := startAgent(t, "client", nil, k.clientArgs(server.listening(t))...)
	host, port, err := net.SplitHostPort(client.listening(t))
	if err != nil {
		t.Fatal(err)
	}
	psql := func(sql string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(pg.bin, "psql"), "-h", host, "-p", port, "-U", "postgres",
			"-d", "postgres", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)
		cmd.Env = binaryEnv("PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("psql -c %q: %v\n%s\nserver agent:\n%s", sql, err, out, server.out.dump())
		}
		return strings.TrimSpace(string(out))
	}

	if got := psql("select 42"); got != "42" {
		t.Fatalf("select 42 through the tunnel: %q", got)
	}
	psql("create table t (i int primary key, s text); insert into t select g, md5(g::text) from generate_series(1, 1000) g")
	if got := psql("select count(*), sum(i) from t"); got != "1000|500500" {
		t.Fatalf("count and sum: %q, want 1000|500500", got)
	}
	rows := strings.Split(psql("select i, s from t order by i"), "\n")
	if len(rows) != 1000 {
		t.Fatalf("select all: %d rows, want 1000", len(rows))
	}
	for i, row := range rows {
		if want := fmt.Sprintf("%d|%x", i+1, md5.Sum([]byte(strconv.Itoa(i+1)))); row != want {
			t.Fatalf("row %d: %q, want %q", i+1, row, want)
		}
	}
	server.waitLogN(t, 4, "stream ended", "route", "default", "peer", "CN=app", "result", "ok")
	client.waitLogN(t, 4, "stream ended", "route", "default", "result", "ok")
}

// pgInstall is a PostgreSQL installation and the user to run it as.
type pgInstall struct {
	bin  string              // folder with initdb, postgres, psql, pg_isready
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
		for _, tool := range []string{"initdb", "psql", "pg_isready"} {
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

// start initialises a cluster (trust authentication, superuser postgres)
// in a fresh folder and runs PostgreSQL on 127.0.0.1 until the test ends.
// It returns the server's host:port.
func (pg pgInstall) start(t *testing.T) string {
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
	// the kernel (listen on 127.0.0.1:0, close), hand it to PostgreSQL, and
	// should another process grab it in between ("could not bind"), start
	// again with a new one.
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		p := startProc(t, "postgres", pg.command(dir, "postgres", "-D", data, "-p", port, "-k", dir,
			"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"), syscall.SIGINT) // SIGINT: fast shutdown
		_, err = p.await(1, func(r record) bool {
			return strings.Contains(r.msg, "database system is ready to accept connections")
		})
		if err == nil {
			if out, err := pg.command(dir, "pg_isready", "-h", "127.0.0.1", "-p", port).CombinedOutput(); err != nil {
				t.Fatalf("PostgreSQL said it was ready, pg_isready disagrees: %v\n%s", err, out)
			}
			return net.JoinHostPort("127.0.0.1", port)
		}
		p.handled = true
		if attempt == 5 || !strings.Contains(p.out.dump(), "could not bind") {
			t.Fatalf("start PostgreSQL: %v\n%s", err, p.out.dump())
		}
	}
}
