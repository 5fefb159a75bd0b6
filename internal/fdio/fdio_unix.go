//go:build unix

package fdio

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// FD is the data path of one descriptor. Read, Write and TryWrite may run
// at the same time, but each in one goroutine at a time.
type FD struct {
	rc       syscall.RawConn // nil: use plain
	plain    io.ReadWriter
	isSocket bool

	// Bound once, so that a call allocates no closure.
	rfn, wfn, tfn func(fd uintptr) bool
	rp, wp, tp    []byte
	rn, wn, tn    int
	rerr, werr    error
}

// New returns the data path of c, which also implements plain (the same
// conn or file). Without a usable descriptor, or with a blocking one, FD
// uses plain.
func New(c any, plain io.ReadWriter) *FD {
	f := &FD{plain: plain}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return f
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return f
	}
	nonblock := false
	if err := rc.Control(func(fd uintptr) { nonblock = isNonblock(fd) }); err != nil || !nonblock {
		return f
	}
	_, f.isSocket = c.(net.Conn)
	f.rc = rc
	f.rfn, f.wfn, f.tfn = f.read, f.write, f.try
	return f
}

// Nonblocking reports whether TryWrite can write.
func (f *FD) Nonblocking() bool { return f.rc != nil }

// Read reads what is there, waiting (up to the read deadline) while there
// is nothing. A read of 0 bytes from a stream is io.EOF.
func (f *FD) Read(p []byte) (int, error) {
	if f.rc == nil {
		return f.plain.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	f.rp, f.rn, f.rerr = p, 0, nil
	err := f.rc.Read(f.rfn)
	n, rerr := f.rn, f.rerr
	f.rp = nil
	if err != nil {
		return 0, f.pollErr(err)
	}
	if n > 0 {
		raceAcquire()
	}
	return n, rerr
}

func (f *FD) read(fd uintptr) bool {
	for {
		n, err := rawRead(fd, f.rp)
		switch err {
		case 0:
			f.rn = n
			if n == 0 {
				f.rerr = io.EOF
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		f.rerr = os.NewSyscallError("read", err)
		return true
	}
}

// Write writes all of p, waiting (up to the write deadline) for room.
func (f *FD) Write(p []byte) (int, error) {
	if f.rc == nil {
		return f.plain.Write(p)
	}
	raceReleaseMerge()
	f.wp, f.wn, f.werr = p, 0, nil
	err := f.rc.Write(f.wfn)
	n, werr := f.wn, f.werr
	f.wp = nil
	if err != nil {
		return n, f.pollErr(err)
	}
	return n, werr
}

func (f *FD) write(fd uintptr) bool {
	for f.wn < len(f.wp) {
		want := len(f.wp) - f.wn
		n, err := rawWrite(fd, f.wp[f.wn:])
		switch err {
		case 0:
			f.wn += n
			if n < want {
				// The descriptor is full (a non-blocking write stops
				// only there): wait now rather than spend a call on
				// the EAGAIN. Room made from here on raises the event
				// the poller waits for.
				return false
			}
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		f.werr = os.NewSyscallError("write", err)
		return true
	}
	return true
}

// TryWrite writes what of p the descriptor takes now, without waiting, and
// returns its length. A full descriptor, a passed deadline, a closed one or
// an error give a short count: the next Write meets the error. Without a
// non-blocking descriptor it writes nothing.
func (f *FD) TryWrite(p []byte) int {
	if f.rc == nil || len(p) == 0 {
		return 0
	}
	raceReleaseMerge()
	f.tp, f.tn = p, 0
	f.rc.Write(f.tfn)
	n := f.tn
	f.tp = nil
	return n
}

func (f *FD) try(fd uintptr) bool {
	for f.tn < len(f.tp) {
		want := len(f.tp) - f.tn
		n, err := rawWrite(fd, f.tp[f.tn:])
		if err == syscall.EINTR {
			continue
		}
		if err != 0 || n <= 0 {
			break
		}
		f.tn += n
		if n < want {
			break // full: see write
		}
	}
	return true // never wait
}

// TryRead reads what is there now, without waiting: 0 when nothing is
// (or on an error, which the next Read meets).
func (f *FD) TryRead(p []byte) int {
	if f.rc == nil || len(p) == 0 {
		return 0
	}
	n := 0
	f.rc.Read(func(fd uintptr) bool {
		for {
			k, err := rawRead(fd, p)
			if err == syscall.EINTR {
				continue
			}
			if err == 0 && k > 0 {
				n = k
			}
			return true
		}
	})
	if n > 0 {
		raceAcquire()
	}
	return n
}

// pollErr words an error of the poller (a deadline, a closed descriptor)
// as the conn or file would have.
func (f *FD) pollErr(err error) error {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return os.ErrDeadlineExceeded
	case f.isSocket:
		return net.ErrClosed
	}
	return os.ErrClosed
}

// ReadRaw is one read of fd, for code that runs in a RawConn's Read
// callback itself: no scheduler hand-off, errors as syscall.Errno.
func ReadRaw(fd uintptr, p []byte) (int, error) {
	n, err := rawRead(fd, p)
	if err != 0 {
		return 0, err
	}
	if n > 0 {
		raceAcquire()
	}
	return n, nil
}
