package rfc2217

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sertun/sertun/serialdev"
)

// COM-PORT-OPTION command codes, client to server. The server answers with
// AnswerCode(code).
const (
	CmdSignature         byte = 0
	CmdSetBaudRate       byte = 1
	CmdSetDataSize       byte = 2
	CmdSetParity         byte = 3
	CmdSetStopSize       byte = 4
	CmdSetControl        byte = 5
	CmdNotifyLineState   byte = 6
	CmdNotifyModemState  byte = 7
	CmdFlowControlSusp   byte = 8
	CmdFlowControlResume byte = 9
	CmdSetLinestateMask  byte = 10
	CmdSetModemstateMask byte = 11
	CmdPurgeData         byte = 12
)

// serverOffset is what a server adds to a command code (RFC 2217).
const serverOffset = 100

// AnswerCode is the code a server uses for command code c.
func AnswerCode(c byte) byte { return c + serverOffset }

// SET-PARITY values.
const (
	ParityAsk   byte = 0
	ParityNone  byte = 1
	ParityOdd   byte = 2
	ParityEven  byte = 3
	ParityMark  byte = 4
	ParitySpace byte = 5
)

// SET-STOPSIZE values. Note 1.5 is 3, not 2.
const (
	StopAsk   byte = 0
	Stop1     byte = 1
	Stop2     byte = 2
	Stop1Half byte = 3
)

// SET-CONTROL values.
const (
	CtlFlowAsk        byte = 0 // outbound (or both) flow control
	CtlFlowNone       byte = 1
	CtlFlowXonXoff    byte = 2
	CtlFlowHardware   byte = 3
	CtlBreakAsk       byte = 4
	CtlBreakOn        byte = 5
	CtlBreakOff       byte = 6
	CtlDTRAsk         byte = 7
	CtlDTROn          byte = 8
	CtlDTROff         byte = 9
	CtlRTSAsk         byte = 10
	CtlRTSOn          byte = 11
	CtlRTSOff         byte = 12
	CtlInFlowAsk      byte = 13
	CtlInFlowNone     byte = 14
	CtlInFlowXonXoff  byte = 15
	CtlInFlowHardware byte = 16
	CtlFlowDCD        byte = 17 // outbound
	CtlInFlowDTR      byte = 18
	CtlFlowDSR        byte = 19 // outbound
)

// Line state bits (NOTIFY-LINESTATE, SET-LINESTATE-MASK).
const (
	LineTimeout      byte = 128
	LineShiftEmpty   byte = 64
	LineHoldingEmpty byte = 32
	LineBreak        byte = 16
	LineFraming      byte = 8
	LineParity       byte = 4
	LineOverrun      byte = 2
	LineDataReady    byte = 1
)

// Modem state bits (NOTIFY-MODEMSTATE, SET-MODEMSTATE-MASK).
const (
	ModemDCD      byte = 128
	ModemRI       byte = 64
	ModemDSR      byte = 32
	ModemCTS      byte = 16
	ModemDeltaDCD byte = 8
	ModemRIEdge   byte = 4 // trailing edge of RI
	ModemDeltaDSR byte = 2
	ModemDeltaCTS byte = 1
)

// PURGE-DATA values.
const (
	PurgeRx   byte = 1 // the server's receive buffer (from the device)
	PurgeTx   byte = 2 // the server's transmit buffer (to the device)
	PurgeBoth byte = 3
)

// Errors from DecodeCommand, wrapped with details.
var (
	ErrUnknownCommand = errors.New("rfc2217: unknown COM-PORT-OPTION command")
	ErrBadCommand     = errors.New("rfc2217: malformed COM-PORT-OPTION command")
)

// Command is one COM-PORT-OPTION command or answer: the value after the
// code byte. Each command has its own type.
type Command interface {
	// Code is the client-to-server code (answers add 100).
	Code() byte
	// marshal appends the value bytes (unescaped) to b.
	marshal(b []byte) []byte
	// unmarshal parses the value bytes; false if they are malformed.
	unmarshal(v []byte) bool
}

// Signature is SIGNATURE: the sender's name; empty asks for the peer's.
type Signature struct{ Text string }

