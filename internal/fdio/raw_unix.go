//go:build unix && !linux

package fdio

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// Elsewhere the plain system calls: the raw ones are Linux's alone (macOS
// routes system calls through libc).
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := unix.Read(int(fd), p)
	return n, errno(err)
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, err := unix.Write(int(fd), p)
	return n, errno(err)
}

func errno(err error) syscall.Errno {
	var e syscall.Errno
	if err == nil {
		return 0
	}
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

func isNonblock(fd uintptr) bool {
	flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	return err == nil && flags&unix.O_NONBLOCK != 0
}
