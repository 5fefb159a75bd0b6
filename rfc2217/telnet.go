package rfc2217

import "bytes"

// Telnet command bytes (RFC 854).
const (
	SE   byte = 240 // end of subnegotiation
	NOP  byte = 241
	DM   byte = 242
	BRK  byte = 243
	IP   byte = 244
	AO   byte = 245
	AYT  byte = 246
	EC   byte = 247
	EL   byte = 248
	GA   byte = 249
	SB   byte = 250 // start of subnegotiation
	WILL byte = 251
	WONT byte = 252
	DO   byte = 253
	DONT byte = 254
	IAC  byte = 255
)

// Telnet options that sertun negotiates.
const (
	OptBinary  byte = 0  // RFC 856
	OptEcho    byte = 1  // RFC 857
	OptSGA     byte = 3  // RFC 858, suppress go-ahead
	OptComPort byte = 44 // RFC 2217
)

// MaxSubneg bounds the payload of one subnegotiation (after the option
// byte). A longer one is skipped whole: the wire must not make us grow a
// buffer without limit. The longest legitimate RFC 2217 payload is a
// SIGNATURE text, which no peer makes anywhere near this long.
const MaxSubneg = 1024

// EventKind says what Decode found besides data.
type EventKind uint8

const (
	// EventNone: Decode consumed its input without completing an event.
	EventNone EventKind = iota
	// EventOption: a negotiation settled. Event.Opt is the option,
	// Event.Local says whether it is our side (WILL/WONT from us, answering
	// the peer's DO/DONT) or the peer's side, Event.On whether it is now
	// enabled. It is also sent when a request of ours was refused (On false).
	EventOption
	// EventSubneg: a complete IAC SB Opt ... IAC SE for an option set with
	// Support. Event.Data is the unescaped payload after the option byte;
	// it is valid until the next call of Decode.
	EventSubneg
	// EventCommand: a two-byte command other than negotiation and
	// subnegotiation (NOP, BRK, AYT, GA, ...). Event.Cmd is the command.
	EventCommand
)

// Event is one thing that Decode found in the byte stream.
type Event struct {
	Kind  EventKind
	Cmd   byte // EventCommand
	Opt   byte // EventOption, EventSubneg
	Local bool // EventOption
	On    bool // EventOption
	Data  []byte
}

// Q-method states of one side of one option (RFC 1143).
type qstate uint8

const (
	qNo qstate = iota
	qYes
	qWantNo
	qWantYes
)

// side is one direction of one option: "us" (we WILL) or "him" (he WILLs,
// we DO). opposite is the RFC 1143 queue bit.
type side struct {
	state    qstate
	opposite bool
	accept   bool // the peer may turn this side on
}

// option is one row of the negotiation table.
type option struct {
	us, him side
	sb      bool // subnegotiations for this option are delivered
}

// Decoder states.
type dstate uint8

const (
	sData      dstate = iota // plain data
	sIAC                     // after IAC
	sNeg                     // after IAC WILL/WONT/DO/DONT, option byte next
	sSBOpt                   // after IAC SB, option byte next
	sSB                      // inside SB payload
	sSBIAC                   // inside SB payload, after IAC
	sCR                      // after CR from a non-binary peer: a NUL next is dropped
	sSBSkip                  // inside an SB that is unknown or too long
	sSBSkipIAC               // inside a skipped SB, after IAC
)

// Codec is the telnet protocol state of one connection (not "Telnet": that
// name is the server's Mode): a decoder of the
// peer's bytes, the option negotiation table (RFC 1143 Q method) and the
// negotiation bytes owed to the peer. It does no I/O, and it is not safe
// for concurrent use: the goroutine that reads the connection owns it.
// Encoding data needs only the BINARY state (see AppendData), so a writer
// goroutine does not touch a Codec.
//
// The zero value is ready: every option refused, nothing delivered.
type Codec struct {
	opts  [256]option
	state dstate
	cmd   byte // WILL/WONT/DO/DONT in sNeg
	sbOpt byte
	sb    []byte // current SB payload, at most MaxSubneg bytes
	out   []byte // negotiation replies not yet taken by AppendReplies
}

// Support sets the policy for opt: whether the peer may enable our side
// (local: the peer sends DO and we answer WILL), its side (remote: it
// sends WILL and we answer DO), and whether subnegotiations for opt are
// delivered as EventSubneg. Options never supported are refused and their
// subnegotiations skipped. Call before Decode.
func (t *Codec) Support(opt byte, local, remote, subneg bool) {
	o := &t.opts[opt]
	o.us.accept, o.him.accept, o.sb = local, remote, subneg
}

// Enabled reports whether opt is on: local for our side, else the peer's.
func (t *Codec) Enabled(opt byte, local bool) bool {
	if local {
		return t.opts[opt].us.state == qYes
	}
	return t.opts[opt].him.state == qYes
}

