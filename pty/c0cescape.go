package pty

import (
	"encoding/binary"

	"github.com/sertun/sertun/serialdev"
)

// The read stream of a Windows serial port with IOCTL_SERIAL_LSRMST_INSERT
// on, as com0com writes it for the hidden end of a pair. Data bytes pass as
// they are, except the escape byte E that the IOCTL chose:
//
//	E 0x00                    a data byte equal to E
//	E 0x01 LSR DATA           line status with the byte it came with (DATA is data)
//	E 0x02 LSR                line status, no data
//	E 0x03 MSR                modem status: the pair's wiring shows the
//	                          program's RTS as CTS (0x10), DTR as DSR (0x20) and DCD (0x80)
//	E 0x10 BAUD(4, LE)        com0com "c0c": the program's baud rate
//	E 0x11 SIZE PARITY STOP   com0com "c0c": the program's line control
//	                          (parity 0-4 none/odd/even/mark/space, stop 0-2 = 1/1.5/2)
//
// The same sequences make up the IOCTL's answer when C0CE_INSERT_IOCTL_GET
// asks for the current values.
const (
	lsrmstEscape    = 0x00
	lsrmstLSRData   = 0x01
	lsrmstLSRNoData = 0x02
	lsrmstMST       = 0x03
	c0cInsertRBR    = 0x10
	c0cInsertRLC    = 0x11

	msrCTS = 0x10
	msrDSR = 0x20
)

// c0cEvent is one status insertion.
type c0cEvent struct {
	code byte // what followed the escape byte
	args [4]byte
}

func (e c0cEvent) baud() int { return int(binary.LittleEndian.Uint32(e.args[:])) }

// c0cDecoder splits the stream into data and events. It keeps its state
// between calls, so a sequence may be split anywhere.
type c0cDecoder struct {
	esc   byte
	state int // 0 data, 1 after escape, 2 collecting args
	ev    c0cEvent
	n     int // args collected
	need  int // args the code takes
}

// argCount is how many bytes follow each code (-1: unknown code).
func argCount(code byte) int {
	switch code {
	case lsrmstEscape:
		return 0
	case lsrmstLSRData:
		return 2
	case lsrmstLSRNoData, lsrmstMST:
		return 1
	case c0cInsertRBR:
		return 4
	case c0cInsertRLC:
		return 3
	}
	return -1
}

// decode appends the data bytes of src to dst and calls emit for each
// event. (Not in place: an escape byte held over from the last call may
// come out as data together with the next byte.)
func (d *c0cDecoder) decode(dst, src []byte, emit func(c0cEvent)) []byte {
	out := dst
	for _, c := range src {
		switch d.state {
		case 0:
			if c == d.esc {
				d.state = 1
				continue
			}
			out = append(out, c)
		case 1:
			switch n := argCount(c); n {
			case 0:
				out = append(out, d.esc)
				d.state = 0
			case -1:
				// Not a sequence the driver makes: keep both bytes
				// rather than lose data.
				out = append(out, d.esc, c)
				d.state = 0
			default:
				d.ev = c0cEvent{code: c}
				d.n, d.need, d.state = 0, n, 2
			}
		case 2:
			d.ev.args[d.n] = c
			d.n++
			if d.n < d.need {
				continue
			}
			d.state = 0
			if d.ev.code == lsrmstLSRData {
				out = append(out, d.ev.args[1])
			}
			emit(d.ev)
		}
	}
	return out
}

// c0cState is the program's side of the pair as the events tell it.
type c0cState struct {
	settings serialdev.Settings
	msr      byte
	msrKnown bool
}

// apply folds e into s and reports what changed.
func (s *c0cState) apply(e c0cEvent) Changes {
	var c Changes
	switch e.code {
	case c0cInsertRBR:
		if b := e.baud(); b > 0 && b <= 100_000_000 && b != s.settings.BaudRate {
			s.settings.BaudRate = b
			c.Settings = true
		}
	case c0cInsertRLC:
		n := s.settings
		if size := int(e.args[0]); size >= 5 && size <= 8 {
			n.DataBits = size
		}
		if e.args[1] <= 4 {
			n.Parity = serialdev.Parity(e.args[1]) // Windows' order is ours
		}
		switch e.args[2] {
		case 0:
			n.StopBits = serialdev.Stop1
		case 1:
			n.StopBits = serialdev.Stop1Half
		case 2:
			n.StopBits = serialdev.Stop2
		}
		if n != s.settings {
			s.settings = n
			c.Settings = true
		}
	case lsrmstMST:
		const lines = msrCTS | msrDSR
		if !s.msrKnown || (e.args[0]^s.msr)&lines != 0 {
			c.Lines = true
		}
		s.msr, s.msrKnown = e.args[0], true
	}
	return c
}

// lines is the program's DTR and RTS as the pair's wiring shows them.
func (s *c0cState) lines() (dtr, rts, ok bool) {
	return s.msr&msrDSR != 0, s.msr&msrCTS != 0, s.msrKnown
}
