package rfc2217

import (
	"strconv"
	"strings"
)

// String methods name commands as RFC 2217 does, for -v logs: "SET-PARITY
// even", not a struct dump.

func (c Signature) String() string {
	if c.Text == "" {
		return "SIGNATURE ask"
	}
	return "SIGNATURE " + strconv.Quote(c.Text)
}

func (c SetBaudRate) String() string {
	if c.Baud == 0 {
		return "SET-BAUDRATE ask"
	}
	return "SET-BAUDRATE " + strconv.FormatUint(uint64(c.Baud), 10)
}

func (c SetDataSize) String() string {
	if c.Size == 0 {
		return "SET-DATASIZE ask"
	}
	return "SET-DATASIZE " + strconv.Itoa(int(c.Size))
}

func (c SetParity) String() string {
	return "SET-PARITY " + pick(c.Parity, "ask", "none", "odd", "even", "mark", "space")
}

func (c SetStopSize) String() string {
	return "SET-STOPSIZE " + pick(c.Stop, "ask", "1", "2", "1.5")
}

func (c SetControl) String() string {
	return "SET-CONTROL " + pick(c.Value,
		"flow ask", "flow none", "flow XON/XOFF", "flow RTS/CTS",
		"BREAK ask", "BREAK on", "BREAK off",
		"DTR ask", "DTR on", "DTR off",
		"RTS ask", "RTS on", "RTS off",
		"inbound flow ask", "inbound flow none", "inbound flow XON/XOFF", "inbound flow RTS/CTS",
		"flow DCD", "inbound flow DTR", "flow DSR")
}

func (c NotifyLineState) String() string {
	return "NOTIFY-LINESTATE " + bits(c.State, []string{"data-ready", "overrun", "parity-error", "framing-error", "break", "holding-empty", "shift-empty", "timeout"})
}

func (c NotifyModemState) String() string {
	return "NOTIFY-MODEMSTATE " + bits(c.State, []string{"delta-CTS", "delta-DSR", "RI-edge", "delta-DCD", "CTS", "DSR", "RI", "DCD"})
}

func (FlowControlSuspend) String() string { return "FLOWCONTROL-SUSPEND" }
func (FlowControlResume) String() string  { return "FLOWCONTROL-RESUME" }

func (c SetLinestateMask) String() string {
	return "SET-LINESTATE-MASK " + strconv.Itoa(int(c.Mask))
}

func (c SetModemstateMask) String() string {
	return "SET-MODEMSTATE-MASK " + strconv.Itoa(int(c.Mask))
}

func (c PurgeData) String() string {
	return "PURGE-DATA " + pick(c.Which, "?", "receive", "transmit", "both")
}

// pick names value v from names, or gives the number.
func pick(v byte, names ...string) string {
	if int(v) < len(names) {
		return names[v]
	}
	return strconv.Itoa(int(v))
}

// bits names the set bits of v, lowest first.
func bits(v byte, names []string) string {
	var set []string
	for i, n := range names {
		if v&(1<<i) != 0 {
			set = append(set, n)
		}
	}
	if len(set) == 0 {
		return "none"
	}
	return strings.Join(set, " ")
}

// optionName names a telnet option for logs.
func optionName(o byte) string {
	switch o {
	case OptBinary:
		return "BINARY"
	case OptEcho:
		return "ECHO"
	case OptSGA:
		return "SUPPRESS-GO-AHEAD"
	case OptComPort:
		return "COM-PORT-OPTION"
	}
	return strconv.Itoa(int(o))
}

// telnetCommandName names a telnet command byte for logs.
func telnetCommandName(c byte) string {
	if c >= SE {
		return []string{"SE", "NOP", "DM", "BRK", "IP", "AO", "AYT", "EC", "EL", "GA", "SB", "WILL", "WONT", "DO", "DONT", "IAC"}[c-SE]
	}
	return strconv.Itoa(int(c))
}
