package rfc2217

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

// decoded is everything a Telnet produced from a stream.
type decoded struct {
	data    []byte
	events  []Event
	replies []byte
}

// decodeChunks feeds chunks to t one by one (copies, since Decode writes
// into its input) and collects the output.
func decodeChunks(t *Codec, chunks ...[]byte) decoded {
	var d decoded
	for _, c := range chunks {
		in := append([]byte(nil), c...)
		for len(in) > 0 {
			n, data, ev := t.Decode(in)
			if n == 0 {
				panic("Decode consumed nothing")
			}
			d.data = append(d.data, data...)
			if ev.Kind != EventNone {
				ev.Data = append([]byte(nil), ev.Data...)
				d.events = append(d.events, ev)
			}
			in = in[n:]
		}
	}
	d.replies = t.AppendReplies(nil)
	return d
}

// newServerCodec is a Telnet set up like the server's.
func newServerCodec() *Codec {
	t := &Codec{}
	t.Support(OptBinary, true, true, false)
	t.Support(OptSGA, true, true, false)
	t.Support(OptEcho, true, false, false)
	t.Support(OptComPort, true, true, true)
	return t
}

// recorded is a client stream in the style of pyserial and hub4com: option
// requests, pipelined commands with escaped values, data with IAC and CR,
// an unknown option and an unknown subnegotiation.
var recorded = []byte{
	IAC, DO, OptEcho, IAC, WILL, OptSGA, IAC, DO, OptSGA, IAC, DO, OptComPort, IAC, WILL, OptComPort,
	IAC, WILL, OptBinary, IAC, DO, OptBinary,
	IAC, SB, OptComPort, CmdSetBaudRate, 0, 0, 0xE1, 0x00, IAC, SE,
	IAC, SB, OptComPort, CmdSetBaudRate, IAC, IAC, 0, IAC, IAC, 1, IAC, SE,
	'a', 'b', IAC, IAC, '\r', 0, '\r', '\n', 0xFE,
	IAC, WILL, 24, // terminal type: refused
	IAC, SB, 24, 1, IAC, IAC, 2, IAC, SE, // unknown SB, skipped whole
	IAC, NOP,
	IAC, SB, OptComPort, CmdSignature, 'p', 'y', IAC, SE,
	'z',
}

func TestDecodeRecorded(t *testing.T) {
	got := decodeChunks(newServerCodec(), recorded)
	wantData := []byte{'a', 'b', IAC, '\r', 0, '\r', '\n', 0xFE, 'z'}
	if !bytes.Equal(got.data, wantData) {
		t.Errorf("data = %v, want %v", got.data, wantData)
	}
	var kinds []string
	for _, e := range got.events {
		switch e.Kind {
		case EventOption:
			kinds = append(kinds, fmt.Sprintf("opt %d local=%v on=%v", e.Opt, e.Local, e.On))
		case EventSubneg:
			kinds = append(kinds, fmt.Sprintf("sb %d %v", e.Opt, e.Data))
		case EventCommand:
			kinds = append(kinds, fmt.Sprintf("cmd %d", e.Cmd))
		}
	}
	want := []string{
		"opt 1 local=true on=true",
		"opt 3 local=false on=true",
		"opt 3 local=true on=true",
		"opt 44 local=true on=true",
		"opt 44 local=false on=true",
		"opt 0 local=false on=true",
		"opt 0 local=true on=true",
		"sb 44 [1 0 0 225 0]",
		"sb 44 [1 255 0 255 1]",
		"cmd 241",
		"sb 44 [0 112 121]",
	}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("events:\n got %q\nwant %q", kinds, want)
	}
	wantReplies := []byte{
		IAC, WILL, OptEcho, IAC, DO, OptSGA, IAC, WILL, OptSGA, IAC, WILL, OptComPort, IAC, DO, OptComPort,
		IAC, DO, OptBinary, IAC, WILL, OptBinary, IAC, DONT, 24,
	}
	if !bytes.Equal(got.replies, wantReplies) {
		t.Errorf("replies = %v, want %v", got.replies, wantReplies)
	}
}

