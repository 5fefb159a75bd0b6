//go:build linux || darwin

package serialdev

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/internal/fdio"
)

// pollInterval is how often the modem lines and event counters are read.
// Short enough that a person toggling a line sees it at once and that the
// counters catch pulses too short for TIOCMGET alone.
const pollInterval = 15 * time.Millisecond

// device is a serial device on a Unix system. The fd is non-blocking and
// owned by an *os.File, so Go's poller drives Read and Write (deadlines work
// and Close unblocks them); ioctls go through the raw conn, never Fd().
type device struct {
	name string
	f    *os.File
	rc   syscall.RawConn
	data *fdio.FD // reads and writes

	hasLines  bool // TIOCMGET works
	hasCounts bool // TIOCGICOUNT works
	base      icount

	ctl sync.Mutex // serialises read-modify-write of termios

	status   *notifier
	done     chan struct{} // closed by Close: stops the poller
	pollDone chan struct{} // closed when the poller has returned

	closeMu sync.Mutex
	closed  bool
}

// icount holds the line event counters of TIOCGICOUNT: 32 bits in the
// kernel, so differences are taken modulo 2^32.
type icount struct {
	brk, frame, parity, overrun, rng uint32
}

func statDevice(name string) error {
	fi, err := os.Stat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errNotFound("stat", name)
	case err != nil:
		return fmt.Errorf("serialdev: %w", err)
	case fi.Mode()&fs.ModeCharDevice == 0:
		return fmt.Errorf("serialdev: stat %s: not a serial device (not a character device)", name)
	case !ttyDriver(fi):
		return fmt.Errorf("serialdev: stat %s: not a serial device (not a tty)", name)
	}
	return nil
}

func openDevice(name string) (Port, error) {
	var fd int
	var err error
	for {
		fd, err = unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, openError(name, err)
	}
	d, err := setupDevice(fd, name)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// openError words the failure of open(2) for a user.
func openError(name string, err error) error {
	switch err {
	case unix.ENOENT, unix.ENXIO, unix.ENODEV, unix.EIO:
		// The node exists but no hardware is behind it: an empty UART
		// slot, an unplugged adapter, a pty whose master has gone.
		return errNotFound("open", name)
	case unix.EBUSY:
		return fmt.Errorf("serialdev: open %s: %w: already open elsewhere", name, ErrBusy)
	case unix.EACCES, unix.EPERM:
		hint := ""
		if g := deviceGroup(name); g != "" {
			hint = fmt.Sprintf(" (the device belongs to group %q: add your user to it and log in again)", g)
		}
		return fmt.Errorf("serialdev: open %s: %w%s", name, fs.ErrPermission, hint)
	}
	return fmt.Errorf("serialdev: open %s: %w", name, err)
}

// deviceGroup names the group that owns a device node, or "".
func deviceGroup(name string) string {
	var st unix.Stat_t
	if unix.Stat(name, &st) != nil {
		return ""
	}
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(st.Gid), 10))
	if err != nil || st.Gid == 0 {
		return ""
	}
	return g.Name
}

// setupDevice locks fd, puts it in raw mode and wraps it. It owns fd: on
// error, fd is closed.
func setupDevice(fd int, name string) (_ *device, err error) {
	owned := true // until an *os.File owns it
	defer func() {
		if err != nil && owned {
			unix.Close(fd)
		}
	}()
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("serialdev: open %s: %w: already open elsewhere (its lock is held)", name, ErrBusy)
		}
		return nil, fmt.Errorf("serialdev: open %s: lock: %w", name, err)
	}
	t, err := getTermios(fd)
	if err != nil {
		if err == unix.ENOTTY || err == unix.EINVAL {
			return nil, fmt.Errorf("serialdev: open %s: not a serial device", name)
		}
		return nil, fmt.Errorf("serialdev: open %s: reading settings: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TIOCEXCL, 0); err != nil {
		return nil, fmt.Errorf("serialdev: open %s: exclusive mode: %w", name, err)
	}
	rate := TermiosSettings(t).BaudRate
	makeRaw(t)
	err = setTermios(fd, t)
	if err == nil {
		err = setSpeed(fd, rate) // macOS: a rate the termios cannot hold
	}
	if err != nil {
		unix.IoctlSetInt(fd, unix.TIOCNXCL, 0)
		return nil, fmt.Errorf("serialdev: open %s: raw mode: %w", name, err)
	}
	d := &device{
		name:     name,
		status:   newNotifier(),
		done:     make(chan struct{}),
		pollDone: make(chan struct{}),
	}
	if _, err := unix.IoctlGetInt(fd, unix.TIOCMGET); err == nil {
		d.hasLines = true
	}
	if c, err := getICount(fd); err == nil {
		d.hasCounts = true
		d.base = c
	}
	d.f = os.NewFile(uintptr(fd), name)
	owned = false
	rc, err := d.f.SyscallConn()
	if err != nil {
		d.f.Close()
		return nil, fmt.Errorf("serialdev: open %s: %w", name, err)
	}
	d.rc = rc
	d.data = fdio.New(d.f, d.f)
	if d.hasLines || d.hasCounts {
		go d.poll()
	} else {
		close(d.pollDone)
	}
	return d, nil
}

