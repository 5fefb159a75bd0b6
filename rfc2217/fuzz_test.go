package rfc2217

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
)

// FuzzDecoder: any input, cut anywhere, decodes as in one piece, without
// panics, with bounded subnegotiations; any data round-trips through
// AppendData; every complete COM-PORT subnegotiation decodes or errors.
func FuzzDecoder(f *testing.F) {
	f.Add(recorded, uint16(7))
	f.Add(longSB(), uint16(1030))
	f.Add(nonBinaryStream(), uint16(3))
	for _, c := range allCommands {
		f.Add(AppendCommand(nil, c, false), uint16(4))
	}
	f.Add([]byte{IAC, SB, OptComPort, IAC, WILL, 1, IAC, IAC, IAC, SE, '\r'}, uint16(5))
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		c := int(cut) % (len(in) + 1)
		whole := decodeChunks(newServerCodec(), in)
		split := decodeChunks(newServerCodec(), in[:c], in[c:])
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("split at %d differs:\n%+v\n%+v", c, whole, split)
		}
		if len(whole.data) > len(in) {
			t.Fatalf("more data out than bytes in")
		}
		for _, e := range whole.events {
			if e.Kind == EventSubneg {
				if len(e.Data) > MaxSubneg {
					t.Fatalf("SB of %d bytes", len(e.Data))
				}
				if e.Opt == OptComPort {
					cmd, answer, err := DecodeCommand(e.Data)
					if err == nil {
						// Re-encode: must decode to the same command.
						w := AppendCommand(nil, cmd, answer)
						again := decodeChunks(newServerCodec(), w)
						cmd2, _, err2 := DecodeCommand(again.events[0].Data)
						if err2 != nil || !reflect.DeepEqual(cmd, cmd2) {
							t.Fatalf("re-encode of %#v: %#v %v", cmd, cmd2, err2)
						}
					}
				}
			}
		}
		for _, bin := range []bool{true, false} {
			tn := newServerCodec()
			if bin {
				decodeChunks(tn, []byte{IAC, WILL, OptBinary})
			}
			got := decodeChunks(tn, AppendData(nil, in, bin))
			if !bytes.Equal(got.data, in) || len(got.events) != 0 {
				t.Fatalf("binary=%v round trip: %v -> %v %+v", bin, in, got.data, got.events)
			}
		}
	})
}

// FuzzServerSession feeds random client bytes to a server session on a
// loop:// device: no panic, no hang, and the server closes in bounded time
// (startServer's cleanup fails the test otherwise).
func FuzzServerSession(f *testing.F) {
	f.Add(recorded)
	var all []byte
	for _, c := range allCommands {
		all = AppendCommand(all, c, false)
		all = AppendCommand(all, c, true)
	}
	f.Add(all)
	f.Add([]byte{IAC, WILL, OptComPort, IAC, DO, OptComPort, IAC, SB, OptComPort, CmdSetControl, CtlDTROff, IAC, SE, 'a', IAC, IAC})
	f.Add([]byte{IAC, WILL, OptComPort, IAC, SB, OptComPort, CmdFlowControlSusp, IAC, SE, 'x', 'y', IAC, SB, OptComPort, CmdPurgeData, PurgeBoth, IAC, SE})
	f.Add([]byte{IAC, DONT, OptBinary, IAC, WONT, OptBinary, '\r', 0, '\r', '\n', IAC, SB, OptComPort})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 16<<10 {
			return // more than the loop and queues hold would just be echo backpressure
		}
		ts := startServer(t, "pipe", Telnet, Config{ClientBuffer: 4096})
		conn, err := ts.dial()
		if err != nil {
			t.Fatal(err)
		}
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, conn)
			close(drained)
		}()
		conn.SetWriteDeadline(time.Now().Add(waitLong))
		if _, err := conn.Write(in); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			t.Fatalf("server stopped reading: %v", err)
		}
		conn.Close()
		<-drained
	})
}
