//go:build linux

package e2e

import "syscall"

// sysProcAttr makes the kernel kill a child process when the test binary dies
// without running its cleanups (for example on a -timeout panic), so no
// nats-server or mailpit is left behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
