package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mtunnel/mtunnel/certs"
)

// certsUsageExit is the exit status of a command-line mistake, as opposed to
// a failure while doing the work (status 1).
const certsUsageExit = 2

// certsCommand returns "mtunnel certs": a small private CA for the
// certificates agents use, so a first deployment needs no openssl.
func certsCommand() *cli.Command {
	return &cli.Command{
		Name:  "certs",
		Usage: "create a certificate authority and issue agent certificates",
		Description: "A certificate directory holds ca.crt (give it to every agent as its trust bundle),\n" +
			"ca.key (keep it secret; agents never need it), NAME.crt / NAME.key pairs (leaves\n" +
			"and intermediate CAs), index.txt (every certificate issued, and which are revoked;\n" +
			"OpenSSL's format) and ca.crl (the revocation list agents load with --crl).",
		Subcommands: []*cli.Command{
			certsInitCommand(), certsIssueCommand(), certsRevokeCommand(), certsCRLCommand(), certsShowCommand(),
		},
	}
}

func certsDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "dir", Usage: "`DIR` holding ca.crt, ca.key and issued pairs", EnvVars: []string{"MTUNNEL_DIR"}}
}

func certsInitCommand() *cli.Command {
	return &cli.Command{
		Name:      "init",
		Usage:     "create a CA: DIR/ca.crt and DIR/ca.key",
		UsageText: "mtunnel certs init --dir DIR [--name NAME] [--valid-for DURATION] [--force]",
		Flags: []cli.Flag{
			certsDirFlag(),
			&cli.StringFlag{Name: "name", Value: "mtunnel CA", Usage: "CA common `NAME`", EnvVars: []string{"MTUNNEL_NAME"}},
			&cli.DurationFlag{Name: "valid-for", Value: 87600 * time.Hour, Usage: "CA validity `DURATION`", EnvVars: []string{"MTUNNEL_VALID_FOR"}},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing CA (certificates it issued stop working)", EnvVars: []string{"MTUNNEL_FORCE"}},
		},
		OnUsageError: certsOnUsageError,
		Action:       certsInit,
	}
}

func certsInit(c *cli.Context) error {
	dir := c.String("dir")
	if err := certsCheckArgs(c, dir); err != nil {
		return err
	}
	if c.Duration("valid-for") <= 0 {
		return certsUsage(c, "--valid-for must be positive, got %v", c.Duration("valid-for"))
	}
	ca, err := certs.NewCA(c.String("name"), c.Duration("valid-for"))
	if err != nil {
		return fmt.Errorf("certs init: %w", err)
	}
	if err := certs.WriteCA(dir, ca, c.Bool("force")); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("certs init: %w (pass --force to replace it; certificates it issued will stop working)", err)
		}
		return fmt.Errorf("certs init: %w", err)
	}
	certFile, keyFile := certs.CAFiles(dir)
	w := c.App.Writer
	fmt.Fprintf(w, "wrote %s  CA certificate %q, valid until %s: the trust bundle for every agent\n",
		certFile, certs.Identity(ca.Cert), ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	fmt.Fprintf(w, "wrote %s  CA private key (mode 0600): keep it secret; agents never need it\n", keyFile)
	return nil
}

