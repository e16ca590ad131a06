package main

import (
	"os/exec"
	"syscall"
)

// dieWithBench makes cmd's process die with the bench, even if the bench
// is killed. Go applies it after switching to cmd's user (which would
// otherwise clear it).
func dieWithBench(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
