package rfc2217

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/sertun/sertun/serialdev"
)

var allCommands = []Command{
	&Signature{Text: "sertun loop://"},
	&Signature{Text: "\xff\xffx"},
	&Signature{},
	&SetBaudRate{Baud: 57600},
	&SetBaudRate{Baud: 0xFFFFFFFF},
	&SetDataSize{Size: 7},
	&SetParity{Parity: ParityEven},
	&SetStopSize{Stop: Stop1Half},
	&SetControl{Value: CtlRTSOn},
	&NotifyLineState{State: LineBreak | LineFraming},
	&NotifyModemState{State: 0xFF},
	&FlowControlSuspend{},
	&FlowControlResume{},
	&SetLinestateMask{Mask: 0},
	&SetModemstateMask{Mask: 255},
	&PurgeData{Which: PurgeBoth},
}

// TestCommandRoundTrip: every command, as request and answer, through
// AppendCommand, the telnet decoder (split at every point) and
// DecodeCommand.
func TestCommandRoundTrip(t *testing.T) {
	for _, c := range allCommands {
		for _, answer := range []bool{false, true} {
			wire := AppendCommand(nil, c, answer)
			for cut := 0; cut <= len(wire); cut++ {
				got := decodeChunks(newServerCodec(), wire[:cut], wire[cut:])
				if len(got.events) != 1 || got.events[0].Kind != EventSubneg || got.events[0].Opt != OptComPort {
					t.Fatalf("%T: events %+v", c, got.events)
				}
				payload := got.events[0].Data
				wantCode := c.Code()
				if answer {
					wantCode = AnswerCode(wantCode)
				}
				if payload[0] != wantCode {
					t.Fatalf("%T answer=%v: code %d, want %d", c, answer, payload[0], wantCode)
				}
				d, ans, err := DecodeCommand(payload)
				if err != nil || ans != answer || !reflect.DeepEqual(d, c) {
					t.Fatalf("%T answer=%v: decoded %#v %v %v", c, answer, d, ans, err)
				}
			}
		}
	}
}

func TestDecodeCommandErrors(t *testing.T) {
	cases := []struct {
		payload []byte
		want    error
	}{
		{nil, ErrBadCommand},
		{[]byte{13}, ErrUnknownCommand},
		{[]byte{99}, ErrUnknownCommand},
		{[]byte{113}, ErrUnknownCommand},
		{[]byte{255}, ErrUnknownCommand},
		{[]byte{CmdSetBaudRate, 1, 2, 3}, ErrBadCommand},
		{[]byte{CmdSetBaudRate, 1, 2, 3, 4, 5}, ErrBadCommand},
		{[]byte{CmdSetDataSize}, ErrBadCommand},
		{[]byte{AnswerCode(CmdSetControl), 1, 2}, ErrBadCommand},
	}
	for _, c := range cases {
		if _, _, err := DecodeCommand(c.payload); !errors.Is(err, c.want) {
			t.Errorf("%v: %v, want %v", c.payload, err, c.want)
		}
	}
}

func TestWireMappings(t *testing.T) {
	for p := serialdev.ParityNone; p <= serialdev.ParitySpace; p++ {
		if got, ok := ParityFromWire(ParityToWire(p)); !ok || got != p {
			t.Errorf("parity %v round trip: %v %v", p, got, ok)
		}
	}
	if ParityToWire(serialdev.ParityEven) != 3 || ParityToWire(serialdev.ParitySpace) != 5 {
		t.Error("parity wire values")
	}
	if _, ok := ParityFromWire(ParityAsk); ok {
		t.Error("ParityAsk mapped")
	}
	if _, ok := ParityFromWire(6); ok {
		t.Error("parity 6 mapped")
	}
	wantStop := map[serialdev.StopBits]byte{serialdev.Stop1: 1, serialdev.Stop2: 2, serialdev.Stop1Half: 3}
	for s, w := range wantStop {
		if StopToWire(s) != w {
			t.Errorf("stop %v -> %d, want %d", s, StopToWire(s), w)
		}
		if got, ok := StopFromWire(w); !ok || got != s {
			t.Errorf("stop %d -> %v", w, got)
		}
	}
	for _, f := range []serialdev.Flow{serialdev.FlowNone, serialdev.FlowXonXoff, serialdev.FlowRTSCTS, serialdev.FlowDCD, serialdev.FlowDSR} {
		got, in, ok := FlowFromWire(OutFlowToWire(f))
		if !ok || in || got != f {
			t.Errorf("out flow %v round trip: %v in=%v ok=%v", f, got, in, ok)
		}
	}
	for _, f := range []serialdev.Flow{serialdev.FlowNone, serialdev.FlowXonXoff, serialdev.FlowRTSCTS, serialdev.FlowDTR} {
		got, in, ok := FlowFromWire(InFlowToWire(f))
		if !ok || !in || got != f {
			t.Errorf("in flow %v round trip: %v in=%v ok=%v", f, got, in, ok)
		}
	}
	for _, v := range []byte{CtlFlowAsk, CtlBreakOn, CtlDTRAsk, CtlRTSOff, CtlInFlowAsk, 20} {
		if _, _, ok := FlowFromWire(v); ok {
			t.Errorf("control %d taken as flow", v)
		}
	}
	for l := serialdev.Lines(0); l < 16; l++ {
		if got := LinesFromModemState(ModemStateFromLines(l)); got != l {
			t.Errorf("lines %b round trip %b", l, got)
		}
	}
	if ModemStateFromLines(serialdev.CTS|serialdev.DCD) != ModemCTS|ModemDCD {
		t.Error("modem bits")
	}
	if p, ok := PurgeFromWire(PurgeRx); !ok || p != serialdev.PurgeReceive {
		t.Error("purge rx")
	}
	if p, ok := PurgeFromWire(PurgeTx); !ok || p != serialdev.PurgeTransmit {
		t.Error("purge tx")
	}
	if _, ok := PurgeFromWire(4); ok {
		t.Error("purge 4")
	}
}

func TestAppendCommandEscapes(t *testing.T) {
	got := AppendCommand(nil, &SetBaudRate{Baud: 0xFF00FFFF}, true)
	want := []byte{IAC, SB, 44, 101, IAC, IAC, 0, IAC, IAC, IAC, IAC, IAC, SE}
	if !bytes.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
