//go:build linux

package main

import (
	"bytes"
	"net"
	"sync"
)

// Telnet bytes the client needs.
const (
	tnSE   = 240
	tnSB   = 250
	tnWILL = 251
	tnWONT = 252
	tnDO   = 253
	tnDONT = 254
	tnIAC  = 255

	optBinary = 0
	optSGA    = 3
)

type tnState uint8

const (
	tsData tnState = iota
	tsIAC
	tsOpt // after WILL/WONT/DO/DONT
	tsSB
	tsSBIAC
)

// telnetConn is the minimal telnet client the bench uses against RFC 2217
// servers: it agrees to BINARY and SGA (so no CR NUL rewriting happens),
// refuses every other option (COM-PORT included: the bench moves bytes,
// not settings), skips subnegotiations and undoubles IAC IAC. Write doubles
// 0xFF. It answers an option only when its answer changes, so two
// implementations cannot loop.
type telnetConn struct {
	net.Conn
	wmu     sync.Mutex
	wbuf    []byte
	state   tnState
	cmd     byte
	us      [256]int8 // what we last said about our side: 0 none, 1 WILL, -1 WONT
	them    [256]int8 // what we last said about their side: 1 DO, -1 DONT
	rbuf    []byte
	pending []byte // decoded data not yet returned
}

func newTelnetConn(c net.Conn) *telnetConn {
	return &telnetConn{Conn: c, rbuf: make([]byte, 64<<10)}
}

func (t *telnetConn) Read(p []byte) (int, error) {
	for {
		if len(t.pending) > 0 {
			n := copy(p, t.pending)
			t.pending = t.pending[n:]
			return n, nil
		}
		n, err := t.Conn.Read(t.rbuf)
		if n > 0 {
			d := t.decode(t.rbuf[:n])
			if len(d) > 0 {
				t.pending = d
				continue
			}
		}
		if err != nil {
			return 0, err
		}
	}
}

// decode strips telnet commands from b in place and returns the data.
func (t *telnetConn) decode(b []byte) []byte {
	out := b[:0]
	var reply []byte
	for i := 0; i < len(b); i++ {
		c := b[i]
		if t.state == tsData && c != tnIAC {
			// Runs of plain data move in one copy, so that the client costs
			// about as little as a raw one.
			j := bytes.IndexByte(b[i:], tnIAC)
			if j < 0 {
				j = len(b) - i
			}
			out = append(out, b[i:i+j]...)
			i += j - 1
			continue
		}
		switch t.state {
		case tsData:
			if c == tnIAC {
				t.state = tsIAC
			} else {
				out = append(out, c)
			}
		case tsIAC:
			switch c {
			case tnIAC:
				out = append(out, tnIAC)
				t.state = tsData
			case tnWILL, tnWONT, tnDO, tnDONT:
				t.cmd = c
				t.state = tsOpt
			case tnSB:
				t.state = tsSB
			default:
				t.state = tsData
			}
		case tsOpt:
			reply = t.negotiate(reply, t.cmd, c)
			t.state = tsData
		case tsSB:
			if c == tnIAC {
				t.state = tsSBIAC
			}
		case tsSBIAC:
			if c == tnSE {
				t.state = tsData
			} else {
				t.state = tsSB
			}
		}
	}
	if len(reply) > 0 {
		t.wmu.Lock()
		t.Conn.Write(reply)
		t.wmu.Unlock()
	}
	return out
}

func (t *telnetConn) negotiate(reply []byte, cmd, opt byte) []byte {
	ok := opt == optBinary || opt == optSGA
	switch cmd {
	case tnDO, tnDONT:
		want := int8(-1)
		if cmd == tnDO && ok {
			want = 1
		}
		if t.us[opt] != want {
			t.us[opt] = want
			if want == 1 {
				return append(reply, tnIAC, tnWILL, opt)
			}
			return append(reply, tnIAC, tnWONT, opt)
		}
	case tnWILL, tnWONT:
		want := int8(-1)
		if cmd == tnWILL && ok {
			want = 1
		}
		if t.them[opt] != want {
			t.them[opt] = want
			if want == 1 {
				return append(reply, tnIAC, tnDO, opt)
			}
			return append(reply, tnIAC, tnDONT, opt)
		}
	}
	return reply
}

func (t *telnetConn) Write(p []byte) (int, error) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	// Runs between 0xFFs move in one copy: a byte-at-a-time loop cost the
	// bench about 0.7 ms of CPU per MiB, on the CPUs the servers under test
	// share, and only in the columns that speak telnet.
	b := t.wbuf[:0]
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, tnIAC)
		if i < 0 {
			b = append(b, rest...)
			break
		}
		b = append(b, rest[:i+1]...)
		b = append(b, tnIAC)
		rest = rest[i+1:]
	}
	t.wbuf = b
	if _, err := t.Conn.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}
