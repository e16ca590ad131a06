package main

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log format: text or json", EnvVars: []string{"MTUNNEL_LOG_FORMAT"}},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log level: debug, info, warn or error", EnvVars: []string{"MTUNNEL_LOG_LEVEL"}},
	}
}

// newLogger builds the process logger from the global flags. Logs go to
// stderr so stdout stays free for command output.
func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if s := logFlag(c, "log-level"); level.UnmarshalText([]byte(s)) != nil {
		return nil, configErrorf("--log-level %q: want debug, info, warn or error", s)
	}
	return buildLogger(c.App.ErrWriter, logFlag(c, "log-format"), level)
}

// logFlag returns a log flag from the innermost command that set it: the
// flags exist both before and after the command name, and the command's
// own default must not hide a value given before it.
func logFlag(c *cli.Context, name string) string {
	for _, ctx := range c.Lineage() {
		if slices.Contains(ctx.LocalFlagNames(), name) {
			return ctx.String(name)
		}
	}
	return c.String(name)
}

func buildLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, configErr(fmt.Errorf("--log-format %q: want text or json", format))
}
