package tunnel

import "errors"

// COBS (Consistent Overhead Byte Stuffing, Cheshire and Baker 1999) removes
// every 0x00 from a frame so that 0x00 can delimit frames on the line. The
// cost is one byte per 254 bytes of input plus one, whatever the data: a
// 1 KiB frame grows by at most 5 bytes (0.5%), and a receiver that starts in
// the middle of a frame, or after garbage, is in step again at the next 0x00.

// errCOBS is a frame that is not valid COBS (a code byte points past the end).
var errCOBS = errors.New("tunnel: bad COBS encoding")

// cobsMaxLen is the longest encoding of n bytes.
func cobsMaxLen(n int) int { return n + n/254 + 1 }

// cobsEncode appends the encoding of src to dst. The result contains no 0x00.
func cobsEncode(dst, src []byte) []byte {
	codeAt := len(dst)
	dst = append(dst, 0)
	code := byte(1)
	for _, b := range src {
		if b == 0 {
			dst[codeAt] = code
			codeAt = len(dst)
			dst = append(dst, 0)
			code = 1
			continue
		}
		dst = append(dst, b)
		code++
		if code == 0xff {
			dst[codeAt] = code
			codeAt = len(dst)
			dst = append(dst, 0)
			code = 1
		}
	}
	dst[codeAt] = code
	return dst
}

// cobsDecode appends the decoding of src (one frame, without its delimiter)
// to dst.
func cobsDecode(dst, src []byte) ([]byte, error) {
	for i := 0; i < len(src); {
		code := int(src[i])
		if code == 0 {
			return dst, errCOBS
		}
		i++
		end := i + code - 1
		if end > len(src) {
			return dst, errCOBS
		}
		for _, b := range src[i:end] {
			if b == 0 {
				return dst, errCOBS
			}
		}
		dst = append(dst, src[i:end]...)
		i = end
		// A block shorter than 254 data bytes stands for data followed
		// by a zero, except at the very end of the frame.
		if code < 0xff && i < len(src) {
			dst = append(dst, 0)
		}
	}
	return dst, nil
}
