package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"
)

// The head-of-line ping runs in a helper process, the bench binary run
// again with pingHelperEnv set: it holds an echo server (a backend, used in
// echo mode only) and pings, through a contender's second route, on
// request. The bench process itself runs the bulk clients and the bulk
// backend, and goroutines there queue behind them; see headOfLine.
//
// The protocol is JSON lines: the helper writes a pingHello on stdout, then
// answers each pingRequest read from stdin with a pingReply, and exits
// once stdin closes.

// pingHelperEnv, set to 1, makes the bench binary (or the test binary, see
// TestMain) a ping helper.
const pingHelperEnv = "MTUNNEL_BENCH_PING_HELPER"

type pingHello struct {
	Echo string `json:"echo"` // the helper's echo server
}

// pingRequest asks for pingPong(Addr, Warm, N, MinN, Limit).
type pingRequest struct {
	Addr  string        `json:"addr"`
	Warm  int           `json:"warm"`
	N     int           `json:"n"`
	MinN  int           `json:"min_n"`
	Limit time.Duration `json:"limit"`
	// Hold: after the warm-up, reply Ready and wait for the next line (any
	// request) before the measured round trips (pingHelper.hold).
	Hold bool `json:"hold,omitempty"`
}

type pingReply struct {
	Ready bool            `json:"ready,omitempty"` // a held request is connected and warmed up
	RTTs  []time.Duration `json:"rtts"`
	Err   string          `json:"err,omitempty"`
}

// pingHelperMain is the helper process's main; it returns the exit status.
func pingHelperMain() int {
	if err := servePings(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench ping helper:", err)
		return 1
	}
	return 0
}

// servePings starts the echo server, reports its address on out, and runs
// the ping requests from in one at a time until in ends.
func servePings(in io.Reader, out io.Writer) error {
	be, err := startBackend()
	if err != nil {
		return err
	}
	defer be.close()
	enc := json.NewEncoder(out)
	if err := enc.Encode(pingHello{Echo: be.addr()}); err != nil {
		return err
	}
	dec := json.NewDecoder(in)
	for {
		var req pingRequest
		if err := dec.Decode(&req); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read request: %w", err)
		}
		before := be.accepted.Load()
		var ready func() error
		if req.Hold {
			ready = func() error {
				if err := enc.Encode(pingReply{Ready: true}); err != nil {
					return err
				}
				var resume pingRequest
				if err := dec.Decode(&resume); err != nil {
					return fmt.Errorf("read the go-ahead: %w", err)
				}
				return nil
			}
		}
		rtts, err := pingPong(req.Addr, req.Warm, req.N, req.MinN, req.Limit, ready)
		if err == nil && be.accepted.Load() == before {
			// The bulk backend echoes too: a contender's routes mixed up
			// would go unnoticed, and measure the old way.
			rtts, err = nil, fmt.Errorf("the ping to %s did not reach the echo server at %s", req.Addr, be.addr())
		}
		rep := pingReply{RTTs: rtts}
		if err != nil {
			rep.Err = err.Error()
		}
		if err := enc.Encode(rep); err != nil {
			return err
		}
	}
}

// pingHelper is the bench's end of a helper process. One request at a
// time: the workloads run one after another.
type pingHelper struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *json.Decoder
	echo string // the helper's echo server, the target of the second route
}

func startPingHelper() (*pingHelper, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("ping helper: %w", err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), pingHelperEnv+"=1")
	cmd.Stderr = os.Stderr
	// It dies with the bench, as the agents do (startCmd).
	dieWithBench(cmd)
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ping helper: %w", err)
	}
	h := &pingHelper{cmd: cmd, in: in, out: json.NewDecoder(out)}
	var hello pingHello
	if err := h.out.Decode(&hello); err != nil {
		h.close()
		return nil, fmt.Errorf("ping helper: read its echo address: %w", err)
	}
	h.echo = hello.Echo
	return h, nil
}

// ping runs pingPong in the helper. The round trips are measured there;
// the request and reply cross the pipe outside the timed part.
func (h *pingHelper) ping(addr string, warm, n, minN int, limit time.Duration) ([]time.Duration, error) {
	rep, err := h.exchange(pingRequest{Addr: addr, Warm: warm, N: n, MinN: minN, Limit: limit})
	return rep.RTTs, err
}

// hold starts a ping run that connects and warms up, then waits for
// release before its measured round trips.
func (h *pingHelper) hold(addr string, warm, n, minN int, limit time.Duration) error {
	rep, err := h.exchange(pingRequest{Addr: addr, Warm: warm, N: n, MinN: minN, Limit: limit, Hold: true})
	if err == nil && !rep.Ready {
		err = errors.New("ping helper: a held ping run replied without being ready")
	}
	return err
}

// release lets a held ping run go on, and returns its round trips.
func (h *pingHelper) release() ([]time.Duration, error) {
	rep, err := h.exchange(pingRequest{}) // any line is the go-ahead
	return rep.RTTs, err
}

// exchange sends req and reads the reply; a reply's Err is the error.
func (h *pingHelper) exchange(req pingRequest) (pingReply, error) {
	var rep pingReply
	if err := json.NewEncoder(h.in).Encode(req); err != nil {
		return rep, fmt.Errorf("ping helper: send request: %w", err)
	}
	if err := h.out.Decode(&rep); err != nil {
		return rep, fmt.Errorf("ping helper: read reply: %w", err)
	}
	if rep.Err != "" {
		return rep, errors.New(rep.Err)
	}
	return rep, nil
}

// close ends the helper: stdin closes, it exits; killed if it has not
// within 10 s.
func (h *pingHelper) close() error {
	h.in.Close()
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("ping helper: %w", err)
		}
		return nil
	case <-time.After(10 * time.Second):
		h.cmd.Process.Kill()
		<-done
		return errors.New("ping helper still running 10s after its stdin closed: killed")
	}
}
