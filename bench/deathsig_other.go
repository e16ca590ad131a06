//go:build !linux

package main

import "os/exec"

// dieWithBench is Linux only (Pdeathsig): elsewhere a process the bench
// started outlives a bench that is killed, though not one that exits.
func dieWithBench(*exec.Cmd) {}