// SetBaudRate is SET-BAUDRATE; 0 asks.
type SetBaudRate struct{ Baud uint32 }

// SetDataSize is SET-DATASIZE; 0 asks, else 5 to 8.
type SetDataSize struct{ Size byte }

// SetParity is SET-PARITY: one of the Parity* values.
type SetParity struct{ Parity byte }

// SetStopSize is SET-STOPSIZE: one of the Stop* values.
type SetStopSize struct{ Stop byte }

// SetControl is SET-CONTROL: one of the Ctl* values.
type SetControl struct{ Value byte }

// NotifyLineState is NOTIFY-LINESTATE: Line* bits.
type NotifyLineState struct{ State byte }

// NotifyModemState is NOTIFY-MODEMSTATE: Modem* bits.
type NotifyModemState struct{ State byte }

// FlowControlSuspend is FLOWCONTROL-SUSPEND: stop sending data to me.
type FlowControlSuspend struct{}

// FlowControlResume is FLOWCONTROL-RESUME: go on sending.
type FlowControlResume struct{}

// SetLinestateMask is SET-LINESTATE-MASK.
type SetLinestateMask struct{ Mask byte }

// SetModemstateMask is SET-MODEMSTATE-MASK.
type SetModemstateMask struct{ Mask byte }

// PurgeData is PURGE-DATA: one of PurgeRx, PurgeTx, PurgeBoth.
type PurgeData struct{ Which byte }

func (Signature) Code() byte          { return CmdSignature }
func (SetBaudRate) Code() byte        { return CmdSetBaudRate }
func (SetDataSize) Code() byte        { return CmdSetDataSize }
func (SetParity) Code() byte          { return CmdSetParity }
func (SetStopSize) Code() byte        { return CmdSetStopSize }
func (SetControl) Code() byte         { return CmdSetControl }
func (NotifyLineState) Code() byte    { return CmdNotifyLineState }
func (NotifyModemState) Code() byte   { return CmdNotifyModemState }
func (FlowControlSuspend) Code() byte { return CmdFlowControlSusp }
func (FlowControlResume) Code() byte  { return CmdFlowControlResume }
func (SetLinestateMask) Code() byte   { return CmdSetLinestateMask }
func (SetModemstateMask) Code() byte  { return CmdSetModemstateMask }
func (PurgeData) Code() byte          { return CmdPurgeData }

func (c Signature) marshal(b []byte) []byte { return append(b, c.Text...) }
func (c *Signature) unmarshal(v []byte) bool {
	c.Text = string(v)
	return true
}

func (c SetBaudRate) marshal(b []byte) []byte { return binary.BigEndian.AppendUint32(b, c.Baud) }
func (c *SetBaudRate) unmarshal(v []byte) bool {
	if len(v) != 4 {
		return false
	}
	c.Baud = binary.BigEndian.Uint32(v)
	return true
}

func (c SetDataSize) marshal(b []byte) []byte       { return append(b, c.Size) }
func (c *SetDataSize) unmarshal(v []byte) bool      { return oneByte(v, &c.Size) }
func (c SetParity) marshal(b []byte) []byte         { return append(b, c.Parity) }
func (c *SetParity) unmarshal(v []byte) bool        { return oneByte(v, &c.Parity) }
func (c SetStopSize) marshal(b []byte) []byte       { return append(b, c.Stop) }
func (c *SetStopSize) unmarshal(v []byte) bool      { return oneByte(v, &c.Stop) }
func (c SetControl) marshal(b []byte) []byte        { return append(b, c.Value) }
func (c *SetControl) unmarshal(v []byte) bool       { return oneByte(v, &c.Value) }
func (c NotifyLineState) marshal(b []byte) []byte   { return append(b, c.State) }
func (c *NotifyLineState) unmarshal(v []byte) bool  { return oneByte(v, &c.State) }
func (c NotifyModemState) marshal(b []byte) []byte  { return append(b, c.State) }
func (c *NotifyModemState) unmarshal(v []byte) bool { return oneByte(v, &c.State) }
func (c SetLinestateMask) marshal(b []byte) []byte  { return append(b, c.Mask) }
func (c *SetLinestateMask) unmarshal(v []byte) bool { return oneByte(v, &c.Mask) }
func (c SetModemstateMask) marshal(b []byte) []byte { return append(b, c.Mask) }
func (c *SetModemstateMask) unmarshal(v []byte) bool {
	return oneByte(v, &c.Mask)
}
func (c PurgeData) marshal(b []byte) []byte  { return append(b, c.Which) }
func (c *PurgeData) unmarshal(v []byte) bool { return oneByte(v, &c.Which) }

