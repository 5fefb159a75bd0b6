//go:build unix

package rfc2217

import (
	"net"
	"syscall"
)

// peerStateOf tells, without taking anything from nc, whether its client
// is still there: whatever it sent may wait there unread.
func peerStateOf(nc net.Conn) peerState {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return peerOpen
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return peerOpen
	}
	st := peerOpen
	rc.Control(func(fd uintptr) { st = socketPeerState(int(fd)) })
	return st
}
