// Package serialdev is sertun's view of a serial port: the Port interface that
// every other package talks to, the settings a port carries, and the ports
// themselves (physical devices, the built-in loop:// plug) opened by URL.
//
// Open takes a device path (/dev/ttyUSB0, /dev/pts/3, COM3) or "loop://".
// Devices are opened exclusively and raw. On Linux any integer baud rate is
// set through termios2 (BOTHER), mark and space parity through CMSPAR, and
// the modem lines and line event counters (TIOCMGET, TIOCGICOUNT) are
// polled every 15 ms while the port is open, so that StatusChanged reports
// short pulses, breaks and line errors too. macOS sets other rates with
// IOSSIOSPEED; Windows drives the port through its DCB. Data moves through
// the Go runtime's poller everywhere, so deadlines work and Close ends a
// pending Read.
//
// The loop:// plug echoes what is written, connects DTR to DSR and DCD and
// RTS to CTS, counts a break for each SetBreak(true), and keeps every
// setting exactly as given.
//
// List finds the ports of the machine with their USB identities.
package serialdev

import (
	"errors"
	"fmt"
	"time"
)

// Port is an open serial port. Read and Write move bytes; deadlines work and
// Close unblocks a pending Read or Write, which then fail with an error that
// wraps os.ErrClosed. A Read that fails with another error (io.EOF, EIO)
// means the device is gone.
//
// The control methods are safe to call from any goroutine, concurrently with
// Read and Write.
type Port interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error

	// Settings reads back the settings in force on the device, which may
	// differ from the last SetSettings (a pty forces 8 data bits and no
	// parity, for example).
	Settings() (Settings, error)
	// SetSettings applies s as a whole. An invalid s fails with an error
	// wrapping ErrInvalidSettings and changes nothing.
	SetSettings(s Settings) error

	// SetDTR, SetRTS and SetBreak drive the output lines. A device without
	// modem lines (a pty, many USB CDC devices) fails with an error
	// wrapping ErrNoModemLines.
	SetDTR(on bool) error
	SetRTS(on bool) error
	SetBreak(on bool) error

	// Status returns the input lines and the line event counters. A device
	// without modem lines reports no lines and ErrNoModemLines.
	Status() (Status, error)
	// StatusChanged delivers a value whenever Status may have changed (the
	// channel has a buffer of one, so signals coalesce). It is closed when
	// the port is closed or the device is gone.
	StatusChanged() <-chan struct{}

	// Purge discards data in the named buffers.
	Purge(which Purge) error
	// Drain waits until everything written has left the device.
	Drain() error
}

// Errors that callers branch on.
var (
	ErrInvalidSettings = errors.New("invalid serial settings")
	ErrNoModemLines    = errors.New("device has no modem control lines")
	ErrBusy            = errors.New("port busy")
	ErrNotFound        = errors.New("no such serial port")
	ErrUnknownScheme   = errors.New("unknown port URL scheme")
)

// Parity is the parity bit setting.
type Parity uint8

const (
	ParityNone Parity = iota
	ParityOdd
	ParityEven
	ParityMark
	ParitySpace
)

func (p Parity) String() string {
	switch p {
	case ParityNone:
		return "none"
	case ParityOdd:
		return "odd"
	case ParityEven:
		return "even"
	case ParityMark:
		return "mark"
	case ParitySpace:
		return "space"
	}
	return fmt.Sprintf("Parity(%d)", uint8(p))
}

// Letter is the one-letter form used in "9600 8N1".
func (p Parity) Letter() string {
	if p > ParitySpace {
		return "?"
	}
	return string("NOEMS"[p])
}

// StopBits is the number of stop bits.
type StopBits uint8

const (
	Stop1 StopBits = iota
	Stop1Half
	Stop2
)

func (s StopBits) String() string {
	switch s {
	case Stop1:
		return "1"
	case Stop1Half:
		return "1.5"
	case Stop2:
		return "2"
	}
	return fmt.Sprintf("StopBits(%d)", uint8(s))
}