func certsIssueCommand() *cli.Command {
	return &cli.Command{
		Name:  "issue",
		Usage: "issue a certificate signed by the CA in DIR: DIR/NAME.crt and DIR/NAME.key",
		UsageText: "mtunnel certs issue --dir DIR --name NAME [--server] [--client]\n" +
			"   [--dns HOST]... [--ip ADDR]... [--uri URI]... [--valid-for DURATION]\n" +
			"   [--ca-name INTERMEDIATE] [--ocsp-url URL]... [--crl-url URL]...\n" +
			"mtunnel certs issue --dir DIR --name NAME --intermediate [--permitted-dns DOMAIN]...\n" +
			"   [--valid-for DURATION] [--ocsp-url URL]... [--crl-url URL]...",
		Flags: []cli.Flag{
			certsDirFlag(),
			&cli.StringFlag{Name: "name", Usage: "common `NAME`, also the base name of NAME.crt and NAME.key", EnvVars: []string{"MTUNNEL_NAME"}},
			&cli.BoolFlag{Name: "server", Usage: "for a server agent (ServerAuth)", EnvVars: []string{"MTUNNEL_SERVER"}},
			&cli.BoolFlag{Name: "client", Usage: "for a client agent (ClientAuth)", EnvVars: []string{"MTUNNEL_CLIENT"}},
			&cli.StringSliceFlag{Name: "dns", Usage: "`HOST` name clients dial (server; default: NAME)", EnvVars: []string{"MTUNNEL_DNS"}},
			&cli.StringSliceFlag{Name: "ip", Usage: "IP `ADDR`ess clients dial (server)", EnvVars: []string{"MTUNNEL_IP"}},
			&cli.StringSliceFlag{Name: "uri", Usage: "`URI` identity, e.g. spiffe://domain/name", EnvVars: []string{"MTUNNEL_URI"}},
			&cli.DurationFlag{Name: "valid-for", Value: certs.DefaultLeafValidity, Usage: "certificate validity `DURATION` (an intermediate's default: 5 years)", EnvVars: []string{"MTUNNEL_VALID_FOR"}},
			&cli.BoolFlag{Name: "intermediate", Usage: "issue an intermediate CA that may sign leaf certificates, instead of a leaf", EnvVars: []string{"MTUNNEL_INTERMEDIATE"}},
			&cli.StringSliceFlag{Name: "permitted-dns", Usage: "limit an intermediate's leaves to DNS names in `DOMAIN` (.DOMAIN: subdomains only)", EnvVars: []string{"MTUNNEL_PERMITTED_DNS"}},
			&cli.StringFlag{Name: "ca-name", Usage: "issue from the intermediate CA DIR/`INTERMEDIATE`.crt instead of DIR/ca.crt", EnvVars: []string{"MTUNNEL_CA_NAME"}},
			&cli.StringSliceFlag{Name: "ocsp-url", Usage: "OCSP responder `URL` written into the certificate", EnvVars: []string{"MTUNNEL_OCSP_URL"}},
			&cli.StringSliceFlag{Name: "crl-url", Usage: "`URL` where the CA's CRL is published, written into the certificate", EnvVars: []string{"MTUNNEL_CRL_URL"}},
		},
		OnUsageError: certsOnUsageError,
		Action:       certsIssue,
	}
}

func certsIssue(c *cli.Context) error {
	dir, name := c.String("dir"), c.String("name")
	if err := certsCheckArgs(c, dir); err != nil {
		return err
	}
	if c.Bool("intermediate") {
		return certsIssueIntermediate(c, dir, name)
	}
	req, err := certsRequest(c, name)
	if err != nil {
		return err
	}
	ca, chain, err := certsLoadIssuer(c, dir)
	if err != nil {
		return err
	}
	leaf, err := ca.Issue(req)
	if errors.Is(err, certs.ErrInvalidRequest) {
		return certsUsage(c, "%v", err)
	} else if err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	if err := certsCheckUnderIntermediate(c, leaf.Cert, chain); err != nil {
		return err
	}
	// Recorded before the files are written: a certificate may exist in
	// the index and nowhere else, never the other way round, so whatever
	// is out there can be revoked.
	if err := certs.RecordIssued(certs.IndexFile(dir), leaf.Cert); err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	if err := certs.WriteLeafChain(dir, name, leaf, chain...); err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	certsPrintLeaf(c.App.Writer, dir, name, leaf, chain)
	if leaf.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		fmt.Fprintln(c.App.Writer, "note: validity capped at the CA's expiry; renew the CA before then")
	}
	return nil
}

// certsLoadIssuer loads the CA that --ca-name names, or DIR's root CA, and
// the chain that certificates it issues must carry (none for the root).
func certsLoadIssuer(c *cli.Context, dir string) (*certs.CA, []*x509.Certificate, error) {
	caName := c.String("ca-name")
	if caName == "" {
		ca, err := certs.LoadCA(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("certs issue: %w (create a CA first: mtunnel certs init --dir %s)", err, dir)
		} else if err != nil {
			return nil, nil, fmt.Errorf("certs issue: %w", err)
		}
		return ca, nil, nil
	}
	if err := certs.ValidateFileName(caName); err != nil {
		return nil, nil, certsUsage(c, "--ca-name: %v (omit --ca-name to issue from the root CA)", err)
	}
	ca, chain, err := certs.LoadIntermediate(dir, caName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("certs issue: %w (issue it first: mtunnel certs issue --dir %s --name %s --intermediate)", err, dir, caName)
	} else if err != nil {
		return nil, nil, fmt.Errorf("certs issue: %w", err)
	}
	return ca, chain, nil
}

