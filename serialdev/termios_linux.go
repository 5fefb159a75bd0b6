package serialdev

import (
	"errors"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

func getTermios(fd int) (*unix.Termios, error) { return unix.IoctlGetTermios(fd, reqGetTermios) }

func setTermios(fd int, t *unix.Termios) error { return unix.IoctlSetTermios(fd, reqSetTermios, t) }

// setSpeed is needed on macOS only: termios2 carries any rate on Linux.
func setSpeed(int, int) error { return nil }

// makeRaw does what cfmakeraw does, except that it keeps the character
// format (Open does not change baud or format), and turns on CLOCAL and
// CREAD so that the port reads without carrier.
func makeRaw(t *unix.Termios) {
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag |= unix.CLOCAL | unix.CREAD
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
}

// supported reports what Linux cannot do of valid settings.
func supported(s Settings) error {
	switch {
	case s.OutFlow == FlowDCD || s.OutFlow == FlowDSR:
		return errors.New("outbound " + strings.ToUpper(s.OutFlow.String()) + " flow control is not supported on Linux")
	case s.InFlow == FlowDTR:
		return errors.New("inbound DTR flow control is not supported on Linux")
	}
	return nil
}

var csize = [...]uint32{5: unix.CS5, 6: unix.CS6, 7: unix.CS7, 8: unix.CS8}

// applyTermios is SetTermios for the device code.
func applyTermios(t *unix.Termios, s Settings) { SetTermios(t, s) }

// SetTermios changes the rate, character format and flow control of t
// (read with TCGETS2) to s, leaving its other flags alone; s is valid and
// supported. Linux has one flag for RTS/CTS both ways, so RTS/CTS in
// either direction turns on both; and one for more than one stop bit,
// which a UART sends as 1.5 with 5 data bits and as 2 otherwise.
func SetTermios(t *unix.Termios, s Settings) {
	// A standard rate goes in as its Bnnn code, so that programs reading
	// the port with plain TCGETS (cfgetospeed, Python's termios) see it;
	// only other rates need BOTHER.
	t.Cflag &^= unix.CBAUD | unix.CIBAUD
	t.Cflag |= baudCode(s.BaudRate)
	t.Ispeed = uint32(s.BaudRate)
	t.Ospeed = uint32(s.BaudRate)

	t.Cflag &^= unix.CSIZE
	t.Cflag |= csize[s.DataBits]

	t.Cflag &^= unix.PARENB | unix.PARODD | unix.CMSPAR
	switch s.Parity {
	case ParityOdd:
		t.Cflag |= unix.PARENB | unix.PARODD
	case ParityEven:
		t.Cflag |= unix.PARENB
	case ParityMark:
		t.Cflag |= unix.PARENB | unix.CMSPAR | unix.PARODD
	case ParitySpace:
		t.Cflag |= unix.PARENB | unix.CMSPAR
	}

	t.Cflag &^= unix.CSTOPB
	if s.StopBits != Stop1 {
		t.Cflag |= unix.CSTOPB
	}

	t.Cflag &^= unix.CRTSCTS
	if s.OutFlow == FlowRTSCTS || s.InFlow == FlowRTSCTS {
		t.Cflag |= unix.CRTSCTS
	}
	t.Iflag &^= unix.IXON | unix.IXOFF | unix.IXANY
	if s.OutFlow == FlowXonXoff {
		t.Iflag |= unix.IXON
	}
	if s.InFlow == FlowXonXoff {
		t.Iflag |= unix.IXOFF
	}
	t.Cc[unix.VSTART] = 0x11
	t.Cc[unix.VSTOP] = 0x13
}

// TermiosSettings gives the settings that t (read with TCGETS2) puts in
// force: the inverse of SetTermios, up to what Linux cannot tell apart.
func TermiosSettings(t *unix.Termios) Settings {
	var s Settings
	s.BaudRate = int(t.Ospeed)
	if cb := t.Cflag & unix.CBAUD; cb != unix.BOTHER {
		if r, ok := baudRates[cb]; ok {
			s.BaudRate = r
		}
	}
	switch t.Cflag & unix.CSIZE {
	case unix.CS5:
		s.DataBits = 5
	case unix.CS6:
		s.DataBits = 6
	case unix.CS7:
		s.DataBits = 7
	default:
		s.DataBits = 8
	}
	if t.Cflag&unix.PARENB != 0 {
		switch odd, stick := t.Cflag&unix.PARODD != 0, t.Cflag&unix.CMSPAR != 0; {
		case stick && odd:
			s.Parity = ParityMark
		case stick:
			s.Parity = ParitySpace
		case odd:
			s.Parity = ParityOdd
		default:
			s.Parity = ParityEven
		}
	}
	if t.Cflag&unix.CSTOPB != 0 {
		s.StopBits = Stop2
		if s.DataBits == 5 {
			s.StopBits = Stop1Half
		}
	}
	if t.Cflag&unix.CRTSCTS != 0 {
		s.OutFlow, s.InFlow = FlowRTSCTS, FlowRTSCTS
	}
	if t.Iflag&unix.IXON != 0 && s.OutFlow == FlowNone {
		s.OutFlow = FlowXonXoff
	}
	if t.Iflag&unix.IXOFF != 0 && s.InFlow == FlowNone {
		s.InFlow = FlowXonXoff
	}
	return s
}

// baudRates maps the classic Bnnn codes to rates, for a device whose
// driver reports one of them rather than BOTHER.
var baudRates = map[uint32]int{
	unix.B0: 0, unix.B50: 50, unix.B75: 75, unix.B110: 110, unix.B134: 134,
	unix.B150: 150, unix.B200: 200, unix.B300: 300, unix.B600: 600,
	unix.B1200: 1200, unix.B1800: 1800, unix.B2400: 2400, unix.B4800: 4800,
	unix.B9600: 9600, unix.B19200: 19200, unix.B38400: 38400,
	unix.B57600: 57600, unix.B115200: 115200, unix.B230400: 230400,
	unix.B460800: 460800, unix.B500000: 500000, unix.B576000: 576000,
	unix.B921600: 921600, unix.B1000000: 1000000, unix.B1152000: 1152000,
	unix.B1500000: 1500000, unix.B2000000: 2000000, unix.B2500000: 2500000,
	unix.B3000000: 3000000, unix.B3500000: 3500000, unix.B4000000: 4000000,
}

// baudCode is the Bnnn code of a standard rate, or BOTHER.
func baudCode(rate int) uint32 {
	for code, r := range baudRates {
		if r == rate && code != unix.B0 {
			return code
		}
	}
	return unix.BOTHER
}

// serialICounter is the kernel's struct serial_icounter_struct.
type serialICounter struct {
	cts, dsr, rng, dcd, rx, tx  int32
	frame, overrun, parity, brk int32
	bufOverrun                  int32
	reserved                    [9]int32
}

func getICount(fd int) (icount, error) {
	var k serialICounter
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGICOUNT, uintptr(unsafe.Pointer(&k)))
	if errno != 0 {
		return icount{}, errno
	}
	return icount{
		brk:     uint32(k.brk),
		frame:   uint32(k.frame),
		parity:  uint32(k.parity),
		overrun: uint32(k.overrun) + uint32(k.bufOverrun),
		rng:     uint32(k.rng),
	}, nil
}

func flush(fd, queue int) error { return unix.IoctlSetInt(fd, unix.TCFLSH, queue) }

// drain is tcdrain: TCSBRK with a non-zero argument sends no break and
// waits for the output to leave.
func drain(fd int) error { return unix.IoctlSetInt(fd, unix.TCSBRK, 1) }
