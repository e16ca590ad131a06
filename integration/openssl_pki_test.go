package integration

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mtunnel/mtunnel/certs"
	"github.com/mtunnel/mtunnel/certs/certstest"
	"github.com/mtunnel/mtunnel/client"
	"github.com/mtunnel/mtunnel/server"
	"github.com/mtunnel/mtunnel/tunnel"
)

// opensslConf is the configuration of every openssl command below: "req"
// for the root and the requests, "x509 -req" for the intermediate (as an
// extfile), and a minimal "ca" whose database lets the intermediate issue
// the leaves, revoke one and publish a CRL.
const opensslConf = `
[ req ]
distinguished_name = req_dn
[ req_dn ]

[ root_ext ]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ intermediate_ext ]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[ ca ]
default_ca = intermediate_ca

[ intermediate_ca ]
database = index.txt
new_certs_dir = issued
certificate = intermediate.crt
private_key = intermediate.key
serial = serial
crlnumber = crlnumber
default_md = sha256
default_days = 1
default_crl_days = 1
policy = policy_cn
unique_subject = no
crl_extensions = crl_ext

[ policy_cn ]
commonName = supplied

[ crl_ext ]
authorityKeyIdentifier = keyid:always

[ server_ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
authorityKeyIdentifier = keyid

[ client_ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid

# A client leaf without extendedKeyUsage, which x509 verification lets
# pass for every purpose and mtunnel must refuse.
[ no_eku_ext ]
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
authorityKeyIdentifier = keyid
`

// opensslPKI is a root CA, an intermediate CA under it and leaves issued
// by the intermediate, all made by the openssl command: a PKI that mtunnel
// did not make, in the file formats openssl writes (PKCS#8 keys from
// genpkey, SEC 1 keys with an EC PARAMETERS block from ecparam).
type opensslPKI struct {
	bin, dir string
}

func newOpenSSLPKI(t *testing.T) *opensslPKI {
	t.Helper()
	p := &opensslPKI{bin: certstest.NeedOpenSSL(t), dir: t.TempDir()}
	p.write(t, "openssl.cnf", opensslConf)
	p.write(t, "index.txt", "")
	p.write(t, "serial", "1000\n")
	p.write(t, "crlnumber", "01\n")
	if err := os.Mkdir(filepath.Join(p.dir, "issued"), 0o700); err != nil {
		t.Fatal(err)
	}

	p.run(t, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "root.key")
	p.run(t, "req", "-x509", "-new", "-config", "openssl.cnf", "-extensions", "root_ext",
		"-key", "root.key", "-subj", "/O=OpenSSL made/CN=OpenSSL Test Root", "-sha256", "-days", "2", "-out", "root.crt")

	p.run(t, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "intermediate.key")
	p.run(t, "req", "-new", "-config", "openssl.cnf", "-key", "intermediate.key",
		"-subj", "/O=OpenSSL made/CN=OpenSSL Test Intermediate", "-out", "intermediate.csr")
	p.run(t, "x509", "-req", "-in", "intermediate.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial",
		"-extfile", "openssl.cnf", "-extensions", "intermediate_ext", "-sha256", "-days", "2", "-out", "intermediate.crt")
	return p
}

