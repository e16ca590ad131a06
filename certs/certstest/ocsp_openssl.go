package certstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/mtunnel/mtunnel/certs"
)

// startTimeout bounds one start of the responder: listening, loading its
// files and answering the first request.
const startTimeout = 10 * time.Second

// NeedOpenSSL returns the path of the openssl command. Without one it skips
// the test, naming the Debian package to install, unless the environment
// sets MTUNNEL_REQUIRE_EXTERNAL=1 (CI), which makes a missing tool a
// failure.
func NeedOpenSSL(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		missingExternal(t, "openssl is not on PATH; install the Debian package openssl: %v", err)
	}
	return bin
}

func missingExternal(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("MTUNNEL_REQUIRE_EXTERNAL") == "1" {
		t.Fatalf("certstest: "+format+" (required: MTUNNEL_REQUIRE_EXTERNAL=1)", args...)
	}
	t.Skipf("certstest: "+format, args...)
}

// OpenSSLResponder is a stock "openssl ocsp" process answering OCSP
// requests for a CA from an OpenSSL index file (index.txt, as written by
// certs.RecordIssued and certs.RecordRevoked, or by "openssl ca"). It is a
// real third-party responder: what mtunnel's OCSP client accepts from it,
// interoperates.
//
// Quirks of OpenSSL 3.0's responder that the helper works around:
//
//   - It rereads a changed index only before it waits for the next
//     connection, so the first request after a change is answered from the
//     old index. Call Restart after changing the index.
//   - A client that connects and closes without sending a request makes it
//     spin at full CPU, answering nothing more. Readiness is therefore
//     proved with a real OCSP request, never a bare TCP connect.
//
// An OpenSSLResponder is not safe for concurrent use.
type OpenSSLResponder struct {
	bin, dir string
	probe    []byte // an OCSP request, for the readiness check
	port     int    // 0 until the first start has bound one

	starts int // numbers the log files, ocsp-N.log in dir
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
}

// StartOpenSSLResponder runs "openssl ocsp" for the CA in dir: it reads
// dir/ca.crt and dir/ca.key (certs.WriteCA writes them) and answers from
// dir/index.txt, which it creates empty (with index.txt.attr) when missing,
// so that the responder, and with it its URL, can exist before the
// certificates that name it. Responses are signed by the CA itself and
// carry a nextUpdate five minutes after thisUpdate. The process is stopped
// when the test ends. It needs OpenSSL 3.0 or later, which reports the port
// it bound.
//
// The port is chosen by openssl itself (-port 0), which prints it, so no
// port is guessed or raced for; Restart binds the same one again, because
// issued certificates name it.
func StartOpenSSLResponder(t testing.TB, dir string) *OpenSSLResponder {
	t.Helper()
	bin := NeedOpenSSL(t)
	needOpenSSL3(t, bin)
	caFile, _ := certs.CAFiles(dir)
	data, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("certstest: OCSP responder: %v", err)
	}
	chain, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		t.Fatalf("certstest: OCSP responder: %s: %v", caFile, err)
	}
	// Any well-formed request will do; the CA asks about itself.
	probe, err := ocsp.CreateRequest(chain[0], chain[0], nil)
	if err != nil {
		t.Fatalf("certstest: OCSP responder: readiness request: %v", err)
	}
	index := filepath.Join(dir, "index.txt")
	if _, err := os.Stat(index); errors.Is(err, fs.ErrNotExist) {
		if err := certs.WriteIndex(index, nil); err != nil {
			t.Fatalf("certstest: OCSP responder: %v", err)
		}
	}
	r := &OpenSSLResponder{bin: bin, dir: dir, probe: probe}
	t.Cleanup(r.Stop)
	if err := r.start(); err != nil {
		t.Fatalf("certstest: start OCSP responder: %v", err)
	}
	return r
}

// URL is the responder's address, for certs.Request.OCSPServer. It stays
// the same across Restart.
func (r *OpenSSLResponder) URL() string {
	return "http://127.0.0.1:" + strconv.Itoa(r.port)
}

// Restart stops the responder if it runs and starts it again on the same
// port, so that it answers from the index as it is now. It fails the test
// if the port was taken meanwhile.
func (r *OpenSSLResponder) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	if err := r.start(); err != nil {
		t.Fatalf("certstest: restart OCSP responder at %s: %v", r.URL(), err)
	}
}