// TestDecodeEverySplit: the stream cut at every point, and byte by byte,
// decodes to the same data, events and replies as in one piece.
func TestDecodeEverySplit(t *testing.T) {
	streams := [][]byte{recorded, longSB(), nonBinaryStream()}
	for si, s := range streams {
		whole := decodeChunks(newServerCodec(), s)
		for i := 0; i <= len(s); i++ {
			got := decodeChunks(newServerCodec(), s[:i], s[i:])
			if !reflect.DeepEqual(got, whole) {
				t.Fatalf("stream %d split at %d: %+v, want %+v", si, i, got, whole)
			}
		}
		var bytewise [][]byte
		for i := range s {
			bytewise = append(bytewise, s[i:i+1])
		}
		if got := decodeChunks(newServerCodec(), bytewise...); !reflect.DeepEqual(got, whole) {
			t.Fatalf("stream %d byte by byte: %+v, want %+v", si, got, whole)
		}
	}
}

func longSB() []byte {
	s := []byte{'x', IAC, SB, OptComPort, CmdSignature}
	for range MaxSubneg + 10 {
		s = append(s, 'a')
	}
	s = append(s, IAC, IAC, IAC, SE, 'y', IAC, SB, OptComPort, CmdSignature)
	for range MaxSubneg - 1 {
		s = append(s, IAC, IAC)
	}
	return append(s, IAC, SE, 'z')
}

func nonBinaryStream() []byte {
	return []byte{'a', '\r', 0, 'b', '\r', '\n', '\r', 0, 0, '\r', IAC, NOP, 0, '\r', '\r', 0, 'c'}
}

func TestNonBinaryCR(t *testing.T) {
	got := decodeChunks(newServerCodec(), nonBinaryStream())
	want := []byte{'a', '\r', 'b', '\r', '\n', '\r', 0, '\r', 0, '\r', '\r', 'c'}
	if !bytes.Equal(got.data, want) {
		t.Errorf("data = %q, want %q", got.data, want)
	}
}

func TestSubnegBounded(t *testing.T) {
	tn := newServerCodec()
	got := decodeChunks(tn, longSB())
	if !bytes.Equal(got.data, []byte("xyz")) {
		t.Errorf("data = %q, want xyz", got.data)
	}
	if len(got.events) != 1 || len(got.events[0].Data) != MaxSubneg {
		t.Fatalf("want one SB of exactly MaxSubneg bytes, got %d events", len(got.events))
	}
	if cap(tn.sb) > 2*MaxSubneg {
		t.Errorf("SB buffer grew to %d", cap(tn.sb))
	}
	// An endless SB never grows the buffer.
	tn = newServerCodec()
	decodeChunks(tn, []byte{IAC, SB, OptComPort})
	chunk := bytes.Repeat([]byte{'q', IAC, IAC}, 1000)
	for range 100 {
		decodeChunks(tn, chunk)
	}
	if cap(tn.sb) > 2*MaxSubneg {
		t.Errorf("SB buffer grew to %d", cap(tn.sb))
	}
}

// TestNoStrictPrefix: no strict prefix of a command yields its event.
func TestNoStrictPrefix(t *testing.T) {
	cmds := [][]byte{
		{IAC, WILL, OptComPort},
		{IAC, DO, OptBinary},
		{IAC, NOP},
		AppendCommand(nil, &SetBaudRate{Baud: 0xFFFF00FF}, false),
		AppendCommand(nil, &Signature{Text: "a\xffb"}, true),
		AppendCommand(nil, &FlowControlSuspend{}, false),
	}
	for _, c := range cmds {
		for i := 0; i < len(c); i++ {
			got := decodeChunks(newServerCodec(), c[:i])
			if len(got.events) != 0 || len(got.data) != 0 || len(got.replies) != 0 {
				t.Errorf("prefix %v of %v gave %+v", c[:i], c, got)
			}
		}
		got := decodeChunks(newServerCodec(), c)
		if len(got.events) != 1 {
			t.Errorf("%v: %d events, want 1", c, len(got.events))
		}
	}
}

