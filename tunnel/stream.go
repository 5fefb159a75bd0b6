package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"slices"
	"time"
)

// Stream is one connection carried by the tunnel. It behaves as a net.Conn
// (deadlines included) with a half-close, CloseWrite.
type Stream struct {
	s      *Session
	key    uint64 // n<<1 | 1 when this side opened it
	target string
	born   time.Time

	openCh chan struct{} // closed when OPEN_OK arrived or the stream failed
	rd, wd deadline
	readCh chan struct{} // signals: data, EOF or failure
	wrCh   chan struct{} // signals: room in sendBuf, or failure

	// Guarded by s.mu.
	opened      bool // OPEN_OK exchanged: data may flow
	sendBuf     []byte
	credit      int64 // bytes the far side lets us send
	finQueued   bool  // CloseWrite: FIN follows the buffered data
	finSent     bool
	recvBuf     []byte
	recvOff     int
	recvWin     int64 // bytes the far side may still send
	unannounced int64 // bytes read but not yet credited back
	finRecv     bool
	readClosed  bool
	err         error // why the stream failed (reset, session gone)
	inReady     bool
	urgent      bool      // at the front of the round-robin with a small write
	lastSent    time.Time // when the scheduler last took data from it
	recent      float64   // bytes sent lately, decaying (recentLocked)
	inWinq      bool
	removed     bool
}

var _ net.Conn = (*Stream)(nil)

// ErrWriteClosed: Write after CloseWrite or Close.
var ErrWriteClosed = fmt.Errorf("tunnel: stream closed for writing: %w", net.ErrClosed)

func newStream(s *Session, key uint64, target string) *Stream {
	return &Stream{
		s: s, key: key, target: target, born: time.Now(),
		openCh: make(chan struct{}),
		rd:     newDeadline(),
		wd:     newDeadline(),
		readCh: make(chan struct{}, 1),
		wrCh:   make(chan struct{}, 1),
	}
}

// Target is the host:port the stream was opened for.
func (st *Stream) Target() string { return st.target }