// Binary reports whether data in one direction is to be treated as binary
// (local: what we send, for AppendData; else what the peer sends, which
// Decode follows): true unless that side of BINARY is off and not being
// negotiated. Treating the negotiation window as binary matters in
// practice: pyserial never strips or adds CR NUL, and data that crosses our
// WILL BINARY must not gain a NUL.
func (t *Codec) Binary(local bool) bool {
	if local {
		return t.opts[OptBinary].us.state != qNo
	}
	return t.opts[OptBinary].him.state != qNo
}

// Pending reports whether a request of ours for opt is still unanswered.
func (t *Codec) Pending(opt byte, local bool) bool {
	s := t.opts[opt].him.state
	if local {
		s = t.opts[opt].us.state
	}
	return s == qWantYes || s == qWantNo
}

// Request asks to turn opt on or off on our side (local: WILL/WONT) or on
// the peer's side (DO/DONT), following RFC 1143: a request already made or
// already in force sends nothing. The bytes to send are queued for
// AppendReplies. Requesting an option also makes it acceptable, so that
// the peer's answer does not get refused.
func (t *Codec) Request(opt byte, local, on bool) {
	o := &t.opts[opt]
	s, yes, no := &o.him, DO, DONT
	if local {
		s, yes, no = &o.us, WILL, WONT
	}
	if on {
		s.accept = true
	}
	switch s.state {
	case qNo:
		if on {
			s.state = qWantYes
			t.out = append(t.out, IAC, yes, opt)
		}
	case qYes:
		if !on {
			s.state = qWantNo
			t.out = append(t.out, IAC, no, opt)
		}
	case qWantNo:
		s.opposite = on
	case qWantYes:
		s.opposite = !on
	}
}

// AppendReplies appends the negotiation bytes owed to the peer to dst and
// forgets them. Send them before any data or subnegotiation that depends on
// the outcome.
func (t *Codec) AppendReplies(dst []byte) []byte {
	dst = append(dst, t.out...)
	t.out = t.out[:0]
	return dst
}

// HasReplies reports whether AppendReplies has something to give.
func (t *Codec) HasReplies() bool { return len(t.out) > 0 }

// Decode parses the peer's bytes. It stops after the first event, or when
// in is used up; a sequence split across calls is kept in t, so in may be
// cut at any byte. It returns how many bytes of in it consumed, the data
// found before the event (unescaped in place: data is a prefix of in, which
// Decode overwrites) and the event (Kind EventNone if there is none).
// Callers loop until in is consumed, using data before ev:
//
//	for len(in) > 0 {
//		n, data, ev := t.Decode(in)
//		use(data); handle(ev)
//		in = in[n:]
//	}
func (t *Codec) Decode(in []byte) (n int, data []byte, ev Event) {
	w := 0 // data written to in[:w]
	binary := t.Binary(false)
	i := 0
	for i < len(in) {
		switch t.state {
		case sData:
			// The fast path: copy a run of plain data in one go.
			rest := in[i:]
			end := bytes.IndexByte(rest, IAC)
			if !binary {
				if cr := bytes.IndexByte(rest, '\r'); cr >= 0 && (end < 0 || cr < end) {
					end = cr
					w = moveData(in, w, i, end)
					in[w] = '\r'
					w++
					i += end + 1
					t.state = sCR
					continue
				}
			}
			if end < 0 {
				end = len(rest)
			}
			w = moveData(in, w, i, end)
			i += end
			if i < len(in) {
				i++ // IAC
				t.state = sIAC
			}
		case sCR:
			t.state = sData
			if in[i] == 0 {
				i++
			}
		case sIAC:
			c := in[i]
			i++
			t.state = sData
			switch c {
			case IAC:
				in[w] = IAC
				w++
			case WILL, WONT, DO, DONT:
				t.cmd = c
				t.state = sNeg
			case SB:
				t.state = sSBOpt
			case SE:
				// A stray SE outside SB: nothing to do.
			default:
				return i, in[:w], Event{Kind: EventCommand, Cmd: c}
			}
		case sNeg:
			opt := in[i]
			i++
			t.state = sData
			if e, ok := t.negotiate(t.cmd, opt); ok {
				return i, in[:w], e
			}
		case sSBOpt:
			t.sbOpt = in[i]
			i++
			t.sb = t.sb[:0]
			t.state = sSBSkip
			if t.opts[t.sbOpt].sb {
				t.state = sSB
			}
		case sSB:
			rest := in[i:]
			end := bytes.IndexByte(rest, IAC)
			if end < 0 {
				end = len(rest)
			}
			if len(t.sb)+end > MaxSubneg {
				t.state = sSBSkip
				continue
			}
			t.sb = append(t.sb, rest[:end]...)
			i += end
			if i < len(in) {
				i++
				t.state = sSBIAC
			}
		case sSBIAC:
			c := in[i]
			switch c {
			case IAC:
				i++
				t.state = sSB
				if len(t.sb) >= MaxSubneg {
					t.state = sSBSkip
				} else {
					t.sb = append(t.sb, IAC)
				}
			case SE:
				i++
				t.state = sData
				return i, in[:w], Event{Kind: EventSubneg, Opt: t.sbOpt, Data: t.sb}
			default:
				// IAC and a command inside SB: the peer forgot IAC SE.
				// Drop the SB and take the command as if SB had ended.
				t.state = sIAC
			}
		case sSBSkip:
			end := bytes.IndexByte(in[i:], IAC)
			if end < 0 {
				i = len(in)
				continue
			}
			i += end + 1
			t.state = sSBSkipIAC
		case sSBSkipIAC:
			c := in[i]
			switch c {
			case IAC:
				i++
				t.state = sSBSkip
			case SE:
				i++
				t.state = sData
			default:
				t.state = sIAC
			}
		}
	}
	return i, in[:w], Event{}
}