// TestNegotiation runs RFC 1143 cases: a request of ours (or none), then
// what the peer sends; the replies and events that follow.
func TestNegotiation(t *testing.T) {
	type req struct {
		local, on bool
	}
	cases := []struct {
		name    string
		local   bool // the side under test: ours (WILL) or the peer's
		support bool
		reqs    []req
		in      []byte
		replies []byte // after the requests' own bytes
		events  []string
		enabled bool // the side's state at the end
	}{
		{"peer WILL accepted", false, true, nil, []byte{IAC, WILL, 44}, []byte{IAC, DO, 44}, []string{"r+"}, true},
		{"peer WILL refused", false, false, nil, []byte{IAC, WILL, 44}, []byte{IAC, DONT, 44}, nil, false},
		{"peer WILL twice answered once", false, true, nil, []byte{IAC, WILL, 44, IAC, WILL, 44}, []byte{IAC, DO, 44}, []string{"r+"}, true},
		{"peer WONT when off: silent", false, true, nil, []byte{IAC, WONT, 44}, nil, nil, false},
		{"peer WILL then WONT", false, true, nil, []byte{IAC, WILL, 44, IAC, WONT, 44}, []byte{IAC, DO, 44, IAC, DONT, 44}, []string{"r+", "r-"}, false},
		{"our DO answered WILL", false, true, []req{{false, true}}, []byte{IAC, WILL, 44}, nil, []string{"r+"}, true},
		{"our DO refused", false, false, []req{{false, true}}, []byte{IAC, WONT, 44}, nil, []string{"r-"}, false},
		{"our DO crosses peer WILL", false, true, []req{{false, true}}, []byte{IAC, WILL, 44, IAC, WILL, 44}, nil, []string{"r+"}, true},
		{"our WILL answered DO", true, true, []req{{true, true}}, []byte{IAC, DO, 44}, nil, []string{"l+"}, true},
		{"peer DO accepted", true, true, nil, []byte{IAC, DO, 44}, []byte{IAC, WILL, 44}, []string{"l+"}, true},
		{"peer DO refused", true, false, nil, []byte{IAC, DO, 44}, []byte{IAC, WONT, 44}, nil, false},
		{"our DO then DONT queued, WILL arrives", false, true, []req{{false, true}, {false, false}}, []byte{IAC, WILL, 44, IAC, WONT, 44},
			[]byte{IAC, DONT, 44}, []string{"r-"}, false},
		{"our DO then DONT queued, WONT arrives", false, true, []req{{false, true}, {false, false}}, []byte{IAC, WONT, 44}, nil, []string{"r-"}, false},
		{"peer DONT after our WILL agreed", true, true, []req{{true, true}}, []byte{IAC, DO, 44, IAC, DONT, 44}, []byte{IAC, WONT, 44}, []string{"l+", "l-"}, false},
		{"our WONT queued, answered", true, true, []req{{true, true}, {true, false}}, []byte{IAC, DO, 44, IAC, DONT, 44}, []byte{IAC, WONT, 44}, []string{"l-"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tn := &Codec{}
			if c.support {
				tn.Support(44, true, true, true)
			}
			for _, r := range c.reqs {
				tn.Request(44, r.local, r.on)
			}
			tn.AppendReplies(nil)
			got := decodeChunks(tn, c.in)
			if !bytes.Equal(got.replies, c.replies) {
				t.Errorf("replies %v, want %v", got.replies, c.replies)
			}
			var evs []string
			for _, e := range got.events {
				s := "r"
				if e.Local {
					s = "l"
				}
				if e.On {
					s += "+"
				} else {
					s += "-"
				}
				evs = append(evs, s)
			}
			if !reflect.DeepEqual(evs, c.events) {
				t.Errorf("events %v, want %v", evs, c.events)
			}
			if tn.Enabled(44, c.local) != c.enabled {
				t.Errorf("enabled = %v, want %v", !c.enabled, c.enabled)
			}
		})
	}
}

// TestTwoPeersNoLoop: two Telnets that both request everything settle
// with a bounded number of bytes exchanged.
func TestTwoPeersNoLoop(t *testing.T) {
	a, b := &Codec{}, &Codec{}
	for _, tn := range []*Codec{a, b} {
		for _, o := range []byte{OptBinary, OptSGA, OptComPort} {
			tn.Support(o, true, true, o == OptComPort)
			tn.Request(o, true, true)
			tn.Request(o, false, true)
		}
	}
	ab, ba := a.AppendReplies(nil), b.AppendReplies(nil)
	total := 0
	for round := 0; len(ab)+len(ba) > 0; round++ {
		if round > 10 {
			t.Fatal("negotiation loops")
		}
		total += len(ab) + len(ba)
		decodeChunks(b, ab)
		decodeChunks(a, ba)
		ab, ba = a.AppendReplies(nil), b.AppendReplies(nil)
	}
	for _, tn := range []*Codec{a, b} {
		for _, o := range []byte{OptBinary, OptSGA, OptComPort} {
			if !tn.Enabled(o, true) || !tn.Enabled(o, false) {
				t.Errorf("option %d not on both ways", o)
			}
		}
	}
	if total != 2*6*3 {
		t.Errorf("%d negotiation bytes, want %d (each request sent once, none answered twice)", total, 2*6*3)
	}
}

