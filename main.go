// Command mtunnel is a transparent TCP tunnel over mutually authenticated
// TLS, multiplexing many connections on one session with yamux.
//
// This package is the only one that knows about flags, environment
// variables, YAML files and exit codes; it turns them into client.Config and
// server.Config and calls Run.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// run executes the CLI and returns the process exit code: 0 on success, 2
// for usage and configuration errors, 1 for anything else.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp(stdout, stderr)
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "mtunnel:", err)
	var ce *configError
	var ec cli.ExitCoder
	switch {
	case errors.As(err, &ce):
		return 2
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return 1
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "mtunnel",
		Usage:     "a TCP tunnel over mutual TLS, many connections on one session",
		Version:   version,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags:     logFlags(),
		Commands: []*cli.Command{
			serverCommand(),
			clientCommand(),
			certsCommand(),
			statusCommand(),
			demoCommand(),
			versionCommand(),
		},
		// Usage errors (unknown flag, bad value) are configuration errors.
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return configErr(err) },
		ExitErrHandler: func(*cli.Context, error) {
			// run decides exit codes; never let urfave/cli call os.Exit.
		},
	}
}

// configError marks an error in flags, environment or config files; the
// process exits 2 for it.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func configErr(err error) error {
	if err == nil {
		return nil
	}
	return &configError{err}
}

func configErrorf(format string, args ...any) error {
	return &configError{fmt.Errorf(format, args...)}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintln(c.App.Writer, "mtunnel", version)
			return nil
		},
	}
}
