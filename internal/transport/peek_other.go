//go:build !unix

package transport

import "net"

// peerSpoke cannot look without blocking here: a dead connection is found
// at MAIL FROM instead (see Send).
func peerSpoke(net.Conn) bool { return false }
