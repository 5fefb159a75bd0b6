package rfc2217

import "golang.org/x/sys/unix"

// socketPeerState reads the kernel's TCP state: the client's FIN (it
// closed, or only shut its sending side) or its reset.
func socketPeerState(fd int) peerState {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	switch {
	case err != nil || info.State == unix.BPF_TCP_ESTABLISHED:
		return peerOpen
	case info.State == unix.BPF_TCP_CLOSE_WAIT:
		return peerHalfClosed
	}
	return peerGone
}
