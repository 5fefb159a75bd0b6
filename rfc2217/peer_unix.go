//go:build unix && !linux

package rfc2217

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerStateOf tells, without taking anything from nc, whether its client
// is still there: a peek finds the end of its stream (unless data it sent
// before hides it) or its reset.
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
	rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil && n == 0:
			st = peerHalfClosed
		case err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR):
			st = peerGone
		}
	})
	return st
}
