package integration

// Processes started by the binary tests, and their output as log records
// the tests wait on.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// childProc is a process the test started. Its output is kept line by
// line: a JSON line becomes a record (msg, level, attributes), any other
// line a record whose msg is the whole line.
type childProc struct {
	name    string
	cmd     *exec.Cmd
	out     *lineLog
	done    chan struct{} // closed when the process has exited and its output is read
	err     error         // from Wait; read after done
	handled bool          // the test dealt with the exit itself (kill, expected failure)
}

// startProc starts cmd and stops it when the test ends: stop signal, then
// SIGKILL if it is still running 10 s later. A process that did not exit
// cleanly, early or on the signal, fails the test.
func startProc(t testing.TB, name string, cmd *exec.Cmd, stop syscall.Signal) *childProc {
	t.Helper()
	p := &childProc{name: name, cmd: cmd, out: newLineLog(), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			if p.err != nil && !p.handled {
				t.Errorf("%s exited on its own: %v\noutput:\n%s", name, p.err, p.out.dump())
			}
			return
		default:
		}
		cmd.Process.Signal(stop)
		timer := time.NewTimer(10 * time.Second)
		defer timer.Stop()
		select {
		case <-p.done:
		case <-timer.C:
			cmd.Process.Kill()
			<-p.done
			t.Errorf("%s still running 10s after %v; killed it\noutput:\n%s", name, stop, p.out.dump())
			return
		}
		if p.err != nil {
			t.Errorf("%s: exit after %v: %v\noutput:\n%s", name, stop, p.err, p.out.dump())
		}
	})
	return p
}

// kill ends the process with SIGKILL and waits for it.
func (p *childProc) kill(t testing.TB) {
	t.Helper()
	p.handled = true
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	<-p.done
}

// stop ends the process with SIGTERM, as a service manager does, and
// waits for it; it must exit cleanly.
func (p *childProc) stop(t testing.TB) {
	t.Helper()
	p.handled = true
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop %s: %v", p.name, err)
	}
	<-p.done
	if p.err != nil {
		t.Fatalf("%s: exit after SIGTERM: %v\noutput:\n%s", p.name, p.err, p.out.dump())
	}
}

// count returns how many log lines so far have msg and the attributes kv.
func (p *childProc) count(msg string, kv ...string) int {
	return p.out.count(msgAttr(msg, kv...))
}

// await waits (20 s at most) until n records match, and returns the nth. It
// gives up early when the process exits without having logged them.
func (p *childProc) await(n int, match func(record) bool) (record, error) {
	return p.awaitWithin(20*time.Second, n, match)
}

func (p *childProc) awaitWithin(limit time.Duration, n int, match func(record) bool) (record, error) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	exited := false
	for {
		r, ok, changed := p.out.find(n, match)
		if ok {
			return r, nil
		}
		if exited {
			return record{}, fmt.Errorf("%s exited (%v) before logging it", p.name, p.err)
		}
		select {
		case <-changed:
		case <-p.done:
			exited = true // look once more: all output is in by now
		case <-deadline.C:
			return record{}, fmt.Errorf("%s did not log it within %v", p.name, limit)
		}
	}
}

// waitLog waits for the first log line with msg and the attributes kv
// (key, value, ...) and returns it.
func (p *childProc) waitLog(t testing.TB, msg string, kv ...string) record {
	t.Helper()
	return p.waitLogN(t, 1, msg, kv...)
}

// waitLogN waits for the nth such line.
func (p *childProc) waitLogN(t testing.TB, n int, msg string, kv ...string) record {
	t.Helper()
	r, err := p.await(n, msgAttr(msg, kv...))
	if err != nil {
		p.handled = true // reported here, with the output
		t.Fatalf("waiting for log line #%d %q %q: %v\noutput:\n%s", n, msg, kv, err, p.out.dump())
	}
	return r
}

// listening returns the address of the agent's "listening" line with kv.
func (p *childProc) listening(t testing.TB, kv ...string) string {
	t.Helper()
	return p.waitLog(t, "listening", kv...).attrs["addr"]
}

// lineLog is an io.Writer that splits a process's output into records and
// signals every new line on a channel.
type lineLog struct {
	mu      sync.Mutex
	lines   []record
	raw     bytes.Buffer
	partial []byte
	changed chan struct{} // closed and replaced on every write
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raw.Write(b)
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, parseLogLine(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(b), nil
}

// find returns the nth matching record, and a channel closed on the next
// write.
func (l *lineLog) find(n int, match func(record) bool) (record, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.lines {
		if match(r) {
			if n--; n == 0 {
				return r, true, l.changed
			}
		}
	}
	return record{}, false, l.changed
}

func (l *lineLog) count(match func(record) bool) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.lines {
		if match(r) {
			n++
		}
	}
	return n
}

func (l *lineLog) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// parseLogLine reads one slog JSON line ("time", "level", "msg",
// attributes); numbers keep their JSON spelling, nested values their JSON
// encoding.
func parseLogLine(line []byte) record {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || m["msg"] == nil || m["level"] == nil {
		return record{msg: string(line)}
	}
	r := record{attrs: map[string]string{}}
	r.msg, _ = m["msg"].(string)
	lvl, _ := m["level"].(string)
	r.level.UnmarshalText([]byte(lvl))
	for k, v := range m {
		switch v := v.(type) {
		case string:
			r.attrs[k] = v
		case json.Number:
			r.attrs[k] = v.String()
		default:
			b, _ := json.Marshal(v)
			r.attrs[k] = string(b)
		}
	}
	delete(r.attrs, slog.MessageKey)
	delete(r.attrs, slog.LevelKey)
	return r
}
