//go:build unix

package transport

import (
	"net"
	"syscall"
)

// peerSpoke reports whether nc, a TCP connection nobody is reading, has
// bytes waiting or was closed by its peer, without blocking and without
// consuming anything (recv with MSG_PEEK|MSG_DONTWAIT). False when it
// cannot tell.
func peerSpoke(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	spoke := false
	var buf [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		spoke = n > 0 || (n == 0 && err == nil) || (err != nil && err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR)
		return true // never wait for readiness
	})
	return spoke
}
