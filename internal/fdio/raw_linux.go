package fdio

import (
	"syscall"
	"unsafe"
)

// rawRead and rawWrite are single system calls that do not enter the
// scheduler (see the package doc). Only for non-blocking descriptors.
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, err := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), err
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, err := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), err
}

func isNonblock(fd uintptr) bool {
	flags, _, err := syscall.RawSyscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	return err == 0 && flags&syscall.O_NONBLOCK != 0
}