// certsCheckUnderIntermediate verifies a certificate issued from an
// intermediate up to the top of the intermediate's chain, so that a leaf
// the intermediate's name constraints forbid is refused here rather than
// by every peer later.
func certsCheckUnderIntermediate(c *cli.Context, cert *x509.Certificate, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return nil
	}
	top := chain[len(chain)-1]
	pool := x509.NewCertPool()
	pool.AddCert(top)
	err := certs.VerifyChain(cert, chain[:len(chain)-1], pool, x509.ExtKeyUsageAny)
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &invalid) && invalid.Reason == x509.CANotAuthorizedForThisName:
		return certsUsage(c, "intermediate CA %q may not certify these names (its name constraints: %s): %s",
			certs.Identity(chain[0]), strings.Join(chain[0].PermittedDNSDomains, ", "), invalid.Detail)
	}
	return fmt.Errorf("certs issue: the new certificate would not verify, nothing written: %w", err)
}

func certsIssueIntermediate(c *cli.Context, dir, name string) error {
	req, err := certsIntermediateRequest(c, name)
	if err != nil {
		return err
	}
	parent, chain, err := certsLoadIssuer(c, dir)
	if err != nil {
		return err
	}
	sub, err := parent.IssueIntermediate(req)
	if errors.Is(err, certs.ErrInvalidRequest) {
		return certsUsage(c, "%v", err)
	} else if err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	if err := certs.RecordIssued(certs.IndexFile(dir), sub.Cert); err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	if err := certs.WriteIntermediate(dir, name, sub, chain...); err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	certFile, keyFile := certs.LeafFiles(dir, name)
	w := c.App.Writer
	limit := "any names"
	if len(sub.Cert.PermittedDNSDomains) > 0 {
		limit = "DNS names in " + strings.Join(sub.Cert.PermittedDNSDomains, ", ")
	}
	fmt.Fprintf(w, "wrote %s  intermediate CA %q for %s (leaf certificates only), serial %s, valid until %s\n",
		certFile, certs.Identity(sub.Cert), limit, certs.SerialString(sub.Cert.SerialNumber), sub.Cert.NotAfter.UTC().Format(time.DateOnly))
	fmt.Fprintf(w, "wrote %s  its private key (mode 0600): keep it secret\n", keyFile)
	fmt.Fprintf(w, "issue certificates from it with: mtunnel certs issue --dir %s --ca-name %s --name NAME ...\n", dir, name)
	return nil
}

// certsIntermediateRequest turns the issue flags into a
// certs.IntermediateRequest, refusing the flags that only suit leaves.
func certsIntermediateRequest(c *cli.Context, name string) (certs.IntermediateRequest, error) {
	if name == "" {
		return certs.IntermediateRequest{}, certsUsage(c, "--name is required (or set MTUNNEL_NAME)")
	}
	if err := certs.ValidateFileName(name); err != nil {
		return certs.IntermediateRequest{}, certsUsage(c, "--name: %v", err)
	}
	for _, f := range []string{"server", "client", "dns", "ip", "uri"} {
		if c.IsSet(f) {
			return certs.IntermediateRequest{}, certsUsage(c,
				"--%s cannot be used with --intermediate: an intermediate CA signs certificates and serves no role itself; issue leaves from it with --ca-name %s", f, name)
		}
	}
	req := certs.IntermediateRequest{
		Name:                  name,
		PermittedDNS:          c.StringSlice("permitted-dns"),
		OCSPServer:            c.StringSlice("ocsp-url"),
		CRLDistributionPoints: c.StringSlice("crl-url"),
	}
	// The leaf default (90 days) is far too short for a CA; an unset
	// --valid-for leaves the choice to the library.
	if c.IsSet("valid-for") {
		if req.ValidFor = c.Duration("valid-for"); req.ValidFor <= 0 {
			return certs.IntermediateRequest{}, certsUsage(c, "--valid-for must be positive, got %v", req.ValidFor)
		}
	}
	return req, nil
}

