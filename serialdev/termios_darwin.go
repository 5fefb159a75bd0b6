package serialdev

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Flow control flags of the BSD termios that x/sys/unix does not name.
const (
	cctsOflow = 0x00010000 // CCTS_OFLOW: CTS gates output
	crtsIflow = 0x00020000 // CRTS_IFLOW: RTS throttles input
	cdtrIflow = 0x00040000 // CDTR_IFLOW: DTR throttles input
	cdsrOflow = 0x00080000 // CDSR_OFLOW: DSR gates output
	ccarOflow = 0x00100000 // CCAR_OFLOW: DCD gates output

	// ioSSIOSpeed is IOSSIOSPEED from IOKit/serial/ioss.h: any integer
	// rate, set after the termios (which takes the classic rates only).
	ioSSIOSpeed = 0x80045402
)

func getTermios(fd int) (*unix.Termios, error) { return unix.IoctlGetTermios(fd, unix.TIOCGETA) }

func setTermios(fd int, t *unix.Termios) error { return unix.IoctlSetTermios(fd, unix.TIOCSETA, t) }

// classicRate reports whether the termios speed fields take rate as is.
func classicRate(rate int) bool {
	switch rate {
	case 50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800,
		7200, 9600, 14400, 19200, 28800, 38400, 57600, 76800, 115200, 230400:
		return true
	}
	return false
}

// setSpeed sets a rate the termios cannot carry.
func setSpeed(fd int, rate int) error {
	if classicRate(rate) {
		return nil
	}
	return unix.IoctlSetPointerInt(fd, ioSSIOSpeed, rate)
}

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
	if !classicRate(int(t.Ospeed)) {
		// Set by IOSSIOSPEED before: TIOCSETA would refuse it, and the
		// caller sets it again with setSpeed.
		t.Ispeed, t.Ospeed = 9600, 9600
	}
}

// supported reports what macOS cannot do of valid settings.
func supported(s Settings) error {
	if s.Parity == ParityMark || s.Parity == ParitySpace {
		return errors.New(s.Parity.String() + " parity is not supported on macOS")
	}
	return nil
}

var csize = [...]uint64{5: unix.CS5, 6: unix.CS6, 7: unix.CS7, 8: unix.CS8}

// applyTermios changes t to s; a rate the termios cannot carry is set
// by setSpeed afterwards. Two stop bits with 5 data bits are 1.5 on a UART.
func applyTermios(t *unix.Termios, s Settings) {
	rate := uint64(s.BaudRate)
	if !classicRate(s.BaudRate) {
		rate = 9600
	}
	t.Ispeed, t.Ospeed = rate, rate

	t.Cflag &^= unix.CSIZE
	t.Cflag |= csize[s.DataBits]

	t.Cflag &^= unix.PARENB | unix.PARODD
	switch s.Parity {
	case ParityOdd:
		t.Cflag |= unix.PARENB | unix.PARODD
	case ParityEven:
		t.Cflag |= unix.PARENB
	}

	t.Cflag &^= unix.CSTOPB
	if s.StopBits != Stop1 {
		t.Cflag |= unix.CSTOPB
	}

	t.Cflag &^= cctsOflow | crtsIflow | cdtrIflow | cdsrOflow | ccarOflow
	t.Iflag &^= unix.IXON | unix.IXOFF | unix.IXANY
	switch s.OutFlow {
	case FlowRTSCTS:
		t.Cflag |= cctsOflow
	case FlowDSR:
		t.Cflag |= cdsrOflow
	case FlowDCD:
		t.Cflag |= ccarOflow
	case FlowXonXoff:
		t.Iflag |= unix.IXON
	}
	switch s.InFlow {
	case FlowRTSCTS:
		t.Cflag |= crtsIflow
	case FlowDTR:
		t.Cflag |= cdtrIflow
	case FlowXonXoff:
		t.Iflag |= unix.IXOFF
	}
	t.Cc[unix.VSTART] = 0x11
	t.Cc[unix.VSTOP] = 0x13
}

// TermiosSettings gives the settings that t (read with TIOCGETA) puts in
// force.
func TermiosSettings(t *unix.Termios) Settings {
	s := Settings{BaudRate: int(t.Ospeed)}
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
		s.Parity = ParityEven
		if t.Cflag&unix.PARODD != 0 {
			s.Parity = ParityOdd
		}
	}
	if t.Cflag&unix.CSTOPB != 0 {
		s.StopBits = Stop2
		if s.DataBits == 5 {
			s.StopBits = Stop1Half
		}
	}
	switch {
	case t.Cflag&cctsOflow != 0:
		s.OutFlow = FlowRTSCTS
	case t.Cflag&cdsrOflow != 0:
		s.OutFlow = FlowDSR
	case t.Cflag&ccarOflow != 0:
		s.OutFlow = FlowDCD
	case t.Iflag&unix.IXON != 0:
		s.OutFlow = FlowXonXoff
	}
	switch {
	case t.Cflag&crtsIflow != 0:
		s.InFlow = FlowRTSCTS
	case t.Cflag&cdtrIflow != 0:
		s.InFlow = FlowDTR
	case t.Iflag&unix.IXOFF != 0:
		s.InFlow = FlowXonXoff
	}
	return s
}

// getICount: macOS has no line event counters.
func getICount(int) (icount, error) { return icount{}, unix.ENOTTY }

// flush is tcflush: TCIFLUSH, TCOFLUSH and TCIOFLUSH are FREAD, FWRITE
// and both, the argument TIOCFLUSH takes.
func flush(fd, queue int) error { return unix.IoctlSetPointerInt(fd, unix.TIOCFLUSH, queue) }

func drain(fd int) error { return unix.IoctlSetInt(fd, unix.TIOCDRAIN, 0) }
