package tunnel

import (
	"encoding/binary"
	"errors"
)

// Mux messages ride in the body of DATA frames, as many as fit:
//
//	type(1) | stream uvarint | length uvarint | body(length)
//
// The stream field is n<<1 | d, where n is the number the opener gave the
// stream and d is 1 when the stream was opened by the receiver of the
// message. See PROTOCOL.md.
const (
	msgOpen         = 1 // body: window uvarint | target
	msgOpenOK       = 2 // body: window uvarint
	msgData         = 3 // body: bytes
	msgWindow       = 4 // body: increment uvarint
	msgFin          = 5 // no body: the sender writes no more
	msgReset        = 6 // body: code(1) | reason
	msgInfo         = 7 // stream 0; body: count uvarint | (len uvarint | permit)...
	msgListen       = 8 // stream = request id; body: len uvarint | bind | target
	msgListenResult = 9 // stream = request id; body: error text, empty when listening
)

// Reset codes: why a stream was reset.
const (
	ResetGeneric      = 0
	ResetNotPermitted = 1 // the far side's --permit does not allow the target
	ResetDialFailed   = 2 // the far side could not connect to the target
	ResetProtocol     = 3 // the peer broke the protocol (credit, unknown stream)
	ResetLinkLost     = 4 // the link was down longer than MaxOutage
	ResetBusy         = 5 // nobody accepts streams on the far side
)

var errMsg = errors.New("tunnel: malformed mux message")

// msg is one decoded mux message. body aliases the frame.
type msg struct {
	typ  uint8
	sid  uint64
	body []byte
}

// appendMsg appends a message with the given body.
func appendMsg(dst []byte, typ uint8, sid uint64, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.AppendUvarint(dst, sid)
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...)
}

// msgOverhead is the most appendMsg adds to a body of up to maxBody bytes
// for a stream id below 2^21.
const msgOverhead = 1 + 3 + 2

// parseMsg takes the first message off p.
func parseMsg(p []byte) (m msg, rest []byte, err error) {
	if len(p) < 3 {
		return m, nil, errMsg
	}
	m.typ = p[0]
	sid, n := binary.Uvarint(p[1:])
	if n <= 0 {
		return m, nil, errMsg
	}
	m.sid = sid
	p = p[1+n:]
	l, n := binary.Uvarint(p)
	if n <= 0 || l > uint64(len(p)-n) {
		return m, nil, errMsg
	}
	p = p[n:]
	m.body = p[:l]
	return m, p[l:], nil
}

// uvarintPrefix splits a uvarint off the front of b.
func uvarintPrefix(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, false
	}
	return v, b[n:], true
}

// infoMsg is the INFO message that opens a session: this side's --permit
// list, which one frame must hold.
func infoMsg(permit []string) []byte {
	return appendMsg(nil, msgInfo, 0, appendStrings(nil, permit))
}

// appendStrings encodes a list of strings (msgInfo).
func appendStrings(dst []byte, ss []string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(ss)))
	for _, s := range ss {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	return dst
}

// parseStrings decodes appendStrings.
func parseStrings(b []byte) ([]string, bool) {
	n, b, ok := uvarintPrefix(b)
	if !ok || n > uint64(len(b)) {
		return nil, false
	}
	ss := make([]string, 0, n)
	for i := uint64(0); i < n; i++ {
		var l uint64
		l, b, ok = uvarintPrefix(b)
		if !ok || l > uint64(len(b)) {
			return nil, false
		}
		ss = append(ss, string(b[:l]))
		b = b[l:]
	}
	return ss, true
}

// hello is the body of a HELLO frame.
type hello struct {
	version uint8
	up      bool   // the sender has the link up with the session named below
	id      uint64 // the sender's session id
	peer    uint64 // the session id the sender knows for the receiver, 0 if none
	baud    uint32 // the sender's --baud (a mismatch is logged)
}

const helloLen = 1 + 1 + 8 + 8 + 4

func (h *hello) marshal() []byte {
	b := make([]byte, 0, helloLen)
	b = append(b, h.version)
	var fl byte
	if h.up {
		fl = 1
	}
	b = append(b, fl)
	b = binary.BigEndian.AppendUint64(b, h.id)
	b = binary.BigEndian.AppendUint64(b, h.peer)
	return binary.BigEndian.AppendUint32(b, h.baud)
}

// unmarshal accepts longer bodies, so that a later version can add fields.
func (h *hello) unmarshal(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	h.version = b[0]
	if h.version != Version {
		return true // the caller reports the version; the rest may differ
	}
	if len(b) < helloLen {
		return false
	}
	h.up = b[1]&1 != 0
	h.id = binary.BigEndian.Uint64(b[2:])
	h.peer = binary.BigEndian.Uint64(b[10:])
	h.baud = binary.BigEndian.Uint32(b[18:])
	return true
}