// Suspend and resume carry no value; a stray byte is tolerated rather than
// losing a flow-control request over it.
func (FlowControlSuspend) marshal(b []byte) []byte { return b }
func (*FlowControlSuspend) unmarshal([]byte) bool  { return true }
func (FlowControlResume) marshal(b []byte) []byte  { return b }
func (*FlowControlResume) unmarshal([]byte) bool   { return true }

func oneByte(v []byte, dst *byte) bool {
	if len(v) != 1 {
		return false
	}
	*dst = v[0]
	return true
}

// DecodeCommand parses the payload of IAC SB COM-PORT-OPTION ... IAC SE
// (Event.Data: code byte, then value). answer is true for a server's code
// (100 and up), and cmd is then the command answered. The returned value is
// a pointer to the command's struct (*SetBaudRate, ...).
func DecodeCommand(payload []byte) (cmd Command, answer bool, err error) {
	if len(payload) == 0 {
		return nil, false, fmt.Errorf("%w: no command code", ErrBadCommand)
	}
	code := payload[0]
	if code >= serverOffset {
		code -= serverOffset
		answer = true
	}
	var c Command
	switch code {
	case CmdSignature:
		c = &Signature{}
	case CmdSetBaudRate:
		c = &SetBaudRate{}
	case CmdSetDataSize:
		c = &SetDataSize{}
	case CmdSetParity:
		c = &SetParity{}
	case CmdSetStopSize:
		c = &SetStopSize{}
	case CmdSetControl:
		c = &SetControl{}
	case CmdNotifyLineState:
		c = &NotifyLineState{}
	case CmdNotifyModemState:
		c = &NotifyModemState{}
	case CmdFlowControlSusp:
		c = &FlowControlSuspend{}
	case CmdFlowControlResume:
		c = &FlowControlResume{}
	case CmdSetLinestateMask:
		c = &SetLinestateMask{}
	case CmdSetModemstateMask:
		c = &SetModemstateMask{}
	case CmdPurgeData:
		c = &PurgeData{}
	default:
		return nil, answer, fmt.Errorf("%w: code %d", ErrUnknownCommand, payload[0])
	}
	if !c.unmarshal(payload[1:]) {
		return nil, answer, fmt.Errorf("%w: code %d with %d value bytes", ErrBadCommand, payload[0], len(payload)-1)
	}
	return c, answer, nil
}

// AppendCommand appends the whole subnegotiation for c to dst: IAC SB 44,
// the code (AnswerCode(c.Code()) when answer, for a server), the value with
// IAC doubled, IAC SE.
func AppendCommand(dst []byte, c Command, answer bool) []byte {
	code := c.Code()
	if answer {
		code = AnswerCode(code)
	}
	dst = append(dst, IAC, SB, OptComPort, code)
	start := len(dst)
	dst = c.marshal(dst)
	// Double any IAC in the value in place; values are a few bytes, apart
	// from a signature.
	for i := start; i < len(dst); i++ {
		if dst[i] == IAC {
			dst = append(dst, 0)
			copy(dst[i+1:], dst[i:])
			i++
		}
	}
	return append(dst, IAC, SE)
}

// ParityToWire maps a serialdev parity to its SET-PARITY value.
func ParityToWire(p serialdev.Parity) byte { return byte(p) + 1 }

// ParityFromWire maps a SET-PARITY value other than ParityAsk.
func ParityFromWire(v byte) (serialdev.Parity, bool) {
	if v < ParityNone || v > ParitySpace {
		return 0, false
	}
	return serialdev.Parity(v - 1), true
}

