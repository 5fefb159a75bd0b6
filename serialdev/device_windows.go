package serialdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"

	"github.com/sertun/sertun/internal/fdio"
)

const unsafeSizeofDCB = unsafe.Sizeof(windows.DCB{})

// pollInterval is how often the modem lines and line errors are read.
const pollInterval = 15 * time.Millisecond

// Bits of GetCommModemStatus and ClearCommError that x/sys/windows does
// not name.
const (
	msCTSOn  = 0x0010
	msDSROn  = 0x0020
	msRingOn = 0x0040
	msRLSDOn = 0x0080

	ceRXOver   = 0x0001
	ceOverrun  = 0x0002
	ceRXParity = 0x0004
	ceFrame    = 0x0008
	ceBreak    = 0x0010

	// DCB.Flags bits.
	dcbBinary           = 0x0001
	dcbParity           = 0x0002
	dcbOutxCtsFlow      = 0x0004
	dcbOutxDsrFlow      = 0x0008
	dcbDtrControlMask   = 0x0030
	dcbDsrSensitivity   = 0x0040
	dcbTXContinueOnXoff = 0x0080
	dcbOutX             = 0x0100
	dcbInX              = 0x0200
	dcbErrorChar        = 0x0400
	dcbNull             = 0x0800
	dcbRtsControlMask   = 0x3000
	dcbAbortOnError     = 0x4000
)

// device is a COM port. The handle is overlapped and owned by an *os.File,
// so Go's I/O completion port drives Read and Write: deadlines work and
// Close cancels a pending Read. Comm functions go through the raw conn.
type device struct {
	name string
	f    *os.File
	rc   syscall.RawConn
	data *fdio.FD // writes

	mu       sync.Mutex // guards dtr, rts and counts; serialises the DCB
	dtr, rts bool       // what we drive (a DCB write would otherwise reset them)
	counts   Status     // line errors accumulated from ClearCommError
	lastRing bool

	status   *notifier
	done     chan struct{}
	pollDone chan struct{}

	closeMu sync.Mutex
	closed  bool
}