// certsRequest turns the issue flags into a certs.Request, reporting flag
// mistakes as usage errors.
func certsRequest(c *cli.Context, name string) (certs.Request, error) {
	if name == "" {
		return certs.Request{}, certsUsage(c, "--name is required (or set MTUNNEL_NAME)")
	}
	if err := certs.ValidateFileName(name); err != nil {
		return certs.Request{}, certsUsage(c, "--name: %v", err)
	}
	if c.IsSet("permitted-dns") {
		return certs.Request{}, certsUsage(c, "--permitted-dns only applies with --intermediate: name constraints limit what a CA may sign")
	}
	req := certs.Request{
		Name:                  name,
		Server:                c.Bool("server"),
		Client:                c.Bool("client"),
		DNS:                   c.StringSlice("dns"),
		ValidFor:              c.Duration("valid-for"),
		OCSPServer:            c.StringSlice("ocsp-url"),
		CRLDistributionPoints: c.StringSlice("crl-url"),
	}
	if !req.Server && !req.Client {
		return certs.Request{}, certsUsage(c, "give --server, --client or both: the role decides which side of a tunnel the certificate can authenticate")
	}
	if req.ValidFor <= 0 {
		return certs.Request{}, certsUsage(c, "--valid-for must be positive, got %v", req.ValidFor)
	}
	for _, s := range c.StringSlice("ip") {
		ip := net.ParseIP(s)
		if ip == nil {
			return certs.Request{}, certsUsage(c, "--ip %q is not an IP address", s)
		}
		req.IPs = append(req.IPs, ip)
	}
	for _, s := range c.StringSlice("uri") {
		u, err := url.Parse(s)
		if err != nil {
			return certs.Request{}, certsUsage(c, "--uri %q: %v", s, err)
		}
		req.URIs = append(req.URIs, u)
	}
	return req, nil
}

func certsPrintLeaf(w io.Writer, dir, name string, leaf *certs.Leaf, chain []*x509.Certificate) {
	certFile, keyFile := certs.LeafFiles(dir, name)
	var roles []string
	for _, u := range leaf.Cert.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			roles = append(roles, "server")
		case x509.ExtKeyUsageClientAuth:
			roles = append(roles, "client")
		}
	}
	fmt.Fprintf(w, "wrote %s  certificate %q, roles %s, serial %s, valid until %s\n",
		certFile, certs.Identity(leaf.Cert), strings.Join(roles, "+"), certs.SerialString(leaf.Cert.SerialNumber),
		leaf.Cert.NotAfter.UTC().Format(time.DateOnly))
	if sans := certsSANs(leaf); sans != "" {
		fmt.Fprintf(w, "      names clients may dial: %s\n", sans)
	}
	for _, ca := range chain {
		fmt.Fprintf(w, "      followed by intermediate CA %q: peers need it to reach ca.crt\n", certs.Identity(ca))
	}
	fmt.Fprintf(w, "wrote %s  private key (mode 0600)\n", keyFile)
}

func certsSANs(leaf *certs.Leaf) string {
	names := append([]string(nil), leaf.Cert.DNSNames...)
	for _, ip := range leaf.Cert.IPAddresses {
		names = append(names, ip.String())
	}
	return strings.Join(names, ", ")
}

func certsRevokeCommand() *cli.Command {
	return &cli.Command{
		Name:      "revoke",
		Usage:     "record in DIR/index.txt that a certificate the CA in DIR issued is revoked",
		UsageText: "mtunnel certs revoke --dir DIR --cert FILE [--reason REASON] [--ca-name INTERMEDIATE]",
		Description: "Revocation takes effect for agents once the CRL is regenerated (mtunnel certs crl)\n" +
			"and loaded with --crl. A certificate an intermediate CA issued is revoked with\n" +
			"--ca-name INTERMEDIATE, recorded in DIR/INTERMEDIATE.index.txt, and listed in that\n" +
			"intermediate's own CRL. REASON is an RFC 5280 reason: unspecified, keyCompromise,\n" +
			"CACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold,\n" +
			"privilegeWithdrawn or AACompromise.",
		Flags: []cli.Flag{
			certsDirFlag(),
			// Not MTUNNEL_CERT: agents read their own certificate from that
			// variable, and revoking it by accident cannot be undone.
			&cli.StringFlag{Name: "cert", Usage: "certificate `FILE` to revoke (its first certificate)", EnvVars: []string{"MTUNNEL_REVOKE_CERT"}},
			&cli.StringFlag{Name: "reason", Value: "unspecified", Usage: "revocation `REASON`", EnvVars: []string{"MTUNNEL_REASON"}},
			certsCANameFlag("revoke a certificate the intermediate CA DIR/`INTERMEDIATE`.crt issued"),
		},
		OnUsageError: certsOnUsageError,
		Action:       certsRevoke,
	}
}