func (d *device) Read(p []byte) (int, error) {
	n, err := d.data.Read(p)
	if err == nil && n >= gatherAfter {
		n = d.gather(p, n)
	}
	if err != nil && isGone(err) {
		d.status.close()
	}
	return n, d.dataErr("read", err)
}

// A tty hands out at most its line discipline's buffer per read (4 KiB on
// Linux), however much is waiting. A read of gatherAfter bytes or more
// suggests more is (a pty, a fast USB device): Read then takes what else is
// there at once (the tty may hand it out in smaller pieces while its
// writer goes on), up to gatherMax, so the caller sends one large piece on
// instead of many small ones. On a relay that halves the CPU per byte of
// both ends of the network hop. A short read (a line, a reply) comes back
// as it is.
const (
	gatherAfter = 2048
	gatherMax   = 32 << 10
)

func (d *device) gather(p []byte, n int) int {
	end := min(len(p), gatherMax)
	for n < end {
		k := d.data.TryRead(p[n:end])
		if k == 0 {
			break
		}
		n += k
	}
	return n
}

// isGone reports whether err from Read or Write means the device has gone
// (unplugged, or the other end of a pty closed).
func isGone(err error) bool {
	return err == io.EOF || errors.Is(err, unix.EIO) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)
}

func (d *device) Close() error {
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed {
		return &os.PathError{Op: "close", Path: d.name, Err: os.ErrClosed}
	}
	d.closed = true
	close(d.done)
	<-d.pollDone
	// TIOCEXCL outlives our fd on a pty whose master stays open; undo it so
	// that the next Open can succeed.
	d.control(func(fd int) error { return unix.IoctlSetInt(fd, unix.TIOCNXCL, 0) })
	err := d.f.Close()
	d.status.close()
	if err != nil {
		return fmt.Errorf("serialdev: close %s: %w", d.name, err)
	}
	return nil
}

// control runs fn on the fd. Control itself fails only once the file is
// closed, which it words as "use of closed file"; make that os.ErrClosed as
// Read and Write do.
func (d *device) control(fn func(fd int) error) error {
	var ferr error
	if err := d.rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return os.ErrClosed
	}
	return ferr
}

func (d *device) Settings() (Settings, error) {
	var s Settings
	err := d.control(func(fd int) error {
		t, err := getTermios(fd)
		if err != nil {
			return err
		}
		s = TermiosSettings(t)
		return nil
	})
	if err != nil {
		return Settings{}, d.ctlError("read settings of", err)
	}
	return s, nil
}

func (d *device) SetSettings(s Settings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("serialdev: %s: %w", d.name, err)
	}
	if err := supported(s); err != nil {
		return fmt.Errorf("serialdev: %s: %w: %v", d.name, ErrInvalidSettings, err)
	}
	d.ctl.Lock()
	defer d.ctl.Unlock()
	err := d.control(func(fd int) error {
		t, err := getTermios(fd)
		if err != nil {
			return err
		}
		applyTermios(t, s)
		if err := setTermios(fd, t); err != nil {
			return err
		}
		return setSpeed(fd, s.BaudRate)
	})
	if err != nil {
		return d.ctlError("apply settings to", err)
	}
	return nil
}

// modemErr maps the errors a device without modem lines gives.
func (d *device) modemErr(op string, err error) error {
	if err == unix.ENOTTY || err == unix.EINVAL || err == unix.ENOSYS {
		return fmt.Errorf("serialdev: %s %s: %w", op, d.name, ErrNoModemLines)
	}
	return d.ctlError(op, err)
}

func (d *device) setModem(op string, bit int, on bool) error {
	req := uint(unix.TIOCMBIC)
	if on {
		req = unix.TIOCMBIS
	}
	err := d.control(func(fd int) error { return unix.IoctlSetPointerInt(fd, req, bit) })
	if err != nil {
		return d.modemErr(op, err)
	}
	return nil
}

func (d *device) SetDTR(on bool) error { return d.setModem("set DTR on", unix.TIOCM_DTR, on) }
func (d *device) SetRTS(on bool) error { return d.setModem("set RTS on", unix.TIOCM_RTS, on) }