func (p *opensslPKI) write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(p.dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (p *opensslPKI) file(name string) string { return filepath.Join(p.dir, name) }

// run runs openssl in p.dir with p's configuration as the default one, so
// that the system's openssl.cnf plays no part.
func (p *opensslPKI) run(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(p.bin, args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), "OPENSSL_CONF="+p.file("openssl.cnf"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %q: %v\n%s", args, err, out)
	}
}

// leaf has the intermediate issue a certificate for cn with the extensions
// of section ext, and loads it as an agent would: the leaf file with the
// intermediate appended, and the key.
func (p *opensslPKI) leaf(t *testing.T, name, cn, ext string) tls.Certificate {
	t.Helper()
	p.run(t, "ecparam", "-genkey", "-name", "prime256v1", "-out", name+".key")
	p.run(t, "req", "-new", "-config", "openssl.cnf", "-key", name+".key", "-subj", "/CN="+cn, "-out", name+".csr")
	p.run(t, "ca", "-batch", "-config", "openssl.cnf", "-extensions", ext, "-notext",
		"-in", name+".csr", "-out", name+".crt")
	leafPEM, err := os.ReadFile(p.file(name + ".crt"))
	if err != nil {
		t.Fatal(err)
	}
	interPEM, err := os.ReadFile(p.file("intermediate.crt"))
	if err != nil {
		t.Fatal(err)
	}
	p.write(t, name+"-chain.crt", string(leafPEM)+string(interPEM))
	pair, err := certs.LoadKeyPair(p.file(name+"-chain.crt"), p.file(name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// revoke revokes the leaf name for keyCompromise in the intermediate's
// database and returns the CRL openssl then publishes, as loaded by
// mtunnel.
func (p *opensslPKI) revoke(t *testing.T, name string) *certs.CRL {
	t.Helper()
	p.run(t, "ca", "-config", "openssl.cnf", "-revoke", name+".crt", "-crl_reason", "keyCompromise")
	p.run(t, "ca", "-config", "openssl.cnf", "-gencrl", "-out", "intermediate.crl")
	_, cas, err := certs.LoadPool(p.file("intermediate.crt"))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := certs.LoadCRL(p.file("intermediate.crl"), cas)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// TestOpenSSLMadePKI runs both agents on certificates that openssl made:
// the chain through the intermediate verifies both ways, a client leaf
// without extendedKeyUsage is refused, and openssl's CRL is honoured.
func TestOpenSSLMadePKI(t *testing.T) {
	p := newOpenSSLPKI(t)
	roots, _, err := certs.LoadPool(p.file("root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	serverCert := p.leaf(t, "server", "localhost", "server_ext")
	app := p.leaf(t, "app", "app", "client_ext")
	noEKU := p.leaf(t, "noeku", "app", "no_eku_ext")
	revoked := p.leaf(t, "revoked", "revoked", "client_ext")
	crl := p.revoke(t, "revoked")
	if _, ok := crl.Revoked(revoked.Leaf.SerialNumber); !ok {
		t.Fatalf("openssl's CRL does not list serial %s", revoked.Leaf.SerialNumber)
	}
	crls, err := (&certs.CRLSet{}).Update(crl)
	if err != nil {
		t.Fatal(err)
	}

	logs := newLogSink(t)
	w := &world{logs: logs, echoAddr: backend(t, echo)}
	w.serverAddr = startServer(t, server.Config{
		TLS: tunnel.TLSPolicy{Credentials: creds(serverCert, roots),
			Revocation: &tunnel.Revocation{CRLs: func() *certs.CRLSet { return crls }, Logger: logs.logger("server")}},
		Routes: map[string]server.Route{"default": {Target: w.echoAddr, ACL: tunnel.ACL{Rules: []tunnel.Rule{{CN: "app"}, {CN: "revoked"}}}}},
		Logger: logs.logger("server"),
	})
	startOpenSSLClient := func(cert tls.Certificate, serverName string) string {
		return startClient(t, client.Config{
			Servers: []string{w.serverAddr},
			TLS:     tunnel.TLSPolicy{Credentials: creds(cert, roots), ServerName: serverName},
			Routes:  []client.Route{{}},
			Logger:  logs.logger("client"),
		})[0]
	}

	// The server's certificate matches by its DNS SAN and, with no server
	// name given, by its IP SAN (the client then uses the host it dials).
	w.goodClient = startOpenSSLClient(app, "localhost")
	w.checkGood(t)
	if err := echoCheck(t, startOpenSSLClient(app, ""), 64<<10); err != nil {
		t.Fatalf("server verified by its IP SAN: %v\n%s", err, logs.dump())
	}

	t.Run("no extended key usage", func(t *testing.T) {
		if len(noEKU.Leaf.ExtKeyUsage) != 0 || noEKU.Leaf.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Fatalf("openssl made EKU %v, key usage %v; want none and digitalSignature", noEKU.Leaf.ExtKeyUsage, noEKU.Leaf.KeyUsage)
		}
		expectReset(t, startOpenSSLClient(noEKU, "localhost"))
		logs.waitFor(t, string(tunnel.ReasonWrongUsage), handshakeFailed(tunnel.ReasonWrongUsage))
		w.checkGood(t)
	})

	t.Run("revoked by openssl's CRL", func(t *testing.T) {
		expectReset(t, startOpenSSLClient(revoked, "localhost"))
		logs.waitFor(t, string(tunnel.ReasonRevoked), handshakeFailed(tunnel.ReasonRevoked))
		w.checkGood(t)
	})
}
