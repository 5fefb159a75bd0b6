//go:build !windows

package rfc2217

import (
	"net"
	"syscall"
)

// rawWriter writes to a socket without waiting for room in it: the device
// reader's direct write (srvConn.sendDirect) must never block.
type rawWriter struct {
	rc syscall.RawConn
	fn func(fd uintptr) bool // w.write, bound once: no allocation per call
	p  []byte
	n  int
}

// newRawWriter returns nil for a conn without a file descriptor.
func newRawWriter(nc net.Conn) *rawWriter {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{rc: rc}
	w.fn = w.write
	return w
}

// tryWrite writes what of p the socket takes now and returns its length.
// A full socket, a closed conn, a passed deadline or an error stop it
// short; the rest is queued and the writer meets any error itself.
func (w *rawWriter) tryWrite(p []byte) int {
	w.p, w.n = p, 0
	w.rc.Write(w.fn)
	w.p = nil
	return w.n
}

// write returns true always: RawConn.Write then never waits for the
// socket to become writable.
func (w *rawWriter) write(fd uintptr) bool {
	for w.n < len(w.p) {
		n, err := syscall.Write(int(fd), w.p[w.n:])
		if n > 0 {
			w.n += n
		}
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
	}
	return true
}
