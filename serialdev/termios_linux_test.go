package serialdev

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestTermiosMapping covers what a pty cannot show: data bits and parity
// (a pty forces 8N), and the readings of what Linux cannot tell apart.
func TestTermiosMapping(t *testing.T) {
	cases := []struct {
		name  string
		set   Settings
		cflag uint32 // must be set
		clear uint32 // must be clear
		iflag uint32 // must be set
		back  Settings
	}{
		{"7E1", Settings{19200, 7, ParityEven, Stop1, FlowNone, FlowNone},
			unix.CS7 | unix.PARENB, unix.PARODD | unix.CMSPAR | unix.CSTOPB, 0,
			Settings{19200, 7, ParityEven, Stop1, FlowNone, FlowNone}},
		{"6O2", Settings{300, 6, ParityOdd, Stop2, FlowNone, FlowNone},
			unix.CS6 | unix.PARENB | unix.PARODD | unix.CSTOPB, unix.CMSPAR, 0,
			Settings{300, 6, ParityOdd, Stop2, FlowNone, FlowNone}},
		{"8M1", Settings{9600, 8, ParityMark, Stop1, FlowNone, FlowNone},
			unix.CS8 | unix.PARENB | unix.PARODD | unix.CMSPAR, 0, 0,
			Settings{9600, 8, ParityMark, Stop1, FlowNone, FlowNone}},
		{"8S1", Settings{9600, 8, ParitySpace, Stop1, FlowNone, FlowNone},
			unix.CS8 | unix.PARENB | unix.CMSPAR, unix.PARODD, 0,
			Settings{9600, 8, ParitySpace, Stop1, FlowNone, FlowNone}},
		{"5N1.5 is CSTOPB", Settings{110, 5, ParityNone, Stop1Half, FlowNone, FlowNone},
			unix.CS5 | unix.CSTOPB, unix.PARENB, 0,
			Settings{110, 5, ParityNone, Stop1Half, FlowNone, FlowNone}},
		{"5N2 reads back as 1.5, what a UART sends", Settings{110, 5, ParityNone, Stop2, FlowNone, FlowNone},
			unix.CS5 | unix.CSTOPB, 0, 0,
			Settings{110, 5, ParityNone, Stop1Half, FlowNone, FlowNone}},
		{"8N1.5 is two stop bits", Settings{9600, 8, ParityNone, Stop1Half, FlowNone, FlowNone},
			unix.CS8 | unix.CSTOPB, 0, 0,
			Settings{9600, 8, ParityNone, Stop2, FlowNone, FlowNone}},
		{"RTS/CTS outbound only is both", Settings{9600, 8, ParityNone, Stop1, FlowRTSCTS, FlowNone},
			unix.CRTSCTS, 0, 0,
			Settings{9600, 8, ParityNone, Stop1, FlowRTSCTS, FlowRTSCTS}},
		{"RTS/CTS inbound, XON/XOFF outbound", Settings{9600, 8, ParityNone, Stop1, FlowXonXoff, FlowRTSCTS},
			unix.CRTSCTS, 0, unix.IXON,
			Settings{9600, 8, ParityNone, Stop1, FlowRTSCTS, FlowRTSCTS}},
		{"odd rate", Settings{31250, 8, ParityNone, Stop1, FlowNone, FlowXonXoff},
			unix.BOTHER, 0, unix.IXOFF,
			Settings{31250, 8, ParityNone, Stop1, FlowNone, FlowXonXoff}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tio := &unix.Termios{Cflag: unix.B38400 | unix.CS8 | unix.CLOCAL | unix.CREAD, Iflag: unix.IXANY}
			SetTermios(tio, c.set)
			if tio.Cflag&c.cflag != c.cflag || tio.Cflag&c.clear != 0 || tio.Iflag&c.iflag != c.iflag {
				t.Errorf("cflag %#x iflag %#x: want cflag %#x set, %#x clear, iflag %#x set",
					tio.Cflag, tio.Iflag, c.cflag, c.clear, c.iflag)
			}
			if tio.Cflag&(unix.CLOCAL|unix.CREAD) != unix.CLOCAL|unix.CREAD || tio.Iflag&unix.IXANY != 0 {
				t.Errorf("cflag %#x iflag %#x: CLOCAL|CREAD lost or IXANY kept", tio.Cflag, tio.Iflag)
			}
			if got := TermiosSettings(tio); got != c.back {
				t.Errorf("reads back %v, want %v", got, c.back)
			}
		})
	}
}

// A driver may report a classic rate code rather than BOTHER.
func TestTermiosClassicRate(t *testing.T) {
	for code, rate := range baudRates {
		tio := &unix.Termios{Cflag: code | unix.CS8, Ospeed: 12345}
		if got := TermiosSettings(tio).BaudRate; got != rate {
			t.Errorf("code %#x reads %d, want %d", code, got, rate)
		}
	}
}
