package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
)

// sdNotify sends a state to the service manager (sd_notify(3)) when it
// asked for them by setting NOTIFY_SOCKET, as systemd does for
// Type=notify units; otherwise it does nothing. The protocol is one
// datagram of newline-separated KEY=value lines to a unix socket; Go
// turns a leading '@' into the abstract namespace, as systemd means it.
func sdNotify(state string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify service manager: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify service manager: %w", err)
	}
	return nil
}

// notifyLifecycle tells the service manager the agent is ready (it is
// listening, so a unit ordered after it can connect) and, once ctx ends
// (SIGTERM), that it is stopping while it drains. Call the returned func
// when the agent returns: it makes sure the stopping notice has gone out
// before the process exits.
func notifyLifecycle(ctx context.Context, log *slog.Logger, status string) (wait func()) {
	if err := sdNotify("READY=1\nSTATUS=" + status); err != nil {
		log.Warn("cannot notify the service manager", "err", err)
	}
	sent := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(sent)
		if err := sdNotify("STOPPING=1\nSTATUS=draining"); err != nil {
			log.Warn("cannot notify the service manager", "err", err)
		}
	})
	return func() {
		if !stop() { // ctx ended: the notice is on its way
			<-sent
		}
	}
}