// SetBreak holds the line in break until SetBreak(false). A device that
// cannot send a break (a pty) accepts this and does nothing.
func (d *device) SetBreak(on bool) error {
	req := uint(unix.TIOCCBRK)
	if on {
		req = unix.TIOCSBRK
	}
	err := d.control(func(fd int) error { return unix.IoctlSetInt(fd, req, 0) })
	if err != nil {
		return d.modemErr("set break on", err)
	}
	return nil
}

func (d *device) Status() (Status, error) {
	var st Status
	var lerr error
	err := d.control(func(fd int) error {
		if d.hasCounts {
			c, err := getICount(fd)
			if err != nil {
				return err
			}
			st.Breaks = uint64(c.brk - d.base.brk)
			st.FramingErrors = uint64(c.frame - d.base.frame)
			st.ParityErrors = uint64(c.parity - d.base.parity)
			st.Overruns = uint64(c.overrun - d.base.overrun)
			st.Rings = uint64(c.rng - d.base.rng)
		}
		bits, err := unix.IoctlGetInt(fd, unix.TIOCMGET)
		if err != nil {
			lerr = err
			return nil
		}
		st.Lines = modemLines(bits)
		return nil
	})
	if err != nil {
		return Status{}, d.ctlError("read status of", err)
	}
	if lerr != nil {
		return st, d.modemErr("read modem lines of", lerr)
	}
	return st, nil
}

func modemLines(bits int) Lines {
	var l Lines
	if bits&unix.TIOCM_CTS != 0 {
		l |= CTS
	}
	if bits&unix.TIOCM_DSR != 0 {
		l |= DSR
	}
	if bits&unix.TIOCM_RI != 0 {
		l |= RI
	}
	if bits&unix.TIOCM_CD != 0 {
		l |= DCD
	}
	return l
}

func (d *device) StatusChanged() <-chan struct{} { return d.status.ch }

// poll reads the modem lines and event counters every pollInterval and
// signals a change. Counters catch what the line sampling misses: a break,
// a ring pulse or a line error between two polls.
func (d *device) poll() {
	defer close(d.pollDone)
	pollLoop(d.done, d.status, func() (int, icount, error) {
		var bits int
		var c icount
		err := d.control(func(fd int) error {
			var err error
			if d.hasLines {
				if bits, err = unix.IoctlGetInt(fd, unix.TIOCMGET); err != nil {
					return err
				}
			}
			if d.hasCounts {
				c, err = getICount(fd)
			}
			return err
		})
		return bits & (unix.TIOCM_CTS | unix.TIOCM_DSR | unix.TIOCM_RI | unix.TIOCM_CD), c, err
	})
}

// pollLoop calls sample every pollInterval until done is closed, signals n
// when the modem bits or the counters change, and closes n when sample
// says that the device has gone.
func pollLoop(done <-chan struct{}, n *notifier, sample func() (int, icount, error)) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var lastBits int
	var last icount
	first := true
	for {
		bits, c, err := sample()
		switch {
		case err == nil:
			if !first && (bits != lastBits || c != last) {
				n.signal()
			}
			lastBits, last, first = bits, c, false
		case err == unix.EINTR || err == unix.EAGAIN:
			// try again at the next tick
		case errors.Is(err, os.ErrClosed):
			return
		default:
			// ENODEV, EIO: the device has gone; nothing more will change.
			n.close()
			return
		}
		select {
		case <-done:
			return
		case <-tick.C:
		}
	}
}

func (d *device) Purge(which Purge) error {
	var q int
	switch which {
	case PurgeReceive:
		q = unix.TCIFLUSH
	case PurgeTransmit:
		q = unix.TCOFLUSH
	case PurgeBoth:
		q = unix.TCIOFLUSH
	case 0:
		return nil
	default:
		return fmt.Errorf("serialdev: purge %s: unknown buffers %#x", d.name, uint8(which))
	}
	if err := d.control(func(fd int) error { return flush(fd, q) }); err != nil {
		return d.ctlError("purge", err)
	}
	return nil
}

// Drain waits until the output queue is empty, polling it so that Close can
// end the wait (a blocking tcdrain would hold Close off for as long as flow
// control stops the line), then lets the driver finish the last bytes.
func (d *device) Drain() error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var n int
		err := d.control(func(fd int) error {
			var err error
			n, err = unix.IoctlGetInt(fd, unix.TIOCOUTQ)
			return err
		})
		if err != nil {
			return d.ctlError("drain", err)
		}
		if n == 0 {
			break
		}
		select {
		case <-d.done:
			return &os.PathError{Op: "drain", Path: d.name, Err: os.ErrClosed}
		case <-tick.C:
		}
	}
	if err := d.control(drain); err != nil {
		return d.ctlError("drain", err)
	}
	return nil
}
