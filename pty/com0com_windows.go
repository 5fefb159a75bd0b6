package pty

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/sertun/sertun/serialdev"
)

// com0com's extension of IOCTL_SERIAL_LSRMST_INSERT (its cncext.h): the
// input is the escape byte, the signature "c0c\0" and a ULONG of options.
const (
	ioctlSerialLsrmstInsert = 0x1B<<16 | 31<<2 // CTL_CODE(FILE_DEVICE_SERIAL_PORT, 31, METHOD_BUFFERED, FILE_ANY_ACCESS)

	c0cIoctlCaps      = 0xFFFFFFFF
	c0cIoctlGet       = 0x01000000 // answer with the current values
	c0cIoctlRxClear   = 0x02000000 // drop what the driver holds for us
	c0cEnableMST      = 0x00000002
	c0cEnableRBR      = 0x00000100
	c0cEnableRLC      = 0x00000200
	c0cWanted         = c0cEnableMST | c0cEnableRBR | c0cEnableRLC
	c0cEscapeByte     = 0xDB // any byte works; data bytes equal to it cost one more
	c0cSignature      = "c0c\x00"
	com0comReadBuffer = 64 * 1024
)

// com0com is the hidden end of a com0com pair (CNCB0): the program opens
// the other end (COMx, CNCA0); its baud rate and line control reach us as
// insertions in the read stream, its DTR and RTS through the pair's wiring.
type com0com struct {
	h    windows.Handle
	name string

	closeEv windows.Handle // manual reset: set by Close
	closed  chan struct{}
	once    sync.Once

	rmu, wmu sync.Mutex // one read, one write at a time
	rd, wd   deadline
	rev, wev windows.Handle // per-direction completion events
	raw      []byte
	data     []byte // decoded, not yet returned
	dbuf     []byte // data's storage
	dec      c0cDecoder

	mu      sync.Mutex
	st      c0cState
	pending Changes
	notify  chan struct{}
}

// deadline is a settable deadline that wakes a waiting operation.
type deadline struct {
	mu   sync.Mutex
	t    time.Time
	wake windows.Handle // auto reset
}

func (d *deadline) set(t time.Time) error {
	d.mu.Lock()
	d.t = t
	d.mu.Unlock()
	return windows.SetEvent(d.wake)
}

// wait is the milliseconds left (INFINITE for none, 0 when passed).
func (d *deadline) wait() (uint32, bool) {
	d.mu.Lock()
	t := d.t
	d.mu.Unlock()
	if t.IsZero() {
		return windows.INFINITE, false
	}
	left := time.Until(t)
	if left <= 0 {
		return 0, true
	}
	return uint32(min(left.Milliseconds()+1, 1<<31)), false
}