// wire is the stream field in messages we send (see msg.go).
func (st *Stream) wire() uint64 { return st.key ^ 1 }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// OpenStream opens a stream to target on the far side and waits until the
// far side has connected it. While the link is down it waits (bounded by
// ctx). A refusal is a *ResetError (errors.Is ErrNotPermitted when the far
// side's --permit does not allow target).
func (s *Session) OpenStream(ctx context.Context, target string) (*Stream, error) {
	if len(target) > 1024 {
		return nil, errors.New("tunnel: target longer than 1024 bytes")
	}
	s.mu.Lock()
	if s.closed || s.closing {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	var key uint64
	for {
		s.nextLocal = (s.nextLocal + 1) & (1<<30 - 1)
		key = s.nextLocal<<1 | 1
		if _, used := s.streams[key]; !used && s.nextLocal != 0 {
			break
		}
	}
	st := newStream(s, key, target)
	st.recvWin = streamWindow
	s.streams[key] = st
	st.queueOpenLocked()
	s.mu.Unlock()
	s.kick()
	select {
	case <-st.openCh:
	case <-ctx.Done():
		st.resetWith(ResetGeneric, "open cancelled", ctx.Err())
		return nil, ctx.Err()
	}
	s.mu.Lock()
	err := st.err
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (st *Stream) queueOpenLocked() {
	body := binary.AppendUvarint(nil, streamWindow)
	st.s.ctrl = append(st.s.ctrl, appendMsg(nil, msgOpen, st.wire(), append(body, st.target...)))
}

// AcceptStream returns the next stream the far side opened (to a target
// that Config.Permit allows).
func (s *Session) AcceptStream(ctx context.Context) (*Stream, error) {
	select {
	case st := <-s.acceptCh:
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, ErrClosed
	}
}

// FarPermits waits until the far side has announced its --permit list in
// this session and returns it ("any" allows every target).
func (s *Session) FarPermits(ctx context.Context) ([]string, error) {
	for {
		s.mu.Lock()
		ch, info := s.infoCh, s.farInfo
		s.mu.Unlock()
		select {
		case <-ch:
			return info, nil
		default:
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.ctx.Done():
			return nil, ErrClosed
		}
		s.mu.Lock()
		info, same := s.farInfo, ch == s.infoCh
		s.mu.Unlock()
		if same {
			return info, nil
		}
	}
}

// Read reads data the far side wrote; io.EOF after its CloseWrite.
func (st *Stream) Read(b []byte) (int, error) {
	s := st.s
	s.mu.Lock()
	for {
		switch {
		case isClosed(st.rd.wait()):
			s.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		case st.recvOff < len(st.recvBuf):
			n := copy(b, st.recvBuf[st.recvOff:])
			st.recvOff += n
			if st.recvOff == len(st.recvBuf) {
				st.recvBuf, st.recvOff = st.recvBuf[:0], 0
			}
			st.creditLocked(int64(n))
			s.mu.Unlock()
			return n, nil
		case st.readClosed:
			s.mu.Unlock()
			return 0, net.ErrClosed
		case st.err != nil:
			err := st.err
			s.mu.Unlock()
			return 0, err
		case st.finRecv:
			s.mu.Unlock()
			return 0, io.EOF
		case len(b) == 0:
			s.mu.Unlock()
			return 0, nil
		}
		s.mu.Unlock()
		select {
		case <-st.readCh:
		case <-st.rd.wait():
		}
		s.mu.Lock()
	}
}

// Write queues b for the far side. It blocks while the stream's buffer is
// full (the far side reads slowly or the link is down).
func (st *Stream) Write(b []byte) (int, error) {
	s := st.s
	s.mu.Lock()
	n := 0
	for {
		switch {
		case isClosed(st.wd.wait()):
			s.mu.Unlock()
			return n, os.ErrDeadlineExceeded
		case st.err != nil:
			err := st.err
			s.mu.Unlock()
			return n, err
		case st.finQueued:
			s.mu.Unlock()
			return n, ErrWriteClosed
		case n == len(b):
			s.mu.Unlock()
			return n, nil
		}
		if room := sendBufMax - len(st.sendBuf); room > 0 {
			k := min(room, len(b)-n)
			// Interactive: a small write on a stream that has sent
			// little lately. A bulk stream fed in small pieces (an
			// echo of bulk data) has sent a lot, and is not.
			interactive := len(st.sendBuf) == 0 &&
				st.recentLocked(time.Now())+float64(k) <= smallWrite
			st.sendBuf = append(st.sendBuf, b[n:n+k]...)
			n += k
			st.scheduleLocked(interactive)
			continue
		}
		s.mu.Unlock()
		select {
		case <-st.wrCh:
		case <-st.wd.wait():
		}
		s.mu.Lock()
	}
}

// CloseWrite sends FIN after the buffered data: the far side reads EOF.
func (st *Stream) CloseWrite() error {
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.err != nil {
		return st.err
	}
	if !st.finQueued {
		st.finQueued = true
		st.scheduleLocked(false)
	}
	return nil
}

// Close closes both directions: FIN after the buffered data, and whatever
// the far side still sends is discarded (and credited, so it does not
// block).
func (st *Stream) Close() error {
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if st.readClosed {
		return nil
	}
	st.readClosed = true
	if unread := len(st.recvBuf) - st.recvOff; unread > 0 {
		st.recvBuf, st.recvOff = nil, 0
		st.creditLocked(int64(unread))
	}
	if st.err == nil && !st.finQueued {
		st.finQueued = true
		st.scheduleLocked(false)
	}
	signal(st.readCh)
	signal(st.wrCh)
	st.maybeRemoveLocked()
	return nil
}

// Reset aborts the stream: buffered data is dropped and the far side's end
// fails with reason.
func (st *Stream) Reset(reason string) error {
	st.resetWith(ResetGeneric, reason, nil)
	return nil
}

// resetWith sends RESET with code and reason and fails the local end with
// err (a local error when nil).
func (st *Stream) resetWith(code uint8, reason string, err error) {
	s := st.s
	s.mu.Lock()
	defer s.mu.Unlock()
	st.resetLocked(code, reason, err)
}

func (st *Stream) resetLocked(code uint8, reason string, err error) {
	if st.removed || st.err != nil {
		return
	}
	s := st.s
	body := append([]byte{code}, reason...)
	s.ctrl = append(s.ctrl, appendMsg(nil, msgReset, st.wire(), body))
	if err == nil {
		err = fmt.Errorf("tunnel: stream reset: %s: %w", reason, net.ErrClosed)
	}
	st.failLocked(err)
	s.kick()
}

// failLocked ends the stream with err, without telling the far side.
func (st *Stream) failLocked(err error) {
	if st.err == nil {
		st.err = err
	}
	st.sendBuf = nil
	if !isClosed(st.openCh) {
		close(st.openCh)
	}
	signal(st.readCh)
	signal(st.wrCh)
	st.removeLocked()
}

func (st *Stream) removeLocked() {
	if st.removed {
		return
	}
	st.removed = true
	if st.s.streams[st.key] == st {
		delete(st.s.streams, st.key)
	}
}

// maybeRemoveLocked forgets the stream once both sides are done with it.
func (st *Stream) maybeRemoveLocked() {
	if st.finSent && st.finRecv {
		st.removeLocked()
	}
}

// creditLocked records n bytes consumed and queues a window update once a
// quarter of the window is owed, so the sender never stalls on credit while
// the reader keeps up.
func (st *Stream) creditLocked(n int64) {
	st.unannounced += n
	if st.unannounced >= streamWindow/4 && !st.finRecv && st.err == nil && !st.inWinq {
		st.inWinq = true
		st.s.winq = append(st.s.winq, st)
		st.s.kick()
	}
}

// recentTau is how fast a stream's sending history fades.
const recentTau = 100 * time.Millisecond

// recentLocked is what the stream sent lately: each byte counts
// exp(-age/recentTau). A keystroke stream stays near zero; a bulk stream,
// even one fed in small pieces, does not.
func (st *Stream) recentLocked(now time.Time) float64 {
	if st.recent == 0 {
		return 0
	}
	return st.recent * math.Exp(-float64(now.Sub(st.lastSent))/float64(recentTau))
}

// sendable says whether the scheduler has something to send for st.
func (st *Stream) sendable() bool {
	if !st.opened || st.err != nil {
		return false
	}
	if len(st.sendBuf) > 0 {
		return st.credit > 0
	}
	return st.finQueued && !st.finSent
}

// scheduleLocked puts st in the round-robin; front for a stream that woke
// up with a small write, so keystrokes overtake bulk transfers.
func (st *Stream) scheduleLocked(front bool) {
	if st.inReady || !st.sendable() {
		return
	}
	st.inReady = true
	st.urgent = front
	s := st.s
	if front {
		// Ahead of the bulk streams, behind the other interactive
		// ones: first come, first served among them.
		i := 0
		for i < len(s.ready) && s.ready[i].urgent {
			i++
		}
		s.ready = slices.Insert(s.ready, i, st)
	} else {
		s.ready = append(s.ready, st)
	}
	s.kick()
}

// confirmLocked accepts an incoming stream: OPEN_OK with our window.
func (st *Stream) confirmLocked() {
	if st.err != nil || st.opened {
		return
	}
	st.opened = true
	close(st.openCh)
	s := st.s
	s.ctrl = append(s.ctrl, appendMsg(nil, msgOpenOK, st.wire(), binary.AppendUvarint(nil, streamWindow)))
	st.scheduleLocked(false)
	s.kick()
}

// confirm accepts an incoming stream (after the dial succeeded).
func (st *Stream) confirm() {
	st.s.mu.Lock()
	defer st.s.mu.Unlock()
	st.confirmLocked()
}

// recvLocked takes a DATA message.
func (st *Stream) recvLocked(b []byte) {
	n := int64(len(b))
	if n > st.recvWin {
		st.resetLocked(ResetProtocol, "data beyond the stream window", fmt.Errorf("tunnel: far side overran the stream window: %w", net.ErrClosed))
		return
	}
	st.recvWin -= n
	st.s.stats.BytesReceived += uint64(n)
	if st.readClosed || st.finRecv {
		st.creditLocked(n)
		return
	}
	if st.recvOff > 0 && st.recvOff >= len(st.recvBuf)/2 {
		st.recvBuf = append(st.recvBuf[:0], st.recvBuf[st.recvOff:]...)
		st.recvOff = 0
	}
	st.recvBuf = append(st.recvBuf, b...)
	signal(st.readCh)
}

// LocalAddr and RemoteAddr name the stream for logs.
func (st *Stream) LocalAddr() net.Addr  { return tunnelAddr("tunnel") }
func (st *Stream) RemoteAddr() net.Addr { return tunnelAddr(st.target) }

// SetDeadline sets both deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.rd.set(t)
	st.wd.set(t)
	return nil
}

func (st *Stream) SetReadDeadline(t time.Time) error  { st.rd.set(t); return nil }
func (st *Stream) SetWriteDeadline(t time.Time) error { st.wd.set(t); return nil }

type tunnelAddr string

func (a tunnelAddr) Network() string { return "tunnel" }
func (a tunnelAddr) String() string  { return string(a) }

// fill builds the body of the next DATA frame: control messages first,
// then window updates, then stream data round-robin. Callers hold mu.
func (s *Session) fill() []byte {
	limit := s.payload
	var b []byte
	for len(s.ctrl) > 0 {
		m := s.ctrl[0]
		if len(b) > 0 && len(b)+len(m) > limit {
			return b
		}
		b = append(b, m...)
		s.ctrl[0] = nil
		s.ctrl = s.ctrl[1:]
	}
	for len(s.winq) > 0 && len(b)+16 <= limit {
		st := s.winq[0]
		s.winq[0] = nil
		s.winq = s.winq[1:]
		st.inWinq = false
		if st.removed || st.unannounced == 0 {
			continue
		}
		b = appendMsg(b, msgWindow, st.wire(), binary.AppendUvarint(nil, uint64(st.unannounced)))
		st.recvWin += st.unannounced
		st.unannounced = 0
	}
	urgent := false
	for n := len(s.ready); n > 0 && len(s.ready) > 0; n-- {
		room := limit - len(b) - 2*msgOverhead
		if room < 16 {
			break
		}
		st := s.ready[0]
		if urgent && !st.urgent {
			// A frame with keystrokes goes out short: the far side
			// takes a frame only once it has all of it, so bulk
			// data behind them would delay them by a frame time.
			break
		}
		urgent = urgent || st.urgent
		st.urgent = false
		s.ready[0] = nil
		s.ready = s.ready[1:]
		st.inReady = false
		if !st.sendable() {
			continue
		}
		if k := min(int64(len(st.sendBuf)), st.credit, int64(room)); k > 0 {
			b = appendMsg(b, msgData, st.wire(), st.sendBuf[:k])
			st.sendBuf = st.sendBuf[k:]
			if len(st.sendBuf) == 0 {
				st.sendBuf = nil
			}
			st.credit -= k
			now := time.Now()
			st.recent = st.recentLocked(now) + float64(k)
			st.lastSent = now
			s.stats.BytesSent += uint64(k)
			signal(st.wrCh)
		}
		if st.finQueued && !st.finSent && len(st.sendBuf) == 0 {
			b = appendMsg(b, msgFin, st.wire(), nil)
			st.finSent = true
			st.maybeRemoveLocked()
		}
		if st.sendable() {
			st.inReady = true
			s.ready = append(s.ready, st)
		}
	}
	return b
}

// deliver takes the body of an in-order DATA frame. Callers hold mu.
func (s *Session) deliver(body []byte) {
	for len(body) > 0 {
		m, rest, err := parseMsg(body)
		if err != nil {
			s.log.Debug("tunnel: dropping a malformed message from the far side", "err", err)
			return
		}
		body = rest
		s.handleMsg(m)
	}
}

func (s *Session) handleMsg(m msg) {
	if s.closed {
		return
	}
	switch m.typ {
	case msgOpen:
		s.handleOpen(m)
		return
	case msgInfo:
		if list, ok := parseStrings(m.body); ok && !isClosed(s.infoCh) {
			s.farInfo = list
			close(s.infoCh)
		}
		return
	case msgListen:
		list, ok := parseStrings(m.body)
		if !ok || len(list) != 2 {
			return
		}
		if s.hooks.listen == nil {
			s.ctrl = append(s.ctrl, appendMsg(nil, msgListenResult, m.sid, []byte("this side runs no forwards")))
			s.kick()
			return
		}
		s.hooks.listen(m.sid, list[0], list[1])
		return
	case msgListenResult:
		fw, ok := s.reqs[m.sid]
		if !ok {
			return
		}
		if len(m.body) == 0 {
			s.log.Info("tunnel: far side listens for -R", "listen", fw.Bind, "target", fw.Target)
		} else {
			s.log.Error("tunnel: far side cannot listen for -R", "listen", fw.Bind, "target", fw.Target, "err", string(m.body))
		}
		return
	}
	st := s.streams[m.sid]
	if st == nil {
		return // a stream already gone: late data, window or FIN
	}
	switch m.typ {
	case msgOpenOK:
		win, _, ok := uvarintPrefix(m.body)
		if !ok || st.opened || st.key&1 == 0 {
			return
		}
		st.opened = true
		st.credit = int64(min(win, 1<<40))
		close(st.openCh)
		st.scheduleLocked(false)
	case msgData:
		st.recvLocked(m.body)
	case msgWindow:
		inc, _, ok := uvarintPrefix(m.body)
		if !ok {
			return
		}
		st.credit = min(st.credit+int64(min(inc, 1<<40)), 1<<40)
		st.scheduleLocked(false)
	case msgFin:
		st.finRecv = true
		signal(st.readCh)
		st.maybeRemoveLocked()
	case msgReset:
		if len(m.body) < 1 {
			return
		}
		st.failLocked(&ResetError{Code: m.body[0], Reason: string(m.body[1:])})
	}
}

// handleOpen takes an OPEN: check the target against --permit, then hand
// the stream to the handler (which dials) or to AcceptStream.
func (s *Session) handleOpen(m msg) {
	win, rest, ok := uvarintPrefix(m.body)
	if !ok || m.sid&1 != 0 {
		return
	}
	if old := s.streams[m.sid]; old != nil {
		old.resetLocked(ResetProtocol, "stream opened twice", nil)
		return
	}
	st := newStream(s, m.sid, string(rest))
	st.credit = int64(min(win, 1<<40))
	st.recvWin = streamWindow
	s.streams[m.sid] = st
	if s.closing {
		st.resetLocked(ResetGeneric, "far side is shutting down", nil)
		return
	}
	if !s.permitted(st.target) {
		s.log.Warn("tunnel: refused a stream from the far side: target not permitted (see --permit)", "target", st.target)
		st.resetLocked(ResetNotPermitted, "not permitted: "+st.target, nil)
		return
	}
	if s.hooks.handler != nil {
		go s.hooks.handler(st)
		return
	}
	select {
	case s.acceptCh <- st:
		st.confirmLocked()
	default:
		st.resetLocked(ResetBusy, "too many streams waiting to be accepted", nil)
	}
}