func TestRequestIdempotent(t *testing.T) {
	tn := &Codec{}
	tn.Request(OptBinary, true, true)
	tn.Request(OptBinary, true, true)
	if got := tn.AppendReplies(nil); !bytes.Equal(got, []byte{IAC, WILL, OptBinary}) {
		t.Errorf("got %v", got)
	}
	if !tn.Pending(OptBinary, true) {
		t.Error("not pending")
	}
}

func TestAppendData(t *testing.T) {
	cases := []struct {
		in, bin, text string
	}{
		{"", "", ""},
		{"abc", "abc", "abc"},
		{"\xff", "\xff\xff", "\xff\xff"},
		{"a\xff\xffb", "a\xff\xff\xff\xffb", "a\xff\xff\xff\xffb"},
		{"\r\n\r", "\r\n\r", "\r\x00\n\r\x00"},
		{"\r\xff\r", "\r\xff\xff\r", "\r\x00\xff\xff\r\x00"},
	}
	for _, c := range cases {
		if got := AppendData(nil, []byte(c.in), true); string(got) != c.bin {
			t.Errorf("binary %q: %q, want %q", c.in, got, c.bin)
		}
		if got := AppendData(nil, []byte(c.in), false); string(got) != c.text {
			t.Errorf("text %q: %q, want %q", c.in, got, c.text)
		}
		if NeedsEscape([]byte(c.in), true) != (c.in != c.bin) {
			t.Errorf("NeedsEscape(%q, true) wrong", c.in)
		}
		if NeedsEscape([]byte(c.in), false) != (c.in != c.text) {
			t.Errorf("NeedsEscape(%q, false) wrong", c.in)
		}
	}
}

func TestAppendNoAlloc(t *testing.T) {
	p := bytes.Repeat([]byte{1, 2, IAC, '\r'}, 1000)
	dst := make([]byte, 0, 3*len(p))
	if n := testing.AllocsPerRun(100, func() { dst = AppendData(dst[:0], p, false) }); n != 0 {
		t.Errorf("AppendData allocates %v times", n)
	}
	tn := newServerCodec()
	decodeChunks(tn, []byte{IAC, WILL, OptBinary})
	in := AppendData(nil, p, true)
	buf := make([]byte, len(in))
	if n := testing.AllocsPerRun(100, func() {
		copy(buf, in)
		b := buf
		for len(b) > 0 {
			n, _, _ := tn.Decode(b)
			b = b[n:]
		}
	}); n != 0 {
		t.Errorf("Decode allocates %v times", n)
	}
}

func TestRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		p := make([]byte, r.IntN(300))
		for j := range p {
			// Bias towards the bytes that need care.
			switch r.IntN(4) {
			case 0:
				p[j] = IAC
			case 1:
				p[j] = "\r\n\x00"[r.IntN(3)]
			default:
				p[j] = byte(r.Uint32())
			}
		}
		for _, bin := range []bool{true, false} {
			tn := newServerCodec()
			if bin {
				decodeChunks(tn, []byte{IAC, WILL, OptBinary})
			}
			wire := AppendData(nil, p, bin)
			cut := r.IntN(len(wire) + 1)
			got := decodeChunks(tn, wire[:cut], wire[cut:])
			if !bytes.Equal(got.data, p) {
				t.Fatalf("case %d binary=%v: round trip %v -> %v", i, bin, p, got.data)
			}
		}
	}
}

func BenchmarkDecodeClean(b *testing.B) {
	tn := newServerCodec()
	decodeChunks(tn, []byte{IAC, WILL, OptBinary})
	p := make([]byte, 64<<10)
	for i := range p {
		p[i] = byte(i % 250)
	}
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		in := p
		for len(in) > 0 {
			n, _, _ := tn.Decode(in)
			in = in[n:]
		}
	}
}

func BenchmarkAppendDataFF(b *testing.B) {
	p := make([]byte, 64<<10)
	for i := range p {
		p[i] = byte(i)
	}
	dst := make([]byte, 0, 2*len(p))
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		dst = AppendData(dst[:0], p, true)
	}
}