func openCom0com(name string) (Port, error) {
	path := name
	if !strings.HasPrefix(path, `\\.\`) {
		path = `\\.\` + name
	}
	p16, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return nil, fmt.Errorf("pty: bad port name %q", name)
	}
	h, err := windows.CreateFile(p16, windows.GENERIC_READ|windows.GENERIC_WRITE, 0, nil,
		windows.OPEN_EXISTING, windows.FILE_FLAG_OVERLAPPED, 0)
	switch {
	case errors.Is(err, windows.ERROR_FILE_NOT_FOUND) || errors.Is(err, windows.ERROR_PATH_NOT_FOUND):
		return nil, fmt.Errorf("pty: %s: no such port (install com0com and make a pair, e.g. setupc install PortName=COM20 PortName=CNCB0; attach binds the CNCB end): %w", name, serialdev.ErrNotFound)
	case errors.Is(err, windows.ERROR_ACCESS_DENIED):
		return nil, fmt.Errorf("pty: %s is in use by another program (hub4com, another attach?): %w", name, serialdev.ErrBusy)
	case err != nil:
		return nil, fmt.Errorf("pty: opening %s: %w", name, err)
	}
	c := &com0com{h: h, name: name, closed: make(chan struct{}), notify: make(chan struct{}, 1),
		raw: make([]byte, com0comReadBuffer), dbuf: make([]byte, 0, com0comReadBuffer+2), dec: c0cDecoder{esc: c0cEscapeByte}}
	for _, ev := range []*windows.Handle{&c.closeEv, &c.rev, &c.wev, &c.rd.wake, &c.wd.wake} {
		manual := uint32(0)
		if ev == &c.closeEv || ev == &c.rev || ev == &c.wev {
			manual = 1
		}
		if *ev, err = windows.CreateEvent(nil, manual, 0, nil); err != nil {
			c.release()
			return nil, fmt.Errorf("pty: CreateEvent: %w", err)
		}
	}
	if err := c.setup(); err != nil {
		c.release()
		return nil, err
	}
	return c, nil
}

// setup makes the port raw, raises our DTR and RTS (the program sees them
// as DSR, DCD and CTS: a device is there) and turns on the insertions.
func (c *com0com) setup() error {
	var dcb windows.DCB
	dcb.DCBlength = uint32(unsafe.Sizeof(dcb))
	if err := windows.GetCommState(c.h, &dcb); err != nil {
		return fmt.Errorf("pty: %s: GetCommState: %w", c.name, err)
	}
	const fBinary, fDtrEnable, fRtsEnable = 0x1, 0x10, 0x1000
	dcb.Flags = fBinary | fDtrEnable | fRtsEnable
	dcb.BaudRate, dcb.ByteSize, dcb.Parity, dcb.StopBits = 115200, 8, 0, 0
	if err := windows.SetCommState(c.h, &dcb); err != nil {
		return fmt.Errorf("pty: %s: SetCommState: %w", c.name, err)
	}
	// Reads wait for the first byte, then return what is there.
	to := windows.CommTimeouts{ReadIntervalTimeout: 0xFFFFFFFF, ReadTotalTimeoutMultiplier: 0xFFFFFFFF, ReadTotalTimeoutConstant: 0xFFFFFFFE}
	if err := windows.SetCommTimeouts(c.h, &to); err != nil {
		return fmt.Errorf("pty: %s: SetCommTimeouts: %w", c.name, err)
	}

	in := make([]byte, 1+len(c0cSignature)+4)
	copy(in[1:], c0cSignature)
	binary.LittleEndian.PutUint32(in[1+len(c0cSignature):], c0cIoctlCaps)
	out := make([]byte, 64)
	n, err := c.ioctl(ioctlSerialLsrmstInsert, in, out)
	if err != nil || n < len(c0cSignature)+4 || string(out[:len(c0cSignature)]) != c0cSignature {
		return fmt.Errorf("pty: %s is not a com0com port with the c0c extension (com0com 2.2 or later), so the program's settings cannot be seen", c.name)
	}
	caps := binary.LittleEndian.Uint32(out[len(c0cSignature):])
	if caps&c0cWanted != c0cWanted {
		return fmt.Errorf("pty: %s: com0com lacks baud rate and line control insertion (caps %#x)", c.name, caps)
	}
	in[0] = c0cEscapeByte
	binary.LittleEndian.PutUint32(in[1+len(c0cSignature):], c0cWanted|c0cIoctlGet|c0cIoctlRxClear)
	n, err = c.ioctl(ioctlSerialLsrmstInsert, in, out)
	if err != nil {
		return fmt.Errorf("pty: %s: IOCTL_SERIAL_LSRMST_INSERT: %w", c.name, err)
	}
	// The answer holds the current values as insertions.
	c.dec.decode(nil, out[:n], func(e c0cEvent) { c.st.apply(e) })
	c.dec = c0cDecoder{esc: c0cEscapeByte}
	return nil
}

// ioctl runs one DeviceIoControl on the overlapped handle.
func (c *com0com) ioctl(code uint32, in, out []byte) (int, error) {
	ev, err := windows.CreateEvent(nil, 1, 0, nil)
	if err != nil {
		return 0, err
	}
	defer windows.CloseHandle(ev)
	ov := windows.Overlapped{HEvent: ev}
	var n uint32
	var outp *byte
	if len(out) > 0 {
		outp = &out[0]
	}
	err = windows.DeviceIoControl(c.h, code, &in[0], uint32(len(in)), outp, uint32(len(out)), &n, &ov)
	if errors.Is(err, windows.ERROR_IO_PENDING) {
		err = windows.GetOverlappedResult(c.h, &ov, &n, true)
	}
	return int(n), err
}

// do runs one overlapped read or write, bounded by the deadline and Close.
func (c *com0com) do(write bool, b []byte, ev windows.Handle, dl *deadline) (int, error) {
	select {
	case <-c.closed:
		return 0, os.ErrClosed
	default:
	}
	if _, passed := dl.wait(); passed {
		return 0, os.ErrDeadlineExceeded
	}
	windows.ResetEvent(ev)
	ov := windows.Overlapped{HEvent: ev}
	var n uint32
	var err error
	if write {
		err = windows.WriteFile(c.h, b, &n, &ov)
	} else {
		err = windows.ReadFile(c.h, b, &n, &ov)
	}
	if err == nil {
		return int(n), nil
	}
	if !errors.Is(err, windows.ERROR_IO_PENDING) {
		return 0, fmt.Errorf("pty: %s: %w", c.name, err)
	}
	for {
		ms, _ := dl.wait()
		r, werr := windows.WaitForMultipleObjects([]windows.Handle{ev, c.closeEv, dl.wake}, false, ms)
		if werr != nil {
			return 0, werr
		}
		switch r {
		case windows.WAIT_OBJECT_0:
			if err := windows.GetOverlappedResult(c.h, &ov, &n, false); err != nil {
				return int(n), fmt.Errorf("pty: %s: %w", c.name, err)
			}
			return int(n), nil
		case windows.WAIT_OBJECT_0 + 2:
			continue // the deadline moved
		}
		// Closed or timed out: cancel, and keep what was moved.
		windows.CancelIoEx(c.h, &ov)
		windows.GetOverlappedResult(c.h, &ov, &n, true)
		if n > 0 {
			return int(n), nil
		}
		if r == windows.WAIT_OBJECT_0+1 {
			return 0, os.ErrClosed
		}
		return 0, os.ErrDeadlineExceeded
	}
}

func (c *com0com) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.data) == 0 {
		n, err := c.do(false, c.raw, c.rev, &c.rd)
		if n > 0 {
			c.data = c.dec.decode(c.dbuf[:0], c.raw[:n], c.event)
			c.dbuf = c.data[:0]
		}
		if err != nil && len(c.data) == 0 {
			return 0, err
		}
	}
	n := copy(b, c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *com0com) event(e c0cEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.st.apply(e)
	if !ch.any() {
		return
	}
	c.pending.Settings = c.pending.Settings || ch.Settings
	c.pending.Lines = c.pending.Lines || ch.Lines
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *com0com) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	done := 0
	for done < len(b) {
		n, err := c.do(true, b[done:], c.wev, &c.wd)
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (c *com0com) SetReadDeadline(t time.Time) error  { return c.rd.set(t) }
func (c *com0com) SetWriteDeadline(t time.Time) error { return c.wd.set(t) }

// Settings are the program's, with 8N1 for what it has not told yet.
func (c *com0com) Settings() (serialdev.Settings, error) {
	c.mu.Lock()
	s := c.st.settings
	c.mu.Unlock()
	if s.BaudRate == 0 {
		s.BaudRate = 9600
	}
	if s.DataBits == 0 {
		s.DataBits = 8
	}
	return s, nil
}

func (c *com0com) Changed() <-chan struct{} { return c.notify }

func (c *com0com) TakeChanges() Changes {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.pending
	c.pending = Changes{}
	return ch
}

func (c *com0com) Lines() (dtr, rts, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.lines()
}

func (c *com0com) String() string { return c.name + " (com0com)" }

func (c *com0com) Close() error {
	c.once.Do(func() {
		close(c.closed)
		windows.SetEvent(c.closeEv)
		// Wait for the operations in flight to see it.
		c.rmu.Lock()
		c.wmu.Lock()
		c.release()
		c.wmu.Unlock()
		c.rmu.Unlock()
	})
	return nil
}

func (c *com0com) release() {
	windows.CloseHandle(c.h)
	for _, ev := range []windows.Handle{c.closeEv, c.rev, c.wev, c.rd.wake, c.wd.wake} {
		if ev != 0 {
			windows.CloseHandle(ev)
		}
	}
}