func certsRevoke(c *cli.Context) error {
	dir, file := c.String("dir"), c.String("cert")
	if err := certsCheckArgs(c, dir); err != nil {
		return err
	}
	if file == "" {
		return certsUsage(c, "--cert is required: the certificate file to revoke")
	}
	reason, err := certs.ReasonCode(c.String("reason"))
	if err != nil {
		return certsUsage(c, "--reason: %v", err)
	}
	if certs.ReasonName(reason) == "removeFromCRL" {
		return certsUsage(c, "--reason removeFromCRL only has a meaning in delta CRLs, which mtunnel does not issue")
	}
	ca, files, err := certsRevocationCA(c, dir, "revoke")
	if err != nil {
		return err
	}
	cert, err := certsReadFirst(file)
	if err != nil {
		return fmt.Errorf("certs revoke: %w", err)
	}
	if err := ca.CheckIssued(cert); err != nil {
		if name := certsIssuingIntermediate(dir, cert); name != "" && c.String("ca-name") != name {
			return fmt.Errorf("certs revoke: %s was issued by the intermediate CA %s.crt: add --ca-name %s", file, name, name)
		}
		return fmt.Errorf("certs revoke: %s: %w; only certificates issued by %q can be revoked with it", file, err, certs.Identity(ca.Cert))
	}
	index := files.Index
	w := c.App.Writer
	if e, ok, err := certsIndexEntry(index, cert); err != nil {
		return fmt.Errorf("certs revoke: %w", err)
	} else if ok && e.Status == certs.IndexRevoked {
		fmt.Fprintf(w, "certificate %q (serial %s) was already revoked on %s, reason %s; nothing changed\n",
			certs.Identity(cert), certs.SerialString(cert.SerialNumber), e.RevokedAt.UTC().Format(time.DateTime), certs.ReasonName(e.Reason))
		return nil
	}
	if err := certs.RecordRevoked(index, cert, reason, time.Now()); err != nil {
		return fmt.Errorf("certs revoke: %w", err)
	}
	fmt.Fprintf(w, "revoked certificate %q (serial %s), reason %s: recorded in %s\n",
		certs.Identity(cert), certs.SerialString(cert.SerialNumber), certs.ReasonName(reason), index)
	fmt.Fprintf(w, "agents still accept it until you run 'mtunnel certs crl --dir %s%s' and they load the new %s\n",
		dir, certsCANameArg(c), files.CRL)
	return nil
}

// certsCANameFlag is --ca-name, for the commands that act for one CA.
func certsCANameFlag(usage string) cli.Flag {
	return &cli.StringFlag{Name: "ca-name", Usage: usage, EnvVars: []string{"MTUNNEL_CA_NAME"}}
}

// certsCANameArg repeats --ca-name for a command line to suggest.
func certsCANameArg(c *cli.Context) string {
	if name := c.String("ca-name"); name != "" {
		return " --ca-name " + name
	}
	return ""
}

// certsRevocationCA loads the CA whose revocations a command handles (the
// root CA in dir, or the intermediate --ca-name names) and its files.
func certsRevocationCA(c *cli.Context, dir, cmd string) (*certs.CA, certs.RevocationFiles, error) {
	name := c.String("ca-name")
	if name == "" {
		ca, err := certs.LoadCA(dir)
		if err != nil {
			return nil, certs.RevocationFiles{}, fmt.Errorf("certs %s: %w", cmd, err)
		}
		return ca, certs.RootRevocation(dir), nil
	}
	if err := certs.ValidateFileName(name); err != nil {
		return nil, certs.RevocationFiles{}, certsUsage(c, "--ca-name: %v", err)
	}
	ca, _, err := certs.LoadIntermediate(dir, name)
	if err != nil {
		return nil, certs.RevocationFiles{}, fmt.Errorf("certs %s: %w", cmd, err)
	}
	return ca, certs.IntermediateRevocation(dir, name), nil
}