// moveData moves the n data bytes at in[r:] to in[w:] and returns the new
// write offset. With nothing unescaped so far w == r and nothing moves.
func moveData(in []byte, w, r, n int) int {
	if w != r {
		copy(in[w:], in[r:r+n])
	}
	return w + n
}

// negotiate applies one received WILL/WONT/DO/DONT to the option table
// (RFC 1143 section 7), queues the answer if one is owed and returns the
// event when the option's state settled.
func (t *Codec) negotiate(cmd, opt byte) (Event, bool) {
	o := &t.opts[opt]
	s, yes, no, local := &o.him, DO, DONT, false
	if cmd == DO || cmd == DONT {
		s, yes, no, local = &o.us, WILL, WONT, true
	}
	ev := func(on bool) (Event, bool) {
		return Event{Kind: EventOption, Opt: opt, Local: local, On: on}, true
	}
	if cmd == WILL || cmd == DO {
		switch s.state {
		case qNo:
			if !s.accept {
				t.out = append(t.out, IAC, no, opt)
				return Event{}, false
			}
			s.state = qYes
			t.out = append(t.out, IAC, yes, opt)
			return ev(true)
		case qYes:
			return Event{}, false
		case qWantNo:
			// The peer answered our DONT with WILL: an error by the
			// peer (empty queue), or what we queued (opposite).
			if s.opposite {
				s.state, s.opposite = qYes, false
				return ev(true)
			}
			s.state = qNo
			return ev(false)
		case qWantYes:
			if s.opposite {
				s.state, s.opposite = qWantNo, false
				t.out = append(t.out, IAC, no, opt)
				return Event{}, false
			}
			s.state = qYes
			return ev(true)
		}
		return Event{}, false
	}
	// WONT or DONT
	switch s.state {
	case qYes:
		s.state = qNo
		t.out = append(t.out, IAC, no, opt)
		return ev(false)
	case qWantNo:
		if s.opposite {
			s.state, s.opposite = qWantYes, false
			t.out = append(t.out, IAC, yes, opt)
			return Event{}, false
		}
		s.state = qNo
		return ev(false)
	case qWantYes:
		s.state, s.opposite = qNo, false
		return ev(false)
	}
	return Event{}, false
}

// NeedsEscape reports whether p must go through AppendData before it is
// sent: it holds an IAC, or a CR while we are not in binary mode. Callers
// with a buffer that needs nothing send it as it is, without a copy.
func NeedsEscape(p []byte, binary bool) bool {
	return bytes.IndexByte(p, IAC) >= 0 || (!binary && bytes.IndexByte(p, '\r') >= 0)
}

// AppendData appends p to dst as telnet data: each IAC doubled, and,
// unless binary (our BINARY option is on), each CR followed by NUL so that
// the peer cannot mistake it for a line end (RFC 854). Runs without such
// bytes are copied whole.
func AppendData(dst, p []byte, binary bool) []byte {
	for len(p) > 0 {
		i := bytes.IndexByte(p, IAC)
		if !binary {
			if cr := bytes.IndexByte(p, '\r'); cr >= 0 && (i < 0 || cr < i) {
				dst = append(dst, p[:cr+1]...)
				dst = append(dst, 0)
				p = p[cr+1:]
				continue
			}
		}
		if i < 0 {
			return append(dst, p...)
		}
		dst = append(dst, p[:i+1]...)
		dst = append(dst, IAC)
		p = p[i+1:]
	}
	return dst
}

// AppendSubneg appends IAC SB opt payload IAC SE to dst, doubling every IAC
// in payload.
func AppendSubneg(dst []byte, opt byte, payload []byte) []byte {
	dst = append(dst, IAC, SB, opt)
	dst = AppendData(dst, payload, true)
	return append(dst, IAC, SE)
}
