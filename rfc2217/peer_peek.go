//go:build unix && !linux

package rfc2217

import (
	"errors"

	"golang.org/x/sys/unix"
)

// socketPeerState peeks: the end of the client's stream (unless data it
// sent before hides it), or its reset.
func socketPeerState(fd int) peerState {
	var b [1]byte
	n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case err == nil && n == 0:
		return peerHalfClosed
	case err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR):
		return peerGone
	}
	return peerOpen
}