// certsIssuingIntermediate returns the name of the intermediate CA in dir
// (NAME.crt with its key) that issued cert, or "".
func certsIssuingIntermediate(dir string, cert *x509.Certificate) string {
	files, _ := filepath.Glob(filepath.Join(dir, "*.crt"))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".crt")
		if name == "ca" {
			continue
		}
		if ca, _, err := certs.LoadIntermediate(dir, name); err == nil && ca.CheckIssued(cert) == nil {
			return name
		}
	}
	return ""
}

// certsReadFirst reads the first certificate of a PEM file: a leaf, even
// when the file holds its chain.
func certsReadFirst(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	chain, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return chain[0], nil
}

func certsIndexEntry(index string, cert *x509.Certificate) (certs.IndexEntry, bool, error) {
	entries, err := certs.ReadIndex(index)
	if err != nil {
		return certs.IndexEntry{}, false, err
	}
	for _, e := range entries {
		if e.Serial.Cmp(cert.SerialNumber) == 0 {
			return e, true, nil
		}
	}
	return certs.IndexEntry{}, false, nil
}

func certsCRLCommand() *cli.Command {
	return &cli.Command{
		Name:      "crl",
		Usage:     "write DIR/ca.crl: the CA's signed list of the certificates revoked in DIR/index.txt",
		UsageText: "mtunnel certs crl --dir DIR [--next-update DURATION] [--ca-name INTERMEDIATE]",
		Description: "Each CRL gets the next number from DIR/crlnumber; agents refuse a CRL older than the\n" +
			"one they hold, and one past its next update. Regenerate it well before then.\n" +
			"With --ca-name, the intermediate CA DIR/INTERMEDIATE.crt signs DIR/INTERMEDIATE.crl\n" +
			"from DIR/INTERMEDIATE.index.txt; agents load it with a second --crl, and need the\n" +
			"intermediate's certificate (--intermediates DIR/INTERMEDIATE.crt) to check it.",
		Flags: []cli.Flag{
			certsDirFlag(),
			&cli.DurationFlag{Name: "next-update", Value: 24 * time.Hour, Usage: "`DURATION` until the CRL is due to be replaced", EnvVars: []string{"MTUNNEL_NEXT_UPDATE"}},
			certsCANameFlag("write the CRL of the intermediate CA DIR/`INTERMEDIATE`.crt"),
		},
		OnUsageError: certsOnUsageError,
		Action:       certsCRL,
	}
}

func certsCRL(c *cli.Context) error {
	dir, nextUpdate := c.String("dir"), c.Duration("next-update")
	if err := certsCheckArgs(c, dir); err != nil {
		return err
	}
	if nextUpdate <= 0 {
		return certsUsage(c, "--next-update must be positive, got %v", nextUpdate)
	}
	ca, files, err := certsRevocationCA(c, dir, "crl")
	if err != nil {
		return err
	}
	// Every revoked entry belongs to this CA: certs revoke records only
	// certificates it issued.
	entries, err := certs.ReadIndex(files.Index)
	if err != nil {
		return fmt.Errorf("certs crl: %w", err)
	}
	revoked := certs.RevocationEntries(entries)
	number, err := files.NextCRLNumber()
	if err != nil {
		return fmt.Errorf("certs crl: %w", err)
	}
	now := time.Now()
	der, err := ca.CreateCRL(revoked, number, now, now.Add(nextUpdate))
	if err != nil {
		return fmt.Errorf("certs crl: %w", err)
	}
	if err := files.WriteCRL(der); err != nil {
		return fmt.Errorf("certs crl: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "wrote %s  CRL number %s of %q, %d revoked certificate(s), next update %s\n",
		files.CRL, number, certs.Identity(ca.Cert), len(revoked), now.Add(nextUpdate).UTC().Format(time.DateTime+" MST"))
	fmt.Fprintln(c.App.Writer, "copy it to every agent's --crl file and run this again before the next update")
	return nil
}

func certsShowCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "describe the certificates in FILE and, with --ca, whether they chain to that CA",
		UsageText: "mtunnel certs show FILE [--ca CAFILE]",
		ArgsUsage: "FILE",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ca", Usage: "trust bundle `CAFILE` (e.g. ca.crt) to verify FILE against", EnvVars: []string{"MTUNNEL_CA"}},
		},
		OnUsageError: certsOnUsageError,
		Action:       certsShow,
	}
}

