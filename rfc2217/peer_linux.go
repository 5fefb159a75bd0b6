package rfc2217

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerStateOf tells, without reading from nc, whether its client is still
// there: whatever it sent may wait there unread. The kernel's TCP state
// tells: the client's FIN (it closed, or only shut its sending side) or
// its reset.
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
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		switch {
		case err != nil || info.State == unix.BPF_TCP_ESTABLISHED:
		case info.State == unix.BPF_TCP_CLOSE_WAIT:
			st = peerHalfClosed
		default:
			st = peerGone
		}
	})
	return st
}