// StopToWire maps serialdev stop bits to a SET-STOPSIZE value.
func StopToWire(s serialdev.StopBits) byte {
	switch s {
	case serialdev.Stop2:
		return Stop2
	case serialdev.Stop1Half:
		return Stop1Half
	}
	return Stop1
}

// StopFromWire maps a SET-STOPSIZE value other than StopAsk.
func StopFromWire(v byte) (serialdev.StopBits, bool) {
	switch v {
	case Stop1:
		return serialdev.Stop1, true
	case Stop2:
		return serialdev.Stop2, true
	case Stop1Half:
		return serialdev.Stop1Half, true
	}
	return 0, false
}

// OutFlowToWire maps outbound flow control to its SET-CONTROL value.
func OutFlowToWire(f serialdev.Flow) byte {
	switch f {
	case serialdev.FlowXonXoff:
		return CtlFlowXonXoff
	case serialdev.FlowRTSCTS:
		return CtlFlowHardware
	case serialdev.FlowDCD:
		return CtlFlowDCD
	case serialdev.FlowDSR:
		return CtlFlowDSR
	}
	return CtlFlowNone
}

// InFlowToWire maps inbound flow control to its SET-CONTROL value.
func InFlowToWire(f serialdev.Flow) byte {
	switch f {
	case serialdev.FlowXonXoff:
		return CtlInFlowXonXoff
	case serialdev.FlowRTSCTS:
		return CtlInFlowHardware
	case serialdev.FlowDTR:
		return CtlInFlowDTR
	}
	return CtlInFlowNone
}

// FlowFromWire maps a SET-CONTROL flow-setting value to the direction it
// sets (inbound when in) and the flow control. ok is false for values that
// are not flow settings (queries, BREAK, DTR, RTS).
func FlowFromWire(v byte) (f serialdev.Flow, in, ok bool) {
	switch v {
	case CtlFlowNone:
		return serialdev.FlowNone, false, true
	case CtlFlowXonXoff:
		return serialdev.FlowXonXoff, false, true
	case CtlFlowHardware:
		return serialdev.FlowRTSCTS, false, true
	case CtlFlowDCD:
		return serialdev.FlowDCD, false, true
	case CtlFlowDSR:
		return serialdev.FlowDSR, false, true
	case CtlInFlowNone:
		return serialdev.FlowNone, true, true
	case CtlInFlowXonXoff:
		return serialdev.FlowXonXoff, true, true
	case CtlInFlowHardware:
		return serialdev.FlowRTSCTS, true, true
	case CtlInFlowDTR:
		return serialdev.FlowDTR, true, true
	}
	return 0, false, false
}

// PurgeFromWire maps a PURGE-DATA value.
func PurgeFromWire(v byte) (serialdev.Purge, bool) {
	switch v {
	case PurgeRx:
		return serialdev.PurgeReceive, true
	case PurgeTx:
		return serialdev.PurgeTransmit, true
	case PurgeBoth:
		return serialdev.PurgeBoth, true
	}
	return 0, false
}

// ModemStateFromLines gives the line bits of NOTIFY-MODEMSTATE (no delta
// bits) for the input lines l.
func ModemStateFromLines(l serialdev.Lines) byte {
	var b byte
	if l&serialdev.CTS != 0 {
		b |= ModemCTS
	}
	if l&serialdev.DSR != 0 {
		b |= ModemDSR
	}
	if l&serialdev.RI != 0 {
		b |= ModemRI
	}
	if l&serialdev.DCD != 0 {
		b |= ModemDCD
	}
	return b
}

// LinesFromModemState gives the input lines in a NOTIFY-MODEMSTATE value.
func LinesFromModemState(b byte) serialdev.Lines {
	var l serialdev.Lines
	if b&ModemCTS != 0 {
		l |= serialdev.CTS
	}
	if b&ModemDSR != 0 {
		l |= serialdev.DSR
	}
	if b&ModemRI != 0 {
		l |= serialdev.RI
	}
	if b&ModemDCD != 0 {
		l |= serialdev.DCD
	}
	return l
}
