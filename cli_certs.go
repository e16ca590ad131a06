package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
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
			"ca.key (keep it secret; agents never need it) and NAME.crt / NAME.key pairs.",
		Subcommands: []*cli.Command{certsInitCommand(), certsIssueCommand()},
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
			"   [--dns HOST]... [--ip ADDR]... [--uri URI]... [--valid-for DURATION]",
		Flags: []cli.Flag{
			certsDirFlag(),
			&cli.StringFlag{Name: "name", Usage: "common `NAME`, also the base name of NAME.crt and NAME.key", EnvVars: []string{"MTUNNEL_NAME"}},
			&cli.BoolFlag{Name: "server", Usage: "for a server agent (ServerAuth)", EnvVars: []string{"MTUNNEL_SERVER"}},
			&cli.BoolFlag{Name: "client", Usage: "for a client agent (ClientAuth)", EnvVars: []string{"MTUNNEL_CLIENT"}},
			&cli.StringSliceFlag{Name: "dns", Usage: "`HOST` name clients dial (server; default: NAME)", EnvVars: []string{"MTUNNEL_DNS"}},
			&cli.StringSliceFlag{Name: "ip", Usage: "IP `ADDR`ess clients dial (server)", EnvVars: []string{"MTUNNEL_IP"}},
			&cli.StringSliceFlag{Name: "uri", Usage: "`URI` identity, e.g. spiffe://domain/name", EnvVars: []string{"MTUNNEL_URI"}},
			&cli.DurationFlag{Name: "valid-for", Value: certs.DefaultLeafValidity, Usage: "certificate validity `DURATION`", EnvVars: []string{"MTUNNEL_VALID_FOR"}},
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
	req, err := certsRequest(c, name)
	if err != nil {
		return err
	}
	ca, err := certs.LoadCA(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("certs issue: %w (create a CA first: mtunnel certs init --dir %s)", err, dir)
	} else if err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	leaf, err := ca.Issue(req)
	if errors.Is(err, certs.ErrInvalidRequest) {
		return certsUsage(c, "%v", err)
	} else if err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	if err := certs.WriteLeaf(dir, name, leaf); err != nil {
		return fmt.Errorf("certs issue: %w", err)
	}
	certsPrintLeaf(c.App.Writer, dir, name, leaf)
	if leaf.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		fmt.Fprintln(c.App.Writer, "note: validity capped at the CA's expiry; renew the CA before then")
	}
	return nil
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
	req := certs.Request{
		Name:     name,
		Server:   c.Bool("server"),
		Client:   c.Bool("client"),
		DNS:      c.StringSlice("dns"),
		ValidFor: c.Duration("valid-for"),
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

func certsPrintLeaf(w io.Writer, dir, name string, leaf *certs.Leaf) {
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
	fmt.Fprintf(w, "wrote %s  certificate %q, roles %s, valid until %s\n",
		certFile, certs.Identity(leaf.Cert), strings.Join(roles, "+"), leaf.Cert.NotAfter.UTC().Format(time.DateOnly))
	if sans := certsSANs(leaf); sans != "" {
		fmt.Fprintf(w, "      names clients may dial: %s\n", sans)
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
