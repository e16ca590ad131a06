package main

import (
	"fmt"
	"io"
	"log/slog"
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
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, configErrorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
	}
	return buildLogger(c.App.ErrWriter, c.String("log-format"), level)
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
