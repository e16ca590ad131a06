package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// agent is one child process of a contender (an mtunnel agent or stunnel).
// Its stdout and stderr are read line by line: the lines that ready
// matches are reported on readyc (a client agent logs one per route and
// one per session; up to readyMax wait there to be read, later ones are
// dropped), and every line is counted in logs.
type agent struct {
	name   string
	cmd    *exec.Cmd
	logs   *logStats
	readyc chan string   // buffered: readyMax
	exited chan struct{} // closed once the process has exited and its output is read
	err    error         // Wait's result, set before exited is closed
}

const readyMax = 64

// lineParser classifies a log line: its level (INFO, WARN, ERROR...), a key
// that groups similar lines, and, for the readiness line, a value.
type lineParser func(line string) (level, key, ready string)

func startAgent(name string, argv, env []string, parse lineParser, logs *logStats) (*agent, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	return startCmd(name, cmd, parse, logs)
}

// startCmd is startAgent for a command the caller set up (its user, for
// one).
func startCmd(name string, cmd *exec.Cmd, parse lineParser, logs *logStats) (*agent, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = w, w
	dieWithBench(cmd)
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	w.Close()
	a := &agent{name: name, cmd: cmd, logs: logs, readyc: make(chan string, readyMax), exited: make(chan struct{})}
	go a.read(r, parse)
	return a, nil
}

func (a *agent) read(r *os.File, parse lineParser) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		level, key, val := parse(sc.Text())
		a.logs.add(level, key, sc.Text())
		if val != "" {
			select {
			case a.readyc <- val:
			default: // more than anyone waits for
			}
		}
	}
	r.Close()
	a.err = a.cmd.Wait()
	close(a.exited)
}

// waitReady returns the next readiness value, or an error if the process
// exits or stays silent past timeout.
func (a *agent) waitReady(timeout time.Duration) (string, error) {
	select {
	case v := <-a.readyc:
		return v, nil
	case <-a.exited:
		return "", fmt.Errorf("%s exited before it was ready: %v; last lines:\n%s", a.name, a.err, a.logs.tail())
	case <-time.After(timeout):
		return "", fmt.Errorf("%s not ready after %v; last lines:\n%s", a.name, timeout, a.logs.tail())
	}
}

func (a *agent) alive() bool {
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, waits up to grace, then kills. It returns how long the
// process took to exit and an error if it had to be killed or failed.
func (a *agent) stop(grace time.Duration) (time.Duration, error) {
	return a.stopWith(syscall.SIGTERM, grace)
}

// stopWith is stop with another signal.
func (a *agent) stopWith(sig syscall.Signal, grace time.Duration) (time.Duration, error) {
	start := time.Now()
	if !a.alive() {
		return 0, fmt.Errorf("%s had already exited: %v", a.name, a.err)
	}
	a.cmd.Process.Signal(sig)
	select {
	case <-a.exited:
		if a.err != nil {
			return time.Since(start), fmt.Errorf("%s after %s: %w", a.name, signame(sig), a.err)
		}
		return time.Since(start), nil
	case <-time.After(grace):
		a.cmd.Process.Kill()
		<-a.exited
		return time.Since(start), fmt.Errorf("%s still running %v after %s: killed", a.name, grace, signame(sig))
	}
}

func signame(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return sig.String()
}

// logStats counts an agent's log lines by level and, for warnings and
// errors, by kind, keeping a few examples.
type logStats struct {
	mu       sync.Mutex
	Levels   map[string]int `json:"levels"`
	Problems map[string]int `json:"problems"` // WARN and ERROR lines by key
	Examples []string       `json:"examples"` // the first few WARN and ERROR lines
	last     []string
}

func newLogStats() *logStats {
	return &logStats{Levels: map[string]int{}, Problems: map[string]int{}}
}

func (s *logStats) add(level, key, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Levels[level]++
	if level == "WARN" || level == "ERROR" {
		s.Problems[key]++
		if len(s.Examples) < 10 {
			s.Examples = append(s.Examples, line)
		}
	}
	if s.last = append(s.last, line); len(s.last) > 10 {
		s.last = s.last[1:]
	}
}

func (s *logStats) tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.last, "\n")
}

// sessionReady prefixes the readiness value of a client agent's
// "session established" line (parseMtunnel).
const sessionReady = "session "

var digits = regexp.MustCompile(`[0-9]+`)

// parseMtunnel reads slog's JSON lines; the readiness values are the
// "listening" line's addr and, for each "session established" line,
// sessionReady and the session's ID.
func parseMtunnel(line string) (level, key, ready string) {
	var m map[string]any
	if json.Unmarshal([]byte(line), &m) != nil {
		return "OTHER", digits.ReplaceAllString(line, "#"), ""
	}
	str := func(k string) string { s, _ := m[k].(string); return s }
	level, msg := str("level"), str("msg")
	switch msg {
	case "listening":
		ready = str("addr")
	case "session established":
		ready = sessionReady + str("session")
	}
	key = msg
	for _, k := range []string{"result", "reason", "err"} {
		if v := str(k); v != "" {
			key += " " + k + "=" + digits.ReplaceAllString(v, "#")
		}
	}
	return level, key, ready
}

var stunnelLevel = regexp.MustCompile(`LOG([0-7])\[[^\]]*\]: (.*)$`)

// parseStunnel reads stunnel's "date time LOGn[id]: message" lines; it is
// ready once its configuration loaded (it binds right after).
func parseStunnel(line string) (level, key, ready string) {
	m := stunnelLevel.FindStringSubmatch(line)
	if m == nil {
		return "OTHER", digits.ReplaceAllString(line, "#"), ""
	}
	switch m[1] {
	case "0", "1", "2", "3":
		level = "ERROR"
	case "4":
		level = "WARN"
	case "5":
		level = "INFO"
	default:
		level = "DEBUG"
	}
	if m[2] == "Configuration successful" {
		ready = "ok"
	}
	return level, digits.ReplaceAllString(m[2], "#"), ready
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuSeconds sums user and system time of the processes (all threads).
func cpuSeconds(pids []int) (float64, error) {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// Fields after the command name, which may hold spaces, in parentheses.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: short", pid)
		}
		for _, s := range f[11:13] { // utime, stime: fields 14 and 15
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			ticks += n
		}
	}
	return float64(ticks) / clockTicks, nil
}

// rssKiB sums VmRSS of the processes.
func rssKiB(pids []int) (float64, error) {
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, err
		}
		_, rest, ok := bytes.Cut(b, []byte("\nVmRSS:"))
		if !ok {
			return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
		}
		line, _, _ := bytes.Cut(rest, []byte("\n"))
		n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(string(line)), " kB"), 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/status VmRSS: %w", pid, err)
		}
		total += n
	}
	return total, nil
}

// settle waits until the processes use no CPU for a while (at most limit),
// so a measurement starts from idle agents.
func settle(pids []int, limit time.Duration) {
	if len(pids) == 0 {
		time.Sleep(100 * time.Millisecond)
		return
	}
	deadline := time.Now().Add(limit)
	prev, _ := cpuSeconds(pids)
	for time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		cur, err := cpuSeconds(pids)
		if err != nil || cur-prev <= 1.0/clockTicks {
			return
		}
		prev = cur
	}
}
