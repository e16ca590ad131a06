package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

// defaultStatusAddr is where `mtunnel status` looks when neither --admin
// nor MTUNNEL_ADMIN says otherwise. Agents serve no admin endpoint unless
// told to; the README runs them with --admin on this address.
const defaultStatusAddr = "127.0.0.1:9190"

// expiryWarning is how close to expiry a certificate is highlighted.
const expiryWarning = 30 // days

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show a running agent's sessions, routes, certificates and revocation data, from its admin endpoint",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "admin", Value: defaultStatusAddr, Usage: "the agent's admin endpoint `ADDR` (its --admin)", EnvVars: env("ADMIN")},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON, for scripts"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "how long to wait for the agent's answer"},
		},
		OnUsageError: onUsageError,
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			body, err := fetchStatus(c.Context, c.String("admin"), c.Duration("timeout"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				_, err := c.App.Writer.Write(body)
				return err
			}
			var r statusReport
			if err := json.Unmarshal(body, &r); err != nil {
				return fmt.Errorf("status from %s: %w", c.String("admin"), err)
			}
			printStatus(c.App.Writer, r, colors(c.App.Writer))
			return nil
		},
	}
}

// fetchStatus reads /status from the admin endpoint at addr.
func fetchStatus(ctx context.Context, addr string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := "http://" + addr + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, configErrorf("--admin %q: %w", addr, err)
	}
	req.Close = true // one request: leave no idle connection behind
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue *neturl.Error // "Get URL: dial tcp ...": the URL is ours, the cause is what matters
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("no agent answers at %s: %w (start the agent with --admin %s, or give status the address of its --admin)", addr, err, addr)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("status from %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status from %s: %s (is this an mtunnel admin endpoint?)", url, resp.Status)
	}
	return body, nil
}

// palette colours the output of a terminal; the zero palette is plain.
// Every code is 5 bytes: tabwriter counts them as text, so each line of a
// table starts with one (plain for the lines without colour) to keep the
// columns aligned, and the reset goes after the last column.
type palette struct{ plain, warn, bad, reset string }

// colors returns ANSI colours when w is a terminal and NO_COLOR is unset
// (no-color.org).
func colors(w io.Writer) palette {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return palette{}
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return palette{}
	}
	return palette{plain: "\x1b[39m", warn: "\x1b[33m", bad: "\x1b[31m", reset: "\x1b[0m"}
}

func printStatus(w io.Writer, r statusReport, p palette) {
	state := "ready"
	if !r.Readiness.Ready {
		state = p.bad + "NOT READY: " + r.Readiness.Reason + p.reset
	}
	fmt.Fprintf(w, "mtunnel %s agent %s, up %s: %s\n", r.Agent, r.Version, age(r.Time.Sub(r.Started)), state)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	printSessions(tw, r.Sessions)
	printRoutes(tw, r.Routes)
	printCertificates(tw, r.Certificates, p)
	printRevocation(tw, r)
	tw.Flush()
}

func printSessions(tw io.Writer, sessions []statusSession) {
	fmt.Fprintf(tw, "\nSESSIONS (%d)\n", len(sessions))
	if len(sessions) > 0 {
		fmt.Fprintln(tw, "  ID\tPEER\tREMOTE\tAGE\tSTREAMS\tTOTAL\tUP\tDOWN")
	}
	for _, s := range sessions {
		note := ""
		if s.Draining {
			note = "  draining"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%d\t%s\t%s%s\n", s.ID, s.Peer, s.Remote,
			age(fromSeconds(s.AgeSeconds)), s.Streams, s.StreamsTotal, size(s.BytesUp), size(s.BytesDown), note)
	}
}

func printRoutes(tw io.Writer, routes []statusRoute) {
	fmt.Fprintln(tw, "\nROUTES")
	fmt.Fprintln(tw, "  ROUTE\tOPEN\tTOTAL\tOK\tDENIED\tFAILED\tUP\tDOWN")
	for _, rt := range routes {
		name := rt.Route
		if name == "" {
			name = "(none)" // streams that named no configured route
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", name, rt.Open, rt.Total, rt.OK, rt.Denied, rt.Failed, size(rt.Up), size(rt.Down))
	}
}

// printCertificates marks with "!" (and colours on a terminal) the
// certificates that expire within expiryWarning days or have expired.
func printCertificates(tw io.Writer, certs []statusCert, p palette) {
	fmt.Fprintln(tw, "\nCERTIFICATES")
	fmt.Fprintf(tw, "%s  ROLE\tSUBJECT\tNOT AFTER\tDAYS LEFT\n", p.plain)
	for _, c := range certs {
		lead, mark, end := p.plain, " ", ""
		switch {
		case c.DaysLeft < 0:
			lead, mark, end = p.bad, "!", p.reset
		case c.DaysLeft < expiryWarning:
			lead, mark, end = p.warn, "!", p.reset
		}
		fmt.Fprintf(tw, "%s%s %s\t%s\t%s\t%d%s\n", lead, mark, c.Role, c.Subject, c.NotAfter.UTC().Format(time.DateOnly), c.DaysLeft, end)
	}
}

func printRevocation(tw io.Writer, r statusReport) {
	fmt.Fprintln(tw, "\nREVOCATION")
	if len(r.CRLs) == 0 && r.OCSPStaple == nil {
		fmt.Fprintln(tw, "  no CRL loaded, no OCSP staple")
	}
	for _, c := range r.CRLs {
		next := "none"
		if !c.NextUpdate.IsZero() {
			next = c.NextUpdate.UTC().Format(time.DateTime) + " UTC"
		}
		fmt.Fprintf(tw, "  CRL %s\t%s\tage %s\tnext update %s\t%d revoked\n", c.Issuer, c.File, age(fromSeconds(c.AgeSeconds)), next, c.Revoked)
	}
	if s := r.OCSPStaple; s != nil {
		fmt.Fprintf(tw, "  OCSP staple\t%s\tage %s\n", s.Status, age(fromSeconds(s.AgeSeconds)))
	}
}

func fromSeconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// age writes a duration the way people read one: "45s", "3m12s", "5h4m",
// "12d3h".
func age(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return d.String()
	case d < time.Hour:
		return strings.TrimSuffix(d.String(), "0s")
	case d < 24*time.Hour:
		return strings.TrimSuffix(d.Truncate(time.Minute).String(), "0s")
	}
	days := d / (24 * time.Hour)
	return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
}

// size writes a byte count in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, u := float64(n)/unit, 0
	for v >= unit && u < 3 {
		v, u = v/unit, u+1
	}
	return fmt.Sprintf("%.1f%s", v, []string{"KiB", "MiB", "GiB", "TiB"}[u])
}
