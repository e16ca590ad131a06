package integration

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRevokeLiveSessionBinary is revocation as an operator does it, with
// the built binary: `certs revoke` and `certs crl` while a revoked client's
// session is open. The server notices the new CRL file (poll interval and
// recheck shortened by flags), closes the open session (its app gets a
// reset), refuses the client's new handshakes, and keeps serving the
// others. A broken CRL written afterwards and pushed with SIGHUP is refused
// and the last good CRL stays in force.
func TestRevokeLiveSessionBinary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	k := newBinPKI(t, dir)
	mustRunBinary(t, "certs", "issue", "--dir", dir, "--name", "victim", "--client")
	mustRunBinary(t, "certs", "crl", "--dir", dir)
	crlFile := filepath.Join(dir, "ca.crl")
	echoAddr := backend(t, echo)

	args := append(k.serverArgs("127.0.0.1:0", echoAddr), "--allow-cn", "victim", "--crl", crlFile,
		"--crl-reload-interval", "100ms", "--recheck-interval", "200ms")
	server := startAgent(t, "server", nil, args...)
	serverAddr := server.listening(t)
	good := startAgent(t, "client", nil, k.clientArgs(serverAddr)...).listening(t)
	victimArgs := withFlag(withFlag(k.clientArgs(serverAddr), "--cert", filepath.Join(dir, "victim.crt")), "--key", filepath.Join(dir, "victim.key"))
	victim := startAgent(t, "victim", nil, victimArgs...).listening(t)

	c := connectedApp(t, victim)

	mustRunBinary(t, "certs", "revoke", "--dir", dir, "--cert", filepath.Join(dir, "victim.crt"), "--reason", "keyCompromise")
	mustRunBinary(t, "certs", "crl", "--dir", dir)
	server.waitLog(t, "CRL loaded", "revoked", "1")
	expectResetOn(t, c)
	server.waitLog(t, "closing session: peer no longer passes verification", "peer", "CN=victim", "reason", "revoked")
	expectReset(t, victim)
	server.waitLog(t, "handshake failed", "reason", "revoked")
	if err := echoCheck(t, good, 256<<10); err != nil {
		t.Fatalf("the good client stopped working: %v", err)
	}

	if err := os.WriteFile(crlFile, []byte("-----BEGIN X509 CRL-----\nhalf written"), 0o644); err != nil {
		t.Fatal(err)
	}
	server.cmd.Process.Signal(syscall.SIGHUP)
	server.waitLog(t, "CRL reload refused; keeping the last good CRL")
	expectReset(t, victim)
	server.waitLogN(t, 2, "handshake failed", "reason", "revoked")
	if err := echoCheck(t, good, 256<<10); err != nil {
		t.Fatalf("the good client stopped working after a broken CRL: %v", err)
	}
}

// TestRevokeUnderIntermediateBinary: a client whose certificate an
// intermediate CA issued is revoked with `certs revoke --ca-name`, and the
// intermediate's CRL (`certs crl --ca-name`), loaded beside the root's,
// ends its session and refuses it from then on.
func TestRevokeUnderIntermediateBinary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	k := newBinPKI(t, dir)
	mustRunBinary(t, "certs", "issue", "--dir", dir, "--name", "corp", "--intermediate")
	mustRunBinary(t, "certs", "issue", "--dir", dir, "--ca-name", "corp", "--name", "deep", "--client")
	mustRunBinary(t, "certs", "crl", "--dir", dir)
	mustRunBinary(t, "certs", "crl", "--dir", dir, "--ca-name", "corp")
	echoAddr := backend(t, echo)

	// The server needs corp's certificate to check corp's CRL.
	args := append(k.serverArgs("127.0.0.1:0", echoAddr), "--allow-cn", "deep",
		"--intermediates", filepath.Join(dir, "corp.crt"),
		"--crl", filepath.Join(dir, "ca.crl"), "--crl", filepath.Join(dir, "corp.crl"),
		"--crl-reload-interval", "100ms", "--recheck-interval", "200ms")
	server := startAgent(t, "server", nil, args...)
	serverAddr := server.listening(t)
	deepArgs := withFlag(withFlag(k.clientArgs(serverAddr), "--cert", filepath.Join(dir, "deep.crt")), "--key", filepath.Join(dir, "deep.key"))
	deep := startAgent(t, "deep", nil, deepArgs...).listening(t)
	c := connectedApp(t, deep)

	mustRunBinary(t, "certs", "revoke", "--dir", dir, "--ca-name", "corp", "--cert", filepath.Join(dir, "deep.crt"))
	mustRunBinary(t, "certs", "crl", "--dir", dir, "--ca-name", "corp")
	expectResetOn(t, c)
	server.waitLog(t, "closing session: peer no longer passes verification", "peer", "CN=deep", "reason", "revoked")
	expectReset(t, deep)
	server.waitLog(t, "handshake failed", "reason", "revoked")
}