func certsShow(c *cli.Context) error {
	file, caFile, err := certsShowArgs(c)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("certs show: %w", err)
	}
	chain, err := certs.ParseCertificatesPEM(data)
	if err != nil {
		return fmt.Errorf("certs show: %s: %w", file, err)
	}
	w, now := c.App.Writer, time.Now()
	for i, cert := range chain {
		if len(chain) > 1 {
			fmt.Fprintf(w, "Certificate %d of %d in %s:\n", i+1, len(chain), file)
		}
		fmt.Fprintln(w, certs.Describe(cert, now))
	}
	if caFile == "" {
		return nil
	}
	pool, roots, err := certs.LoadPool(caFile)
	if err != nil {
		return fmt.Errorf("certs show: %w", err)
	}
	if err := certs.VerifyChain(chain[0], chain[1:], pool, x509.ExtKeyUsageAny); err != nil {
		fmt.Fprintf(w, "NOT TRUSTED: %s\n", certsTrustProblem(err, chain, file, caFile))
		return fmt.Errorf("certs show: %s does not chain to a CA in %s", file, caFile)
	}
	anchor := certs.Identity(certs.TrustAnchor(chain, roots))
	fmt.Fprintf(w, "OK: chains to %s (%s)\n", anchor, caFile)
	return nil
}

// certsShowArgs returns the FILE argument and the --ca flag. urfave/cli
// stops parsing flags at the first argument, so the documented order
// "show FILE --ca CAFILE" leaves --ca among the arguments; it is taken
// from there.
func certsShowArgs(c *cli.Context) (file, caFile string, err error) {
	caFile = c.String("ca")
	var files []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			files = append(files, args[i+1:]...)
			i = len(args)
		case a == "--ca" || a == "-ca":
			if i+1 == len(args) {
				return "", "", certsUsage(c, "flag needs an argument: %s", a)
			}
			caFile, i = args[i+1], i+1
		case strings.HasPrefix(a, "--ca=") || strings.HasPrefix(a, "-ca="):
			caFile = a[strings.Index(a, "=")+1:]
		case strings.HasPrefix(a, "-") && a != "-":
			return "", "", certsUsage(c, "flag provided but not defined: %s", a)
		default:
			files = append(files, a)
		}
	}
	if len(files) != 1 {
		return "", "", certsUsage(c, "give exactly one certificate FILE, got %d", len(files))
	}
	return files[0], caFile, nil
}

// certsTrustProblem says in plain words why VerifyChain refused chain.
func certsTrustProblem(err error, chain []*x509.Certificate, file, caFile string) string {
	var invalid x509.CertificateInvalidError
	isInvalid := errors.As(err, &invalid)
	last := chain[len(chain)-1]
	switch {
	case errors.Is(err, certs.ErrUntrusted):
		return fmt.Sprintf("%q was issued by %q, which is not a CA in %s; if that is an intermediate CA, append its certificate to %s",
			certs.Identity(last), last.Issuer.String(), caFile, file)
	case errors.Is(err, certs.ErrExpired):
		return "it or a CA certificate in its chain is expired or not yet valid: " + invalid.Detail
	case isInvalid && invalid.Reason == x509.CANotAuthorizedForThisName:
		return "its names are outside those its issuing CA may certify (name constraints): " + invalid.Detail
	case isInvalid && invalid.Reason == x509.TooManyIntermediates:
		return "the chain has more intermediate CAs than a CA's path length allows"
	case isInvalid && invalid.Reason == x509.NotAuthorizedToSign:
		return "a certificate in the chain that signed another is not a CA"
	}
	return err.Error()
}

// certsCheckArgs rejects stray positional arguments and a missing --dir.
func certsCheckArgs(c *cli.Context, dir string) error {
	if c.NArg() > 0 {
		return certsUsage(c, "unexpected argument %q; all inputs are flags", c.Args().First())
	}
	if dir == "" {
		return certsUsage(c, "--dir is required (or set MTUNNEL_DIR)")
	}
	return nil
}

// certsUsage reports a command-line mistake with exit status 2.
func certsUsage(c *cli.Context, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return cli.Exit(fmt.Sprintf("mtunnel certs %s: %s\nrun 'mtunnel certs %s --help' for usage", c.Command.Name, msg, c.Command.Name), certsUsageExit)
}

func certsOnUsageError(c *cli.Context, err error, _ bool) error {
	return certsUsage(c, "%v", err)
}
