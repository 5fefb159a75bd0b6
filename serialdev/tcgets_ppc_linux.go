//go:build linux && (ppc64 || ppc64le || ppc)

package serialdev

import "golang.org/x/sys/unix"

// On powerpc the plain termios already carries the speed fields (BOTHER
// works with TCGETS/TCSETS) and there is no TCGETS2.
const (
	reqGetTermios = unix.TCGETS
	reqSetTermios = unix.TCSETS
)
