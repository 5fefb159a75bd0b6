package pty

import (
	"bytes"
	"testing"

	"github.com/sertun/sertun/serialdev"
)

const testEsc = 'a' // hub4com's choice: an ordinary byte, so escaping shows

func TestC0CDecode(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		data     []byte
		events   []c0cEvent
		settings serialdev.Settings
		dtr, rts bool
	}{
		{"plain data", []byte("xyz\xff\x00"), []byte("xyz\xff\x00"), nil, serialdev.Settings{}, false, false},
		{"escaped escape", []byte("ba\x00c"), []byte("bac"), nil, serialdev.Settings{}, false, false},
		{"baud 115200", []byte("x" + "a\x10\x00\xc2\x01\x00" + "y"), []byte("xy"),
			[]c0cEvent{{code: c0cInsertRBR, args: [4]byte{0x00, 0xc2, 0x01, 0x00}}},
			serialdev.Settings{BaudRate: 115200}, false, false},
		{"baud 250000 and 7E2", []byte("a\x10\x90\xd0\x03\x00" + "a\x11\x07\x02\x02"), nil,
			[]c0cEvent{{code: c0cInsertRBR, args: [4]byte{0x90, 0xd0, 0x03, 0x00}}, {code: c0cInsertRLC, args: [4]byte{7, 2, 2}}},
			serialdev.Settings{BaudRate: 250000, DataBits: 7, Parity: serialdev.ParityEven, StopBits: serialdev.Stop2}, false, false},
		{"modem status DTR and RTS", []byte("a\x03\xb0"), nil,
			[]c0cEvent{{code: lsrmstMST, args: [4]byte{0xb0}}}, serialdev.Settings{}, true, true},
		{"modem status RTS only", []byte("a\x03\x11"), nil,
			[]c0cEvent{{code: lsrmstMST, args: [4]byte{0x11}}}, serialdev.Settings{}, false, true},
		{"line status with data", []byte("a\x01\x10Zq"), []byte("Zq"),
			[]c0cEvent{{code: lsrmstLSRData, args: [4]byte{0x10, 'Z'}}}, serialdev.Settings{}, false, false},
		{"line status without data", []byte("a\x02\x10q"), []byte("q"),
			[]c0cEvent{{code: lsrmstLSRNoData, args: [4]byte{0x10}}}, serialdev.Settings{}, false, false},
		{"unknown code kept as data", []byte("a\x7fq"), []byte("a\x7fq"), nil, serialdev.Settings{}, false, false},
		{"escaped escape value in args", []byte("a\x10a\x00\x00\x00"), nil,
			[]c0cEvent{{code: c0cInsertRBR, args: [4]byte{'a'}}}, serialdev.Settings{BaudRate: 'a'}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Every split point gives the same result.
			for split := 0; split <= len(tt.in); split++ {
				d := c0cDecoder{esc: testEsc}
				var st c0cState
				var events []c0cEvent
				emit := func(e c0cEvent) { events = append(events, e); st.apply(e) }
				a := bytes.Clone(tt.in[:split])
				b := bytes.Clone(tt.in[split:])
				data := d.decode(d.decode(nil, a, emit), b, emit)
				if !bytes.Equal(data, tt.data) {
					t.Fatalf("split %d: data %q, want %q", split, data, tt.data)
				}
				if len(events) != len(tt.events) {
					t.Fatalf("split %d: events %v, want %v", split, events, tt.events)
				}
				for i := range events {
					if events[i] != tt.events[i] {
						t.Fatalf("split %d: event %d = %v, want %v", split, i, events[i], tt.events[i])
					}
				}
				if st.settings != tt.settings {
					t.Fatalf("split %d: settings %+v, want %+v", split, st.settings, tt.settings)
				}
				if dtr, rts, _ := st.lines(); dtr != tt.dtr || rts != tt.rts {
					t.Fatalf("split %d: lines %v %v, want %v %v", split, dtr, rts, tt.dtr, tt.rts)
				}
			}
		})
	}
}

func TestC0CStateChanges(t *testing.T) {
	var st c0cState
	steps := []struct {
		ev   c0cEvent
		want Changes
	}{
		{c0cEvent{code: c0cInsertRBR, args: [4]byte{0x80, 0x25}}, Changes{Settings: true}}, // 9600
		{c0cEvent{code: c0cInsertRBR, args: [4]byte{0x80, 0x25}}, Changes{}},               // same
		{c0cEvent{code: c0cInsertRBR}, Changes{}},                                          // 0 is not a speed
		{c0cEvent{code: c0cInsertRLC, args: [4]byte{8, 0, 0}}, Changes{Settings: true}},
		{c0cEvent{code: c0cInsertRLC, args: [4]byte{8, 0, 0}}, Changes{}},
		{c0cEvent{code: lsrmstMST, args: [4]byte{0x00}}, Changes{Lines: true}}, // first is news
		{c0cEvent{code: lsrmstMST, args: [4]byte{0x04}}, Changes{}},            // RI edge only
		{c0cEvent{code: lsrmstMST, args: [4]byte{0x20}}, Changes{Lines: true}},
	}
	for i, s := range steps {
		if got := st.apply(s.ev); got != s.want {
			t.Errorf("step %d: %+v, want %+v", i, got, s.want)
		}
	}
}

// A decoder never loses a data byte: whatever the input, the data bytes
// out are the input without the sequences, and escaping data and decoding
// it gives it back.
func FuzzC0CEscape(f *testing.F) {
	f.Add([]byte("a\x10\x00\xc2\x01\x00a\x11\x08\x00\x00a\x03\xb0hello a\x00"), uint8(3))
	f.Add([]byte("a\x01\x10Za\x02\x10a\x7f"), uint8(1))
	f.Add([]byte{0xff, 0xff, 0x00}, uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		d := c0cDecoder{esc: testEsc}
		var st c0cState
		emit := func(e c0cEvent) {
			st.apply(e)
			if e.code != lsrmstLSRData && e.code != lsrmstLSRNoData && e.code != lsrmstMST &&
				e.code != c0cInsertRBR && e.code != c0cInsertRLC {
				t.Fatalf("event with code %#x", e.code)
			}
		}
		k := int(split) % (len(in) + 1)
		out := d.decode(d.decode(nil, in[:k], emit), in[k:], emit)
		if len(out) > len(in) {
			t.Fatalf("decode made %d bytes of %d", len(out), len(in))
		}
		if st.settings.BaudRate != 0 || st.settings.DataBits != 0 {
			if err := (serialdev.Settings{BaudRate: max(st.settings.BaudRate, 1), DataBits: max(st.settings.DataBits, 5),
				Parity: st.settings.Parity, StopBits: st.settings.StopBits}).Validate(); err != nil {
				t.Fatalf("decoded settings invalid: %v", err)
			}
		}

		// Escaping arbitrary data the way the driver does comes back.
		var esc []byte
		for _, c := range in {
			esc = append(esc, c)
			if c == testEsc {
				esc = append(esc, lsrmstEscape)
			}
		}
		d2 := c0cDecoder{esc: testEsc}
		if got := d2.decode(nil, esc, func(c0cEvent) { t.Fatal("event from escaped data") }); !bytes.Equal(got, in) {
			t.Fatalf("escaped data came back as %q, want %q", got, in)
		}
	})
}
