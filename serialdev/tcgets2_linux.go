//go:build linux && !ppc64 && !ppc64le && !ppc

package serialdev

import "golang.org/x/sys/unix"

// termios2 requests: the speed fields carry any integer baud rate (BOTHER).
const (
	reqGetTermios = unix.TCGETS2
	reqSetTermios = unix.TCSETS2
)
