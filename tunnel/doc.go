// Package tunnel carries many TCP connections over one serial line,
// reliably on a noisy line: `sertun tunnel`.
//
// Layers, bottom up (PROTOCOL.md has the wire format and state tables):
//
//   - framing: COBS with 0x00 delimiters, a CRC-32C on every frame
//     (frame.go, cobs.go);
//   - link: selective-repeat retransmission with cumulative and selective
//     acks riding on data, timers from the line rate and the measured round
//     trip, pacing at the line rate, a handshake with a version and random
//     session ids, keepalive (session.go);
//   - streams: open with a target, data, half-close, reset with a reason,
//     per-stream credit, a round-robin scheduler that lets small writes
//     pass bulk ones (stream.go, msg.go);
//   - forwards: -L, -R, SOCKS5 -D and the --permit list (forward.go).
//
// A Session survives the cable being out (streams wait, up to MaxOutage)
// and the device disappearing (it is opened again); a restarted far side
// is detected by its new session id, and the old streams are reset.
package tunnel