// devicePath turns COM3 into \\.\COM3, which also reaches COM10 and up.
func devicePath(name string) string {
	if strings.HasPrefix(name, `\\.\`) || strings.HasPrefix(name, `\\?\`) {
		return name
	}
	return `\\.\` + name
}

func statDevice(name string) error {
	if strings.HasPrefix(name, `\\?\`) {
		return nil // a device interface path: only opening it can tell
	}
	dos := strings.TrimPrefix(name, `\\.\`)
	p, err := windows.UTF16PtrFromString(dos)
	if err != nil {
		return errNotFound("stat", name)
	}
	buf := make([]uint16, 512)
	if _, err := windows.QueryDosDevice(p, &buf[0], uint32(len(buf))); err != nil {
		if err == windows.ERROR_FILE_NOT_FOUND {
			return errNotFound("stat", name)
		}
		if err != windows.ERROR_INSUFFICIENT_BUFFER {
			return fmt.Errorf("serialdev: stat %s: %w", name, err)
		}
	}
	return nil
}

func openDevice(name string) (Port, error) {
	p, err := windows.UTF16PtrFromString(devicePath(name))
	if err != nil {
		return nil, errNotFound("open", name)
	}
	// No sharing: a second open, by us or anyone, fails.
	h, err := windows.CreateFile(p, windows.GENERIC_READ|windows.GENERIC_WRITE, 0, nil,
		windows.OPEN_EXISTING, windows.FILE_FLAG_OVERLAPPED, 0)
	if err != nil {
		switch err {
		case windows.ERROR_FILE_NOT_FOUND, windows.ERROR_PATH_NOT_FOUND:
			return nil, errNotFound("open", name)
		case windows.ERROR_ACCESS_DENIED, windows.ERROR_SHARING_VIOLATION:
			return nil, fmt.Errorf("serialdev: open %s: %w: already open elsewhere", name, ErrBusy)
		}
		return nil, fmt.Errorf("serialdev: open %s: %w", name, err)
	}
	d, err := setupDevice(h, name)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// setupDevice puts h in raw binary mode and wraps it. It owns h: on
// error, h is closed.
func setupDevice(h windows.Handle, name string) (_ *device, err error) {
	owned := true // until an *os.File owns it
	defer func() {
		if err != nil && owned {
			windows.CloseHandle(h)
		}
	}()
	var dcb windows.DCB
	dcb.DCBlength = uint32(unsafeSizeofDCB)
	if err := windows.GetCommState(h, &dcb); err != nil {
		return nil, fmt.Errorf("serialdev: open %s: not a serial device: %w", name, err)
	}
	d := &device{
		name:     name,
		dtr:      dcb.Flags&dcbDtrControlMask == windows.DTR_CONTROL_ENABLE,
		rts:      dcb.Flags&dcbRtsControlMask == windows.RTS_CONTROL_ENABLE,
		status:   newNotifier(),
		done:     make(chan struct{}),
		pollDone: make(chan struct{}),
	}
	// Raw: binary, no error replacement, no NUL stripping, no abort on
	// error, no XON/XOFF on output (as cfmakeraw clears IXON).
	dcb.Flags |= dcbBinary | dcbTXContinueOnXoff
	dcb.Flags &^= dcbErrorChar | dcbNull | dcbAbortOnError | dcbDsrSensitivity | dcbOutX
	if err := windows.SetCommState(h, &dcb); err != nil {
		return nil, fmt.Errorf("serialdev: open %s: raw mode: %w", name, err)
	}
	// A read returns as soon as one byte is there and otherwise waits
	// (for 49 days at most; Read retries then). Writes never time out.
	// Deadlines are the runtime's, which cancels the pending I/O.
	to := windows.CommTimeouts{
		ReadIntervalTimeout:        windows.INFINITE,
		ReadTotalTimeoutMultiplier: windows.INFINITE,
		ReadTotalTimeoutConstant:   windows.INFINITE - 1,
	}
	if err := windows.SetCommTimeouts(h, &to); err != nil {
		return nil, fmt.Errorf("serialdev: open %s: timeouts: %w", name, err)
	}
	var errs uint32
	var st windows.ComStat
	windows.ClearCommError(h, &errs, &st) // start counting from now
	var ms uint32
	windows.GetCommModemStatus(h, &ms)
	d.lastRing = ms&msRingOn != 0

	d.f = os.NewFile(uintptr(h), name)
	owned = false
	rc, err := d.f.SyscallConn()
	if err != nil {
		d.f.Close()
		return nil, fmt.Errorf("serialdev: open %s: %w", name, err)
	}
	d.rc = rc
	d.data = fdio.New(d.f, d.f)
	go d.poll()
	return d, nil
}

func (d *device) Read(p []byte) (int, error) {
	for {
		n, err := d.f.Read(p)
		if n == 0 && err == io.EOF && len(p) > 0 && !d.status.isClosed() {
			// The read timeout ran out with no data: not the end of
			// anything (unless the poller found the device gone). Some
			// drivers ignore the timeouts; do not spin.
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil && isGone(err) {
			d.status.close()
		}
		return n, err
	}
}

// isGone reports whether err means the device was removed.
func isGone(err error) bool {
	for _, e := range []error{windows.ERROR_ACCESS_DENIED, windows.ERROR_BAD_COMMAND,
		windows.ERROR_GEN_FAILURE, windows.ERROR_DEVICE_NOT_CONNECTED, windows.ERROR_DEV_NOT_EXIST,
		// Aborted by the driver: the runtime reports its own cancellations
		// (deadline, Close) as os.ErrDeadlineExceeded and os.ErrClosed.
		windows.ERROR_OPERATION_ABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
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
	err := d.f.Close()
	d.status.close()
	if err != nil {
		return fmt.Errorf("serialdev: close %s: %w", d.name, err)
	}
	return nil
}

// control runs fn on the handle. Control itself fails only once the file
// is closed; make that os.ErrClosed as Read and Write do.
func (d *device) control(fn func(h windows.Handle) error) error {
	var ferr error
	if err := d.rc.Control(func(fd uintptr) { ferr = fn(windows.Handle(fd)) }); err != nil {
		return os.ErrClosed
	}
	return ferr
}

func (d *device) Settings() (Settings, error) {
	var dcb windows.DCB
	err := d.control(func(h windows.Handle) error {
		dcb.DCBlength = uint32(unsafeSizeofDCB)
		return windows.GetCommState(h, &dcb)
	})
	if err != nil {
		return Settings{}, d.ctlError("read settings of", err)
	}
	return dcbSettings(&dcb), nil
}

func dcbSettings(dcb *windows.DCB) Settings {
	s := Settings{
		BaudRate: int(dcb.BaudRate),
		DataBits: int(dcb.ByteSize),
		Parity:   Parity(dcb.Parity),
	}
	if dcb.Flags&dcbParity == 0 {
		s.Parity = ParityNone
	}
	switch dcb.StopBits {
	case windows.ONE5STOPBITS:
		s.StopBits = Stop1Half
	case windows.TWOSTOPBITS:
		s.StopBits = Stop2
	}
	switch {
	case dcb.Flags&dcbOutxCtsFlow != 0:
		s.OutFlow = FlowRTSCTS
	case dcb.Flags&dcbOutxDsrFlow != 0:
		s.OutFlow = FlowDSR
	case dcb.Flags&dcbOutX != 0:
		s.OutFlow = FlowXonXoff
	}
	switch {
	case dcb.Flags&dcbRtsControlMask == windows.RTS_CONTROL_HANDSHAKE:
		s.InFlow = FlowRTSCTS
	case dcb.Flags&dcbDtrControlMask == windows.DTR_CONTROL_HANDSHAKE:
		s.InFlow = FlowDTR
	case dcb.Flags&dcbInX != 0:
		s.InFlow = FlowXonXoff
	}
	return s
}

func (d *device) SetSettings(s Settings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("serialdev: %s: %w", d.name, err)
	}
	if s.OutFlow == FlowDCD {
		return fmt.Errorf("serialdev: %s: %w: outbound DCD flow control is not supported on Windows", d.name, ErrInvalidSettings)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.control(func(h windows.Handle) error {
		var dcb windows.DCB
		dcb.DCBlength = uint32(unsafeSizeofDCB)
		if err := windows.GetCommState(h, &dcb); err != nil {
			return err
		}
		dcb.BaudRate = uint32(s.BaudRate)
		dcb.ByteSize = uint8(s.DataBits)
		dcb.Parity = uint8(s.Parity)
		dcb.Flags &^= dcbParity
		if s.Parity != ParityNone {
			dcb.Flags |= dcbParity
		}
		switch s.StopBits {
		case Stop1:
			dcb.StopBits = windows.ONESTOPBIT
		case Stop1Half:
			dcb.StopBits = windows.ONE5STOPBITS
		case Stop2:
			dcb.StopBits = windows.TWOSTOPBITS
		}
		dcb.Flags &^= dcbOutxCtsFlow | dcbOutxDsrFlow | dcbOutX | dcbInX | dcbDtrControlMask | dcbRtsControlMask
		switch s.OutFlow {
		case FlowRTSCTS:
			dcb.Flags |= dcbOutxCtsFlow
		case FlowDSR:
			dcb.Flags |= dcbOutxDsrFlow
		case FlowXonXoff:
			dcb.Flags |= dcbOutX
		}
		dcb.Flags |= d.lineControl(s.InFlow)
		if s.InFlow == FlowXonXoff {
			dcb.Flags |= dcbInX
		}
		dcb.XonChar, dcb.XoffChar = 0x11, 0x13
		if dcb.XonLim == 0 || dcb.XoffLim == 0 {
			dcb.XonLim, dcb.XoffLim = 2048, 512
		}
		return windows.SetCommState(h, &dcb)
	})
	if err != nil {
		return d.ctlError("apply settings to", err)
	}
	return nil
}

// lineControl gives the DTR and RTS bits of the DCB: handshake for inbound
// flow control, else the state last set, which a DCB write would change.
// d.mu is held.
func (d *device) lineControl(in Flow) uint32 {
	var f uint32
	switch {
	case in == FlowDTR:
		f |= windows.DTR_CONTROL_HANDSHAKE
	case d.dtr:
		f |= windows.DTR_CONTROL_ENABLE
	}
	switch {
	case in == FlowRTSCTS:
		f |= windows.RTS_CONTROL_HANDSHAKE
	case d.rts:
		f |= windows.RTS_CONTROL_ENABLE
	}
	return f
}

func (d *device) escape(op string, fn uint32) error {
	err := d.control(func(h windows.Handle) error { return windows.EscapeCommFunction(h, fn) })
	if err != nil {
		if err == windows.ERROR_INVALID_FUNCTION || err == windows.ERROR_NOT_SUPPORTED {
			return fmt.Errorf("serialdev: %s %s: %w", op, d.name, ErrNoModemLines)
		}
		return d.ctlError(op, err)
	}
	return nil
}

func (d *device) SetDTR(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn := uint32(windows.CLRDTR)
	if on {
		fn = windows.SETDTR
	}
	if err := d.escape("set DTR on", fn); err != nil {
		return err
	}
	d.dtr = on
	return nil
}

func (d *device) SetRTS(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn := uint32(windows.CLRRTS)
	if on {
		fn = windows.SETRTS
	}
	if err := d.escape("set RTS on", fn); err != nil {
		return err
	}
	d.rts = on
	return nil
}

func (d *device) SetBreak(on bool) error {
	fn := uint32(windows.CLRBREAK)
	if on {
		fn = windows.SETBREAK
	}
	return d.escape("set break on", fn)
}

// sample reads the modem lines and adds the line errors raised since the
// last sample to the counts. ClearCommError says only whether an error
// happened, so each kind counts once per sample.
func (d *device) sample() (Status, error, error) {
	var ms, errs uint32
	var lerr error
	var cs windows.ComStat
	err := d.control(func(h windows.Handle) error {
		if err := windows.ClearCommError(h, &errs, &cs); err != nil {
			return err
		}
		lerr = windows.GetCommModemStatus(h, &ms)
		return nil
	})
	if err != nil {
		return Status{}, nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.count(errs)
	ring := ms&msRingOn != 0
	if ring && !d.lastRing {
		d.counts.Rings++
	}
	d.lastRing = ring
	st := d.counts
	if lerr == nil {
		if ms&msCTSOn != 0 {
			st.Lines |= CTS
		}
		if ms&msDSROn != 0 {
			st.Lines |= DSR
		}
		if ring {
			st.Lines |= RI
		}
		if ms&msRLSDOn != 0 {
			st.Lines |= DCD
		}
	}
	return st, lerr, nil
}

// count adds the errors ClearCommError gave; d.mu is held.
func (d *device) count(errs uint32) {
	if errs&ceBreak != 0 {
		d.counts.Breaks++
	}
	if errs&ceFrame != 0 {
		d.counts.FramingErrors++
	}
	if errs&ceRXParity != 0 {
		d.counts.ParityErrors++
	}
	if errs&(ceOverrun|ceRXOver) != 0 {
		d.counts.Overruns++
	}
}

func (d *device) Status() (Status, error) {
	st, lerr, err := d.sample()
	if err != nil {
		return Status{}, d.ctlError("read status of", err)
	}
	if lerr != nil {
		return st, fmt.Errorf("serialdev: read modem lines of %s: %w", d.name, ErrNoModemLines)
	}
	return st, nil
}

func (d *device) StatusChanged() <-chan struct{} { return d.status.ch }

func (d *device) poll() {
	defer close(d.pollDone)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last Status
	first := true
	for {
		st, _, err := d.sample()
		switch {
		case err == nil:
			if !first && st != last {
				d.status.signal()
			}
			last, first = st, false
		case errors.Is(err, os.ErrClosed):
			return
		default:
			d.status.close()
			return
		}
		select {
		case <-d.done:
			return
		case <-tick.C:
		}
	}
}

func (d *device) Purge(which Purge) error {
	var flags uint32
	if which&PurgeReceive != 0 {
		flags |= windows.PURGE_RXCLEAR
	}
	if which&PurgeTransmit != 0 {
		flags |= windows.PURGE_TXCLEAR
	}
	if which&^PurgeBoth != 0 {
		return fmt.Errorf("serialdev: purge %s: unknown buffers %#x", d.name, uint8(which))
	}
	if flags == 0 {
		return nil
	}
	if err := d.control(func(h windows.Handle) error { return windows.PurgeComm(h, flags) }); err != nil {
		return d.ctlError("purge", err)
	}
	return nil
}

// Drain waits for the output queue to empty, polling so that Close can end
// the wait, then flushes what the driver still holds.
func (d *device) Drain() error {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		var errs uint32
		var cs windows.ComStat
		err := d.control(func(h windows.Handle) error { return windows.ClearCommError(h, &errs, &cs) })
		if err != nil {
			return d.ctlError("drain", err)
		}
		d.mu.Lock()
		d.count(errs) // ClearCommError cleared them: keep the counts
		d.mu.Unlock()
		if cs.CBOutQue == 0 {
			break
		}
		select {
		case <-d.done:
			return &os.PathError{Op: "drain", Path: d.name, Err: os.ErrClosed}
		case <-tick.C:
		}
	}
	if err := d.control(windows.FlushFileBuffers); err != nil {
		return d.ctlError("drain", err)
	}
	return nil
}