// Flow is a flow control method for one direction.
type Flow uint8

const (
	FlowNone Flow = iota
	FlowXonXoff
	FlowRTSCTS // outbound: CTS gates our output; inbound: we drive RTS
	FlowDCD    // outbound only
	FlowDSR    // outbound only
	FlowDTR    // inbound only
)

func (f Flow) String() string {
	switch f {
	case FlowNone:
		return "none"
	case FlowXonXoff:
		return "xonxoff"
	case FlowRTSCTS:
		return "rtscts"
	case FlowDCD:
		return "dcd"
	case FlowDSR:
		return "dsr"
	case FlowDTR:
		return "dtr"
	}
	return fmt.Sprintf("Flow(%d)", uint8(f))
}

// Settings are the line settings of a port. Out is the flow control applied
// to what the port sends (the device obeys CTS or XOFF), In to what it
// receives (the device drives RTS or sends XOFF).
type Settings struct {
	BaudRate int
	DataBits int // 5 to 8
	Parity   Parity
	StopBits StopBits
	OutFlow  Flow
	InFlow   Flow
}

// DefaultSettings returns 9600 8N1 without flow control.
func DefaultSettings() Settings { return Settings{BaudRate: 9600, DataBits: 8} }

// Validate reports whether s can be asked of a device.
func (s Settings) Validate() error {
	switch {
	case s.BaudRate <= 0 || s.BaudRate > 100_000_000:
		return fmt.Errorf("%w: baud rate %d (want 1 to 100000000)", ErrInvalidSettings, s.BaudRate)
	case s.DataBits < 5 || s.DataBits > 8:
		return fmt.Errorf("%w: %d data bits (want 5 to 8)", ErrInvalidSettings, s.DataBits)
	case s.Parity > ParitySpace:
		return fmt.Errorf("%w: parity %v", ErrInvalidSettings, s.Parity)
	case s.StopBits > Stop2:
		return fmt.Errorf("%w: stop bits %v", ErrInvalidSettings, s.StopBits)
	case s.OutFlow > FlowDSR || s.OutFlow == FlowDTR:
		return fmt.Errorf("%w: outbound flow control %v", ErrInvalidSettings, s.OutFlow)
	case s.InFlow > FlowDTR || s.InFlow == FlowDCD || s.InFlow == FlowDSR:
		return fmt.Errorf("%w: inbound flow control %v", ErrInvalidSettings, s.InFlow)
	}
	return nil
}

// String gives the usual short form, "115200 8N1", with flow control when set.
func (s Settings) String() string {
	str := fmt.Sprintf("%d %d%s%v", s.BaudRate, s.DataBits, s.Parity.Letter(), s.StopBits)
	if s.OutFlow != FlowNone || s.InFlow != FlowNone {
		if s.OutFlow == s.InFlow {
			str += " " + s.OutFlow.String()
		} else {
			str += fmt.Sprintf(" out:%v in:%v", s.OutFlow, s.InFlow)
		}
	}
	return str
}

// Lines is a set of modem input lines.
type Lines uint8

const (
	CTS Lines = 1 << iota
	DSR
	RI
	DCD
)

// Status is a snapshot of a port's inputs. The counters only grow; a change
// between two snapshots means the event happened in between, however short.
type Status struct {
	Lines Lines
	// Counts of events since the port was opened.
	Breaks, FramingErrors, ParityErrors, Overruns, Rings uint64
}

// Purge names the buffers to discard.
type Purge uint8

const (
	PurgeReceive  Purge = 1 << iota // data received from the line, not yet read
	PurgeTransmit                   // data written, not yet sent on the line
	PurgeBoth     = PurgeReceive | PurgeTransmit
)

// Info describes a port found by List.
type Info struct {
	Name         string `json:"name"`
	IsUSB        bool   `json:"usb"`
	VID          string `json:"vid,omitempty"`
	PID          string `json:"pid,omitempty"`
	SerialNumber string `json:"serial_number,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Product      string `json:"product,omitempty"`
}
