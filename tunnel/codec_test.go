package tunnel

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

func TestCOBS(t *testing.T) {
	tests := []struct {
		in, out []byte
	}{
		{[]byte{}, []byte{1}},
		{[]byte{0}, []byte{1, 1}},
		{[]byte{0, 0}, []byte{1, 1, 1}},
		{[]byte{0x11, 0x22, 0, 0x33}, []byte{3, 0x11, 0x22, 2, 0x33}},
		{[]byte{0x11, 0x22, 0x33, 0x44}, []byte{5, 0x11, 0x22, 0x33, 0x44}},
		{[]byte{0x11, 0, 0, 0}, []byte{2, 0x11, 1, 1, 1}},
		{bytes.Repeat([]byte{1}, 254), append(append([]byte{0xff}, bytes.Repeat([]byte{1}, 254)...), 1)},
		{bytes.Repeat([]byte{1}, 255), append(append([]byte{0xff}, bytes.Repeat([]byte{1}, 254)...), 2, 1)},
	}
	for _, tt := range tests {
		got := cobsEncode(nil, tt.in)
		if !bytes.Equal(got, tt.out) {
			t.Errorf("encode % x = % x, want % x", tt.in, got, tt.out)
		}
		back, err := cobsDecode(nil, got)
		if err != nil || !bytes.Equal(back, tt.in) {
			t.Errorf("decode % x = % x, %v; want % x", got, back, err, tt.in)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		in := make([]byte, r.IntN(3000))
		for i := range in {
			if r.IntN(4) > 0 {
				in[i] = byte(r.Uint32())
			}
		}
		enc := cobsEncode(nil, in)
		if len(enc) > cobsMaxLen(len(in)) || bytes.IndexByte(enc, 0) >= 0 {
			t.Fatalf("encoding of %d bytes: %d bytes, zero at %d", len(in), len(enc), bytes.IndexByte(enc, 0))
		}
		back, err := cobsDecode(nil, enc)
		if err != nil || !bytes.Equal(back, in) {
			t.Fatalf("round trip of %d bytes failed: %v", len(in), err)
		}
	}
}

func sampleFrames() []*frame {
	return []*frame{
		{typ: frameData, tag: 0x5a, seq: 7, ack: 3, body: []byte("\x03\x02\x05hello")},
		{typ: frameData, tag: 0, seq: 0xffff, ack: 0xfffe, sack: 1<<63 | 5, body: bytes.Repeat([]byte{0}, 600)},
		{typ: frameAck, flags: flagPing, tag: 1, seq: 9, ack: 9},
		{typ: frameHello, body: (&hello{version: Version, up: true, id: 1, peer: 2, baud: 115200}).marshal()},
	}
}

// TestFrameSplits: frames survive any split of the byte stream, garbage
// between them, and no strict prefix of a frame parses.
func TestFrameSplits(t *testing.T) {
	var wire []byte
	frames := sampleFrames()
	for _, f := range frames {
		wire = append(wire, 0x42, 0x17, 0) // garbage, then a delimiter
		wire, _ = appendFrame(wire, nil, f)
	}
	check := func(name string, chunks [][]byte) {
		var d decoder
		var got []frame
		for _, c := range chunks {
			d.feed(c, func(f *frame) {
				g := *f
				g.body = append([]byte{}, f.body...)
				got = append(got, g)
			})
		}
		if len(got) != len(frames) {
			t.Fatalf("%s: %d frames, want %d", name, len(got), len(frames))
		}
		for i, f := range frames {
			g := got[i]
			if g.typ != f.typ || g.flags&^flagSACK != f.flags || g.tag != f.tag || g.seq != f.seq || g.ack != f.ack || g.sack != f.sack || !bytes.Equal(g.body, f.body) {
				t.Errorf("%s: frame %d differs: type %d/%d flags %x/%x seq %d/%d body %d/%d bytes", name, i, g.typ, f.typ, g.flags, f.flags, g.seq, f.seq, len(g.body), len(f.body))
			}
		}
	}
	check("whole", [][]byte{wire})
	for cut := 1; cut < len(wire); cut += 7 {
		check("split", [][]byte{wire[:cut], wire[cut:]})
	}
	var bytewise [][]byte
	for i := range wire {
		bytewise = append(bytewise, wire[i:i+1])
	}
	check("bytewise", bytewise)

	for _, f := range frames {
		enc, _ := appendFrame(nil, nil, f)
		raw, err := cobsDecode(nil, enc[:len(enc)-1])
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(raw); n++ {
			var g frame
			if parseFrame(raw[:n], &g) == nil {
				t.Errorf("prefix of %d of %d bytes parses", n, len(raw))
			}
		}
	}
}

// TestFrameCorruption: every single-bit flip in a frame is caught.
func TestFrameCorruption(t *testing.T) {
	for _, f := range sampleFrames() {
		enc, _ := appendFrame(nil, nil, f)
		for bit := 0; bit < 8*len(enc); bit++ {
			b := append([]byte{0}, enc...)
			b[1+bit/8] ^= 1 << (bit % 8)
			var d decoder
			n := 0
			d.feed(b, func(*frame) { n++ })
			if n != 0 {
				t.Fatalf("frame with bit %d flipped accepted", bit)
			}
		}
	}
}

func TestMsgRoundTrip(t *testing.T) {
	var b []byte
	b = appendMsg(b, msgOpen, 3, []byte("\x80\x80\x04example.org:22"))
	b = appendMsg(b, msgData, 1<<20, bytes.Repeat([]byte{7}, 1000))
	b = appendMsg(b, msgFin, 5, nil)
	b = appendMsg(b, msgInfo, 0, appendStrings(nil, []string{"a:1", "any"}))
	want := []uint8{msgOpen, msgData, msgFin, msgInfo}
	for i, typ := range want {
		m, rest, err := parseMsg(b)
		if err != nil || m.typ != typ {
			t.Fatalf("message %d: %+v, %v", i, m, err)
		}
		if typ == msgInfo {
			ss, ok := parseStrings(m.body)
			if !ok || len(ss) != 2 || ss[1] != "any" {
				t.Errorf("info = %q, %v", ss, ok)
			}
		}
		b = rest
	}
	if len(b) != 0 {
		t.Errorf("%d bytes left", len(b))
	}
	full := appendMsg(nil, msgData, 9, []byte("abc"))
	for n := 0; n < len(full); n++ {
		if _, _, err := parseMsg(full[:n]); err == nil {
			t.Errorf("prefix of %d bytes parses", n)
		}
	}
}

func FuzzFrameDecoder(f *testing.F) {
	for _, fr := range sampleFrames() {
		enc, _ := appendFrame(nil, nil, fr)
		f.Add(enc)
	}
	f.Add([]byte{0, 0, 1, 2, 3, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d decoder
		d.feed(b, func(fr *frame) {
			// A frame that passed must encode back to a frame that
			// decodes the same.
			enc, _ := appendFrame(nil, nil, fr)
			var d2 decoder
			n := 0
			d2.feed(enc, func(g *frame) {
				n++
				if g.seq != fr.seq || g.ack != fr.ack || !bytes.Equal(g.body, fr.body) {
					t.Errorf("re-encoded frame differs")
				}
			})
			if n != 1 {
				t.Errorf("re-encoded frame decodes to %d frames", n)
			}
		})
	})
}

// FuzzStream feeds random frames and mux messages into a live session: no
// panic, no hang, and the session still closes.
func FuzzStream(f *testing.F) {
	f.Add([]byte{msgOpen, 2, 3, 0x40, 'a', ':', '1'}, uint16(0))
	f.Add(appendMsg(appendMsg(nil, msgOpen, 2, []byte("\x10x:1")), msgData, 2, []byte("hi")), uint16(0))
	f.Add(appendMsg(nil, msgReset, 3, []byte{1, 'n'}), uint16(1))
	f.Add(appendMsg(nil, msgWindow, 3, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1}), uint16(5))
	f.Add(appendMsg(nil, msgListen, 1, appendStrings(nil, []string{"127.0.0.1:0", "x:1"})), uint16(0))
	f.Fuzz(func(t *testing.T, body []byte, seq uint16) {
		s, err := NewSession(Config{
			Open:   func(ctx context.Context) (Line, error) { <-ctx.Done(); return nil, ctx.Err() },
			Permit: []string{"any"},
			Logger: testLogger(t),
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			st, err := s.OpenStream(ctx, "x:1")
			if err == nil {
				st.Write([]byte("data"))
				st.Close()
			}
		}()
		s.mu.Lock()
		s.peerID = 99
		now := time.Now()
		for _, sq := range []uint16{seq, 0, 1} {
			raw, _ := appendFrame(nil, nil, &frame{typ: frameData, tag: s.tag(), seq: sq, ack: seq, sack: uint64(seq), body: body})
			var d decoder
			d.feed(raw, func(fr *frame) { s.handleFrame(fr, now) })
		}
		var d decoder
		raw, _ := appendFrame(nil, nil, &frame{typ: frameHello, body: body})
		d.feed(raw, func(fr *frame) { s.handleFrame(fr, now) })
		s.mu.Unlock()
		<-done
		s.Close()
	})
}
