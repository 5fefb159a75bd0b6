//go:build linux || darwin

package pty

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/internal/fdio"
	"github.com/sertun/sertun/serialdev"
)

// control runs fn on the file's descriptor without making it blocking.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// readRaw reads the master through the poller. When the master has nothing
// to read, readRaw waits for data if wait is set, else it fails with
// errWouldBlock.
func readRaw(rc syscall.RawConn, b []byte, wait bool) (int, error) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = fdio.ReadRaw(fd, b)
			switch rerr {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				if !wait {
					rerr = errWouldBlock
					return true
				}
				return false
			}
			return true
		}
	})
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return 0, err
	case err != nil:
		return 0, fmt.Errorf("pty: read: %w", os.ErrClosed)
	case rerr == errWouldBlock:
		return 0, rerr
	case rerr != nil:
		return 0, &os.PathError{Op: "read", Path: "/dev/ptmx", Err: rerr}
	case n <= 0:
		return 0, fmt.Errorf("pty: read: %w", os.ErrClosed)
	}
	return n, nil
}

// postFlush posts the program's flushes that status byte st reports.
func (p *Pty) postFlush(st byte) {
	var purge serialdev.Purge
	if st&unix.TIOCPKT_FLUSHREAD != 0 {
		purge |= serialdev.PurgeReceive
	}
	if st&unix.TIOCPKT_FLUSHWRITE != 0 {
		purge |= serialdev.PurgeTransmit
	}
	if purge != 0 {
		p.mu.Lock()
		p.post(Changes{Purge: purge})
		p.mu.Unlock()
	}
}