// Stop kills the responder and waits for it to exit; requests then fail
// with a refused connection. Stopping a stopped responder does nothing.
func (r *OpenSSLResponder) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.exited
	r.cmd = nil
}

// start runs openssl and returns once it has answered an OCSP request.
func (r *OpenSSLResponder) start() error {
	r.starts++
	logFile := filepath.Join(r.dir, fmt.Sprintf("ocsp-%d.log", r.starts))
	log, err := os.Create(logFile)
	if err != nil {
		return err
	}
	// -ignore_err keeps it running after a bad request.
	cmd := exec.Command(r.bin, "ocsp", "-index", "index.txt", "-port", strconv.Itoa(r.port),
		"-CA", "ca.crt", "-rsigner", "ca.crt", "-rkey", "ca.key", "-nmin", "5", "-ignore_err")
	accept := &acceptWatcher{w: log, addr: make(chan string, 1)}
	cmd.Dir, cmd.Stdout, cmd.Stderr = r.dir, accept, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // also waits for the copy of stdout into accept
		log.Close()
		close(exited)
	}()
	r.cmd, r.exited = cmd, exited

	fail := func(format string, args ...any) error {
		r.Stop()
		out, _ := os.ReadFile(logFile)
		return fmt.Errorf("openssl ocsp (log %s): %s:\n%s", logFile, fmt.Sprintf(format, args...), out)
	}
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	select {
	case addr := <-accept.addr:
		port, err := acceptedPort(addr)
		if err != nil {
			return fail("%v", err)
		}
		if r.port != 0 && port != r.port {
			return fail("listens on port %d, want %d", port, r.port)
		}
		r.port = port
	case <-exited:
		return fail("exited before it listened")
	case <-deadline.C:
		return fail("did not report a listening port within %v", startTimeout)
	}
	// Listening is not ready: the index and keys are loaded after the
	// bind. A request waits in the listen queue until then, or is reset
	// if openssl gives up.
	if err := r.ask(); err != nil {
		return fail("does not answer OCSP requests: %v", err)
	}
	return nil
}

// ask sends the probe request and requires an OCSP response. Keep-alives
// are off: an idle connection closed later without a request would make
// openssl spin.
func (r *OpenSSLResponder) ask() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL(), bytes.NewReader(r.probe))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/ocsp-response" {
		return fmt.Errorf("HTTP %s, content type %q", resp.Status, ct)
	}
	return nil
}

// acceptWatcher passes openssl's standard output on to w and sends the
// address of the line "ACCEPT [::]:PORT PID=N", which OpenSSL 3 prints once
// it listens (apps/lib/http_server.c), to addr. exec calls Write from one
// goroutine.
type acceptWatcher struct {
	w    io.Writer
	addr chan string // buffered; receives one address
	line []byte      // the incomplete last line, until the address is found
	done bool
}

func (a *acceptWatcher) Write(p []byte) (int, error) {
	if !a.done {
		a.line = append(a.line, p...)
		for !a.done {
			i := bytes.IndexByte(a.line, '\n')
			if i < 0 {
				break
			}
			if f := strings.Fields(string(a.line[:i])); len(f) >= 2 && f[0] == "ACCEPT" {
				a.addr <- f[1]
				a.done, a.line = true, nil
				break
			}
			a.line = a.line[i+1:]
		}
	}
	return a.w.Write(p)
}

func acceptedPort(addr string) (int, error) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("reported listening address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 {
		return 0, fmt.Errorf("reported listening address %q has no port", addr)
	}
	return port, nil
}

// needOpenSSL3 skips (or fails, see NeedOpenSSL) unless bin is OpenSSL 3
// or later: OpenSSL 1.1 and LibreSSL do not report the port they bind.
func needOpenSSL3(t testing.TB, bin string) {
	t.Helper()
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("certstest: %s version: %v", bin, err)
	}
	f := strings.Fields(string(out))
	if len(f) >= 2 && f[0] == "OpenSSL" {
		if major, err := strconv.Atoi(strings.SplitN(f[1], ".", 2)[0]); err == nil && major >= 3 {
			return
		}
	}
	missingExternal(t, "the OCSP responder needs OpenSSL 3.0 or later, %s is %q; install the Debian package openssl (bookworm or later)",
		bin, strings.TrimSpace(string(out)))
}
