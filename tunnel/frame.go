package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Link frames. On the line each frame is COBS(header | body | CRC-32C)
// followed by 0x00; see PROTOCOL.md for the diagrams.

// Version is the link protocol version carried in HELLO. Peers with another
// version do not connect.
const Version = 1

// Frame types (high nibble of the first byte).
const (
	frameData  = 1 // reliable, in sequence: carries mux messages
	frameAck   = 2 // acknowledgement only (and keepalive)
	frameHello = 3 // handshake: session ids, version
)

// Flags (low nibble of the first byte).
const (
	flagSACK = 1 << 0 // an 8-byte selective-ack bitmap follows the header
	flagPing = 1 << 1 // answer with an ACK at once (keepalive, probe)
)

const (
	headerLen = 6 // type|flags, tag, seq(2), ack(2)
	sackLen   = 8
	crcLen    = 4
	// maxBody is the largest body a receiver accepts; senders use less
	// (see maxPayloadFor).
	maxBody = 4096
	// maxWindow is the number of frames a receiver buffers out of order
	// (it is also the size of the SACK bitmap in bits).
	maxWindow = 64
	// maxWire is the longest encoded frame, delimiter excluded.
	maxWire = headerLen + sackLen + maxBody + crcLen + (headerLen+sackLen+maxBody+crcLen)/254 + 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errCRC   = errors.New("tunnel: frame CRC mismatch")
	errShort = errors.New("tunnel: frame too short")
	errType  = errors.New("tunnel: unknown frame type")
)

// frame is one decoded link frame.
type frame struct {
	typ   uint8
	flags uint8
	tag   uint8
	seq   uint16
	ack   uint16
	sack  uint64 // bit i: seq ack+1+i received (valid with flagSACK)
	body  []byte // aliases the decoder's buffer
}

// appendFrame appends the encoded frame f (COBS, delimiter included) to dst.
// scratch is reused for the raw frame and returned for the next call.
func appendFrame(dst, scratch []byte, f *frame) (out, scratchOut []byte) {
	raw := scratch[:0]
	flags := f.flags &^ flagSACK
	if f.sack != 0 {
		flags |= flagSACK
	}
	raw = append(raw, f.typ<<4|flags, f.tag)
	raw = binary.BigEndian.AppendUint16(raw, f.seq)
	raw = binary.BigEndian.AppendUint16(raw, f.ack)
	if f.sack != 0 {
		raw = binary.BigEndian.AppendUint64(raw, f.sack)
	}
	raw = append(raw, f.body...)
	raw = binary.BigEndian.AppendUint32(raw, crc32.Checksum(raw, castagnoli))
	dst = cobsEncode(dst, raw)
	dst = append(dst, 0)
	return dst, raw
}

// parseFrame checks and splits one COBS-decoded frame. f.body aliases raw.
func parseFrame(raw []byte, f *frame) error {
	if len(raw) < headerLen+crcLen {
		return errShort
	}
	n := len(raw) - crcLen
	if crc32.Checksum(raw[:n], castagnoli) != binary.BigEndian.Uint32(raw[n:]) {
		return errCRC
	}
	f.typ, f.flags = raw[0]>>4, raw[0]&0x0f
	if f.typ < frameData || f.typ > frameHello {
		return errType
	}
	f.tag = raw[1]
	f.seq = binary.BigEndian.Uint16(raw[2:])
	f.ack = binary.BigEndian.Uint16(raw[4:])
	body := raw[headerLen:n]
	f.sack = 0
	if f.flags&flagSACK != 0 {
		if len(body) < sackLen {
			return errShort
		}
		f.sack = binary.BigEndian.Uint64(body)
		body = body[sackLen:]
	}
	if len(body) > maxBody {
		return errShort
	}
	f.body = body
	return nil
}

// decoder splits the byte stream from the line into frames. It does no I/O:
// bytes in, frames out, so that it can be tested at every split point.
type decoder struct {
	buf     []byte // the current encoded frame, without delimiter
	raw     []byte // its decoding
	discard bool   // the current frame grew too long: drop up to the next 0x00

	// Counters for --stats.
	crcErrors uint64 // frames that failed the CRC or COBS check
	junk      uint64 // runs of bytes that were not frames (too long, too short)
}

// feed consumes p and calls fn for each valid frame. fn must not keep f.body.
func (d *decoder) feed(p []byte, fn func(f *frame)) {
	var f frame
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			if !d.discard {
				if len(d.buf)+len(p) > maxWire {
					d.discard = true
					d.buf = d.buf[:0]
					d.junk++
				} else {
					d.buf = append(d.buf, p...)
				}
			}
			return
		}
		chunk := p[:i]
		p = p[i+1:]
		if d.discard {
			d.discard = false
			continue
		}
		if len(d.buf)+len(chunk) > maxWire {
			d.buf = d.buf[:0]
			d.junk++
			continue
		}
		enc := chunk
		if len(d.buf) > 0 {
			d.buf = append(d.buf, chunk...)
			enc = d.buf
		}
		if len(enc) == 0 {
			continue // idle delimiters
		}
		var err error
		d.raw, err = cobsDecode(d.raw[:0], enc)
		d.buf = d.buf[:0]
		if err == nil {
			err = parseFrame(d.raw, &f)
		}
		switch {
		case err == nil:
			fn(&f)
		case errors.Is(err, errShort) && len(enc) < 4:
			d.junk++
		default:
			d.crcErrors++
		}
	}
}
