package tunnel

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"
)

// Line is the serial line as the tunnel uses it; a serialdev.Port is one.
// Close must unblock a pending Read. If the line also has SetWriteDeadline,
// writes are bounded so that a line stuck in flow control counts as an
// outage instead of hanging the tunnel.
type Line interface {
	io.Reader
	io.Writer
	io.Closer
}

// Errors that callers branch on.
var (
	// ErrClosed: the session was closed. It wraps net.ErrClosed.
	ErrClosed = fmt.Errorf("tunnel: session closed: %w", net.ErrClosed)
	// ErrPeerRestarted: the far side started a new session (it was
	// restarted), so the streams of the old one are gone.
	ErrPeerRestarted = errors.New("tunnel: far side restarted; connection lost")
	// ErrOutage: the link was down longer than MaxOutage.
	ErrOutage = errors.New("tunnel: link down longer than --max-outage; connection lost")
	// ErrNotPermitted: the far side's --permit list does not allow the
	// target (a *ResetError with ResetNotPermitted is this error).
	ErrNotPermitted = errors.New("tunnel: far side does not permit the target")
)

// ResetError is a stream reset by the far side, with its reason.
type ResetError struct {
	Code   uint8
	Reason string
}

func (e *ResetError) Error() string {
	if e.Reason == "" {
		return "tunnel: stream reset by far side"
	}
	return "tunnel: stream reset by far side: " + e.Reason
}

// Is makes errors.Is(err, ErrNotPermitted) work for a refused open.
func (e *ResetError) Is(target error) bool {
	return target == ErrNotPermitted && e.Code == ResetNotPermitted
}

// Defaults.
const (
	DefaultBaud      = 115200
	DefaultMaxOutage = 10 * time.Minute
	// streamWindow is the credit each side gives each stream: what one
	// stalled reader can hold up. 64 KiB is over a second at 460800 baud.
	streamWindow = 64 << 10
	// sendBufMax bounds what Write queues per stream before it blocks.
	sendBufMax = 32 << 10
	// smallWrite: a stream that wakes up with at most this much to send
	// goes to the front of the round-robin (keystrokes pass bulk data).
	smallWrite = 256
	// acceptBacklog bounds incoming streams not yet taken by AcceptStream.
	acceptBacklog = 1024
	// paceMax is the most of --baud we write at. Pacing is open loop (a
	// pty, and many USB adapters, do not report their output queue), so
	// whatever the line loses against --baud (a UART clock a little slow,
	// gaps between USB packets, a relay or a `sertun cable` short of CPU
	// for a moment) would stay queued in the kernel in front of every
	// keystroke for as long as a bulk transfer runs: a shortfall of 0.1%
	// queues 1 ms more every second, and tens of ms are more than the
	// round trip can tell from an ack that waits for the far side's bulk
	// frame. 1% below --baud the device's queue empties by itself, 10 ms
	// a second; a larger shortfall is adaptPace's.
	paceMax = 0.99
)

// linkState is the state of the link (see PROTOCOL.md).
type linkState int

const (
	stateConnecting linkState = iota // no session with the far side yet
	stateUp                          // frames flow
	stateDown                        // nothing heard for deadAfter; streams wait
)

func (s linkState) String() string {
	return [...]string{"connecting", "up", "down"}[s]
}

// outFrame is a sent DATA frame kept for retransmission.
type outFrame struct {
	seq    uint16
	body   []byte
	sentAt time.Time
	order  uint64 // transmission number of its last sending
	tries  int
	acked  bool // selectively acked
	lost   bool // to be sent again
}

// Stats are counters since the session started.
type Stats struct {
	BytesSent, BytesReceived uint64 // stream payload (goodput)
	FramesSent, FramesRecv   uint64
	Retransmits              uint64
	CRCErrors                uint64 // frames that failed CRC or COBS
	Junk                     uint64 // line bytes that were not frames
	LineBytesSent            uint64 // everything written to the line
	SRTT                     time.Duration
	Pace                     float64 // share of --baud we send at (below 0.99: the line is slower)
	Streams                  int
}

// Session is one end of a tunnel: the link layer over the serial line and
// the streams multiplexed over it. It keeps going while the line is out or
// the device is unplugged; the session with the far side survives that.
type Session struct {
	cfg Config
	log *slog.Logger

	// Derived from the line rate, fixed.
	byteTime   time.Duration // one byte at --baud, 8N1
	maxPayload int           // body bytes per DATA frame
	keepAlive  time.Duration // idle time before a ping
	deadAfter  time.Duration // silence that marks the link down

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // kicks the sender

	hooks hooks

	mu sync.Mutex
	// Line.
	line Line
	// Link.
	state                                 linkState
	localID                               uint64
	peerID                                uint64
	since                                 time.Time // when state last changed
	lastRecv                              time.Time
	lastSend                              time.Time
	helloDue                              bool      // a HELLO must be sent (answer)
	lastHello                             time.Time // when the last HELLO went out
	echoWarned, versionWarned, baudWarned bool
	// Sender.
	nextSeq  uint16
	una      uint16
	inflight [maxWindow]*outFrame
	order    uint64
	maxAcked uint64
	srtt     time.Duration
	rttvar   time.Duration
	rto      time.Duration
	rtoBase  time.Duration // rto before backoff
	// Pacing: a share of --baud, lowered while a queue builds (adaptPace).
	pace         float64
	paceAt       time.Time
	paceByteTime time.Duration
	baseRTT      time.Duration // least recent round trip: the path without queue
	minCur       time.Duration
	minPrev      time.Duration
	minAt        time.Time
	window       int
	// Frame size adapts to the error rate (see outcome).
	payload  int     // current body limit for new DATA frames
	byteErr  float64 // estimated probability that a byte is hit
	outcomes int     // frames acked or lost since the last adaptation
	lostN    int
	outBytes int
	// Receiver.
	rcvNext    uint16
	ooo        [maxWindow][]byte
	ackPending bool
	// Mux.
	streams   map[uint64]*Stream
	nextLocal uint64
	ctrl      [][]byte
	winq      []*Stream
	ready     []*Stream
	acceptCh  chan *Stream
	farInfo   []string
	infoCh    chan struct{} // closed when farInfo arrived in this session
	nextReq   uint64
	reqs      map[uint64]Forward // our -R requests by id
	closing   bool               // Close is telling the far side: no new streams
	closed    bool
	closeErr  error
	stats     Stats
}

// NewSession starts a session over the line that cfg.Open opens. Streams
// the far side opens are checked against cfg.Permit and delivered by
// AcceptStream.
func NewSession(cfg Config) (*Session, error) {
	return newSession(cfg, hooks{})
}

// hooks connect a session to the forwards (Run). They are called with the
// session's lock held and must not block.
type hooks struct {
	// handler takes incoming streams (it dials, then confirm or reset);
	// nil: AcceptStream.
	handler func(st *Stream)
	// newSession: a new session with the far side began (its -R
	// listeners belong to the old one).
	newSession func()
	// listen: the far side asks us to listen for its -R; answer with
	// listenResult.
	listen func(id uint64, bind, target string)
}

func newSession(cfg Config, h hooks) (*Session, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		cfg:      cfg,
		log:      cfg.Logger,
		ctx:      ctx,
		cancel:   cancel,
		wake:     make(chan struct{}, 1),
		hooks:    h,
		streams:  make(map[uint64]*Stream),
		acceptCh: make(chan *Stream, acceptBacklog),
		infoCh:   make(chan struct{}),
		reqs:     make(map[uint64]Forward),
		window:   16,
	}
	s.byteTime = time.Duration(float64(time.Second) * 10 / float64(cfg.Baud))
	s.pace = paceMax
	s.paceByteTime = time.Duration(float64(s.byteTime) / s.pace)
	s.maxPayload = maxPayloadFor(cfg.Baud)
	s.payload = s.maxPayload
	s.keepAlive = max(time.Second, 2*s.frameTime(s.maxPayload))
	s.deadAfter = max(3*time.Second, 8*s.frameTime(s.maxPayload))
	s.rto = 200*time.Millisecond + 4*s.frameTime(s.maxPayload)
	s.rtoBase = s.rto
	// Frames start at a quarter of the largest and grow while the line is
	// clean, so that a noisy line is not first fed frames that never pass.
	s.byteErr = frameOverhead / float64(s.maxPayload*s.maxPayload/16)
	s.payload = min(max(s.maxPayload/4, 48), s.maxPayload)
	s.localID = newID()
	now := time.Now()
	s.since, s.lastRecv = now, now
	s.queueSessionStart()
	s.wg.Add(2)
	go s.lineLoop()
	go s.sendLoop()
	if cfg.Stats > 0 {
		s.wg.Add(1)
		go s.statsLoop()
	}
	return s, nil
}

// closeGrace bounds how long Close waits for the far side to take the
// resets of the streams.
const closeGrace = 2 * time.Second

// maxPayloadFor sizes DATA frames to take about 16 ms on the line, so that
// an interactive frame waits at most that long behind a bulk one, within
// 64..1024 bytes. Overhead per frame is about 17 bytes (header 6, CRC 4,
// COBS and delimiter 2-6, mux header 5): 1.7% at 1024.
func maxPayloadFor(baud int) int {
	p := baud / 10 * 16 / 1000
	return min(max(p, 64), 1024)
}

func newID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand does not fail on supported systems
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// frameTime is how long n body bytes take on the line, framing included.
func (s *Session) frameTime(n int) time.Duration {
	return time.Duration(n+headerLen+crcLen+msgOverhead+2+n/254) * s.byteTime
}

// tag binds DATA and ACK frames to the session: the low byte of both ids
// folded together, so that frames left in the line by an earlier session
// are dropped (255 in 256 of them; the handshake catches the rest).
func (s *Session) tag() uint8 {
	x := s.localID ^ s.peerID
	x ^= x >> 32
	x ^= x >> 16
	x ^= x >> 8
	return uint8(x)
}

// Close ends the session: streams fail, the line is closed. While the link
// is up the far side is told first: each stream is reset there, so that
// its clients fail at once rather than wait for the link to be declared
// down (or for --max-outage). Close waits for that, at most closeGrace.
func (s *Session) Close() error {
	s.mu.Lock()
	if s.closed || s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	if s.state == stateUp && len(s.streams) > 0 {
		for _, st := range s.streams {
			st.resetLocked(ResetGeneric, "far side is shutting down", ErrClosed)
		}
		s.kick()
		for deadline := time.Now().Add(closeGrace); time.Now().Before(deadline) && s.state == stateUp && (len(s.ctrl) > 0 || s.una != s.nextSeq); {
			s.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			s.mu.Lock()
		}
	}
	s.closed = true
	s.closeErr = ErrClosed
	s.resetAllLocked(ErrClosed, false)
	line := s.line
	s.mu.Unlock()
	s.cancel()
	if line != nil {
		line.Close()
	}
	s.wg.Wait()
	return nil
}

// Done is closed when the session is closed.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Stats returns the counters.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.SRTT = s.srtt
	st.Pace = s.pace
	st.Streams = len(s.streams)
	return st
}

// Up reports whether the link is up.
func (s *Session) Up() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == stateUp
}

func (s *Session) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// lineLoop opens the line, reads it until it fails, and opens it again,
// for as long as the session lives.
func (s *Session) lineLoop() {
	defer s.wg.Done()
	failing := false
	lost := false
	for s.ctx.Err() == nil {
		line, err := s.cfg.Open(s.ctx)
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			if !failing {
				s.log.Warn("tunnel: cannot open the device; retrying every second", "device", s.cfg.Device, "err", err)
				failing = true
			}
			s.sleep(time.Second)
			continue
		}
		if failing || lost {
			s.log.Info("tunnel: device open again", "device", s.cfg.Device)
		}
		failing = false
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			line.Close()
			return
		}
		s.line = line
		s.helloDue = s.state != stateUp
		s.mu.Unlock()
		s.kick()
		err = s.readLoop(line)
		s.mu.Lock()
		if s.line == line {
			s.line = nil
		}
		s.mu.Unlock()
		line.Close()
		if s.ctx.Err() != nil {
			return
		}
		s.log.Warn("tunnel: device lost; reopening it", "device", s.cfg.Device, "err", err)
		lost = true
		s.sleep(200 * time.Millisecond)
	}
}

func (s *Session) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// readLoop feeds the decoder until the line fails.
func (s *Session) readLoop(line Line) error {
	var d decoder
	buf := make([]byte, 4096)
	for {
		n, err := line.Read(buf)
		if n > 0 {
			s.mu.Lock()
			now := time.Now()
			d.feed(buf[:n], func(f *frame) { s.handleFrame(f, now) })
			s.stats.CRCErrors += d.crcErrors
			s.stats.Junk += d.junk
			d.crcErrors, d.junk = 0, 0
			s.mu.Unlock()
		}
		if err != nil {
			if errors.Is(err, io.EOF) && n > 0 {
				continue
			}
			return err
		}
		if n == 0 {
			// A line that reads nothing without an error (a pty
			// with no other end) must not spin.
			s.sleep(10 * time.Millisecond)
			if s.ctx.Err() != nil {
				return s.ctx.Err()
			}
		}
	}
}

// setState changes the link state and logs it. Callers hold mu.
func (s *Session) setState(st linkState, now time.Time, msg string, args ...any) {
	if s.state == st {
		return
	}
	prev, since := s.state, s.since
	s.state, s.since = st, now
	args = append(args, "device", s.cfg.Device)
	if st == stateUp && prev == stateDown {
		args = append(args, "outage", now.Sub(since).Round(time.Millisecond))
	}
	s.log.Info("tunnel: "+msg, args...)
	if st == stateUp {
		// Everything unacknowledged may have been lost while down.
		for _, f := range s.inflight {
			if f != nil && !f.acked {
				f.lost = true
			}
		}
		s.lastRecv = now
	}
	s.kick()
}

// handleFrame runs for each valid frame from the line. Callers hold mu.
func (s *Session) handleFrame(f *frame, now time.Time) {
	s.stats.FramesRecv++
	if f.typ == frameHello {
		s.handleHello(f.body, now)
		return
	}
	if s.peerID == 0 || f.tag != s.tag() {
		// Not our session: the far side restarted or we did; tell it
		// who we are.
		s.helloDue = true
		s.kick()
		return
	}
	s.lastRecv = now
	if s.state != stateUp {
		s.setState(stateUp, now, "link up", "session", fmt.Sprintf("%016x", s.localID), "far_session", fmt.Sprintf("%016x", s.peerID))
	}
	s.handleAck(f.ack, f.sack, now)
	if f.flags&flagPing != 0 {
		s.ackPending = true
	}
	if f.typ == frameData {
		s.handleData(f.seq, f.body)
	}
}

func (s *Session) handleHello(body []byte, now time.Time) {
	var h hello
	if !h.unmarshal(body) {
		return
	}
	if h.version != Version {
		if !s.versionWarned {
			s.versionWarned = true
			s.log.Error(fmt.Sprintf("tunnel: far side speaks tunnel protocol version %d, this side %d; run the same sertun version on both ends", h.version, Version))
		}
		return
	}
	if h.id == s.localID {
		if !s.echoWarned {
			s.echoWarned = true
			s.log.Error("tunnel: the line echoes our own frames back (a loopback plug, or echo on): no far side to talk to", "device", s.cfg.Device)
		}
		return
	}
	s.lastRecv = now
	if h.id != s.peerID {
		if s.peerID != 0 {
			n := len(s.streams)
			s.log.Warn("tunnel: far side restarted, or ended its session after --max-outage; starting a new session", "far_session", fmt.Sprintf("%016x", h.id), "streams_reset", n)
			s.resetAllLocked(ErrPeerRestarted, true)
		} else {
			s.resetLinkLocked()
		}
		s.peerID = h.id
		if s.state == stateUp {
			s.state = stateConnecting
		}
	}
	if int(h.baud) != s.cfg.Baud && !s.baudWarned {
		s.baudWarned = true
		s.log.Warn(fmt.Sprintf("tunnel: far side runs at --baud %d, this side at %d; give both ends the line's real rate", h.baud, s.cfg.Baud))
	}
	if h.peer == s.localID && s.state != stateUp {
		s.setState(stateUp, now, "link up", "session", fmt.Sprintf("%016x", s.localID), "far_session", fmt.Sprintf("%016x", s.peerID))
	}
	if !h.up || h.peer != s.localID {
		s.helloDue = true
		s.kick()
	}
}

// resetLinkLocked starts the sequence spaces over, for a new session.
func (s *Session) resetLinkLocked() {
	s.nextSeq, s.una, s.rcvNext = 0, 0, 0
	s.inflight = [maxWindow]*outFrame{}
	s.ooo = [maxWindow][]byte{}
	s.ackPending = false
	s.maxAcked, s.order = 0, 0
}

// resetAllLocked fails every stream with err and, if newSession, starts a
// new session: link state cleared, session messages queued again.
//
// Streams we opened that the far side has not answered yet carry no data
// either way, so they survive into the new session: their OPEN is sent
// again (a connection made while the far side restarts is not lost).
func (s *Session) resetAllLocked(err error, newSession bool) {
	s.resetLocked(err, newSession, func(*Stream) bool { return true })
}

// resetLocked is resetAllLocked where young says which unanswered opens
// may wait for the new session.
func (s *Session) resetLocked(err error, newSession bool, young func(*Stream) bool) {
	var keep []*Stream
	for _, st := range s.streams {
		if newSession && st.key&1 == 1 && !st.opened && st.err == nil && young(st) {
			keep = append(keep, st)
			continue
		}
		st.failLocked(err)
	}
	clear(s.streams)
	s.ctrl, s.winq, s.ready = nil, nil, nil
	for _, st := range keep {
		st.inReady = false
	}
	if !newSession {
		return
	}
	s.resetLinkLocked()
	s.farInfo = nil
	select {
	case <-s.infoCh:
		s.infoCh = make(chan struct{})
	default:
	}
	s.queueSessionStart()
	for _, st := range keep {
		s.streams[st.key] = st
		st.queueOpenLocked()
	}
	if s.hooks.newSession != nil {
		s.hooks.newSession()
	}
}

// queueSessionStart queues what each session begins with: our permit list
// and our -R requests.
func (s *Session) queueSessionStart() {
	s.ctrl = append(s.ctrl, infoMsg(s.cfg.Permit))
	clear(s.reqs)
	for _, fw := range s.cfg.Remote {
		s.nextReq++
		s.reqs[s.nextReq] = fw
		b := appendStrings(nil, []string{fw.Bind, fw.Target})
		s.ctrl = append(s.ctrl, appendMsg(nil, msgListen, s.nextReq, b))
	}
}

// handleAck takes the cumulative ack and SACK bitmap of a frame.
func (s *Session) handleAck(ack uint16, sack uint64, now time.Time) {
	if d := int16(ack - s.una); d < 0 || int16(s.nextSeq-ack) < 0 {
		return // old or bogus
	}
	var sample *outFrame
	take := func(f *outFrame) {
		s.outcome(f, false)
		// Only a frame sent once says which transmission arrived: an
		// ack for a frame sent again may be for its first copy, and
		// taking the new one's order would declare lost everything
		// sent in between (Karn's ambiguity, as RACK handles it).
		if f.tries == 1 && f.order > s.maxAcked {
			s.maxAcked = f.order
			sample = f
		}
	}
	for s.una != ack {
		i := s.una % maxWindow
		if f := s.inflight[i]; f != nil {
			if !f.acked {
				take(f)
			}
			s.inflight[i] = nil
		}
		s.una++
	}
	for b := 0; sack != 0 && b < maxWindow; b++ {
		if sack&(1<<b) == 0 {
			continue
		}
		seq := ack + 1 + uint16(b)
		if int16(s.nextSeq-seq) <= 0 {
			break
		}
		if f := s.inflight[seq%maxWindow]; f != nil && f.seq == seq && !f.acked {
			f.acked, f.lost = true, false // arrived after all: not sent again
			take(f)
		}
	}
	if sample != nil {
		s.rttSample(now.Sub(sample.sentAt), now)
		sample.sentAt = time.Time{}
	}
	// The line delivers in order: a frame sent before one that arrived,
	// and not acked, was lost. Send it again now, without waiting for the
	// timer (fast retransmit).
	for seq := s.una; seq != s.nextSeq; seq++ {
		if f := s.inflight[seq%maxWindow]; f != nil && !f.acked && !f.lost && f.order < s.maxAcked {
			f.lost = true
			s.outcome(f, true)
		}
	}
	s.kick()
}

// adaptPace slows our pacing when the round trip shows a queue building
// up in front of the line, and speeds it back up to paceMax when the queue
// is gone. A queue builds when the line is slower than --baud says: a UART
// clock a little slow, a USB adapter with gaps between bytes, a relay that
// is short of CPU. Unchecked, it would grow to the device's buffer (4 KiB
// and more: a third of a second at 115200) and every keystroke would wait
// behind it. Beyond the base round trip (the path itself), a round trip
// takes at most our frame, the far side's frame in progress and its frame
// with the ack; more than that, with a margin of a frame and 20 ms for
// scheduling, is a queue. Once per round trip: down 2% (5% past twice the limit), up 1%,
// between 70% and paceMax.
func (s *Session) adaptPace(now time.Time) {
	if now.Sub(s.paceAt) < s.srtt {
		return
	}
	s.paceAt = now
	queue := s.srtt - s.baseRTT
	limit := 4*s.frameTime(s.maxPayload) + 20*time.Millisecond
	switch {
	case queue > 2*limit:
		s.pace = max(s.pace*0.95, 0.7)
	case queue > limit:
		s.pace = max(s.pace*0.98, 0.7)
	case queue < limit*3/4:
		s.pace = min(s.pace*1.01, paceMax)
	}
	s.paceByteTime = time.Duration(float64(s.byteTime) / s.pace)
}

// outcome records that a frame arrived or was lost, and every 16 frames
// adapts the frame size to the error rate: from the frame loss rate f at
// mean frame size L the chance p that a byte is hit is 1-(1-f)^(1/L), and
// goodput L/(L+h)·(1-p)^(L+h), with h bytes of overhead per frame, is
// highest near L = sqrt(h/p). On a clean line that is the largest frame;
// at BER 1e-4 about 150 bytes; at 1e-3 about 50.
func (s *Session) outcome(f *outFrame, lost bool) {
	s.outcomes++
	s.outBytes += len(f.body) + frameOverhead
	if lost {
		s.lostN++
	}
	if s.outcomes < 16 {
		return
	}
	if s.lostN == 0 {
		// Down to where the largest frame is best, and no further: a
		// long clean run would otherwise take the estimate to where the
		// size below overflows an int (frames fell to the smallest),
		// and a line that turns noisy would wait many batches before
		// its frames shrink.
		s.byteErr = max(s.byteErr/4, frameOverhead/float64(4*s.maxPayload*s.maxPayload))
	} else {
		fl := float64(s.lostN) / float64(s.outcomes)
		meanLen := float64(s.outBytes) / float64(s.outcomes)
		p := 1 - math.Pow(1-min(fl, 0.99), 1/meanLen)
		s.byteErr = (s.byteErr + p) / 2
	}
	s.outcomes, s.lostN, s.outBytes = 0, 0, 0
	size := s.maxPayload
	if s.byteErr > 0 {
		size = int(min(math.Sqrt(frameOverhead/s.byteErr), float64(s.maxPayload)))
	}
	s.payload = min(max(size, 48), s.maxPayload)
}

// frameOverhead is the line bytes a DATA frame adds to its messages.
const frameOverhead = headerLen + crcLen + 2 + msgOverhead

// rttSample updates SRTT, RTTVAR and RTO as RFC 6298 does, with the clock
// granularity G replaced by two frame times: an ack can wait behind one
// full frame going the other way.
func (s *Session) rttSample(r time.Duration, now time.Time) {
	// The base round trip (a line over a network, an rfc2217:// device,
	// has one without any queue) is the least sample of the last 10 to
	// 20 seconds: two windows, so that it can rise when the path changes.
	if now.Sub(s.minAt) > 10*time.Second {
		s.minPrev, s.minCur, s.minAt = s.minCur, r, now
	}
	s.minCur = min(s.minCur, r)
	s.baseRTT = s.minCur
	if s.minPrev > 0 {
		s.baseRTT = min(s.minCur, s.minPrev)
	}
	if s.srtt == 0 {
		s.srtt, s.rttvar = r, r/2
	} else {
		d := s.srtt - r
		if d < 0 {
			d = -d
		}
		s.rttvar = (3*s.rttvar + d) / 4
		s.srtt = (7*s.srtt + r) / 8
	}
	s.rto = s.srtt + max(4*s.rttvar, 2*s.frameTime(s.maxPayload))
	s.rto = min(max(s.rto, 3*s.frameTime(s.maxPayload)+10*time.Millisecond), 3*time.Second)
	s.rtoBase = s.rto
	s.adaptPace(now)
	// Window: twice the bandwidth-delay product in frames, and a margin.
	bdp := float64(s.srtt) / float64(s.frameTime(s.maxPayload))
	s.window = min(max(int(math.Ceil(2*bdp))+4, 8), maxWindow)
}

// handleData takes a DATA frame's sequence number and body.
func (s *Session) handleData(seq uint16, body []byte) {
	s.ackPending = true
	d := int16(seq - s.rcvNext)
	if d < 0 || d >= maxWindow {
		return // a duplicate (our ack was lost) or out of the window
	}
	if d > 0 {
		if s.ooo[seq%maxWindow] == nil {
			s.ooo[seq%maxWindow] = append([]byte{}, body...)
		}
		return
	}
	s.deliver(body)
	s.rcvNext++
	for {
		i := s.rcvNext % maxWindow
		b := s.ooo[i]
		if b == nil {
			break
		}
		s.ooo[i] = nil
		s.deliver(b)
		s.rcvNext++
	}
}

// sackBits is the SACK bitmap for what we hold out of order.
func (s *Session) sackBits() uint64 {
	var bits uint64
	for b := 0; b < maxWindow-1; b++ {
		if s.ooo[(s.rcvNext+1+uint16(b))%maxWindow] != nil {
			bits |= 1 << b
		}
	}
	return bits
}

// sendLoop writes frames: it paces them at the line rate, so that the
// device's buffer stays short (an interactive frame is not queued behind
// seconds of bulk data in the kernel), and decides what goes next.
func (s *Session) sendLoop() {
	defer s.wg.Done()
	var (
		lineFree time.Time // when what we wrote has left the line
		out      []byte
		scratch  []byte
		timer    = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	// lead: how far ahead of the line we write, so it never idles
	// between frames.
	lead := max(3*time.Millisecond, 16*s.byteTime)
	for {
		now := time.Now()
		var wait time.Duration
		if d := lineFree.Sub(now); d > lead {
			wait = d - lead
		} else {
			s.mu.Lock()
			var f *frame
			var line Line
			f, wait, line = s.nextFrame(now)
			if f != nil {
				out = out[:0]
				if !lineFree.After(now) {
					out = append(out, 0) // the line was idle: resync the receiver
				}
				out, scratch = appendFrame(out, scratch, f)
				s.stats.FramesSent++
				s.stats.LineBytesSent += uint64(len(out))
				s.lastSend = now
			}
			bt := s.paceByteTime
			s.mu.Unlock()
			if f != nil {
				s.write(line, out)
				lineFree = later(lineFree, now).Add(time.Duration(len(out)) * bt)
				continue
			}
		}
		timer.Reset(wait)
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
}

// write puts one encoded frame on the line. A failed write is not
// retried here: the frame is retransmitted like any lost frame.
func (s *Session) write(line Line, b []byte) {
	if wd, ok := line.(interface{ SetWriteDeadline(time.Time) error }); ok {
		wd.SetWriteDeadline(time.Now().Add(2*time.Second + time.Duration(len(b))*s.byteTime))
	}
	if _, err := line.Write(b); err != nil && !errors.Is(err, net.ErrClosed) {
		if !isTimeout(err) {
			// The device is gone: the read loop sees it too and
			// reopens.
			line.Close()
		}
		s.log.Debug("tunnel: write to the line failed", "err", err)
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// nextFrame decides what to send now: the frame, or how long to wait.
// Callers hold mu.
func (s *Session) nextFrame(now time.Time) (f *frame, wait time.Duration, line Line) {
	wait = time.Hour
	line = s.line
	if s.closed {
		return nil, wait, nil
	}
	// Timers that change the state. They run while the device is out too
	// (an unplugged adapter): --max-outage counts then as well.
	if s.state == stateUp && now.Sub(s.lastRecv) > s.deadAfter {
		s.setState(stateDown, now, "link down: nothing from the far side; streams wait", "silent_for", now.Sub(s.lastRecv).Round(time.Millisecond))
	}
	if s.state != stateUp {
		// Streams that have waited longer than --max-outage end; so
		// does the session, since the far side ends its own. Opens made
		// during the outage still wait for the next session.
		young := func(st *Stream) bool { return now.Sub(st.born) < s.cfg.MaxOutage }
		if now.Sub(s.since) > s.cfg.MaxOutage && s.anyLocked(func(st *Stream) bool { return !young(st) }) {
			s.log.Warn("tunnel: link down longer than --max-outage; closing the streams and starting a new session",
				"max_outage", s.cfg.MaxOutage, "streams", len(s.streams))
			s.localID = newID()
			s.resetLocked(ErrOutage, true, young)
			s.since = now
		}
		if line == nil {
			return nil, time.Second, nil
		}
		// Probe with HELLO: faster while connecting, and at once when
		// asked.
		every := time.Second
		if s.state == stateConnecting {
			every = 500 * time.Millisecond
		}
		gap := now.Sub(s.lastHello)
		if (s.helloDue && gap >= 50*time.Millisecond) || gap >= every {
			return s.helloFrame(now), 0, line
		}
		next := every - gap
		if s.helloDue {
			next = 50*time.Millisecond - gap
		}
		return nil, min(next, time.Second), line
	}
	if line == nil {
		// Up, with the device out: the link goes down once the far
		// side has been silent for deadAfter.
		return nil, max(s.deadAfter-now.Sub(s.lastRecv), time.Millisecond), nil
	}
	if s.helloDue && now.Sub(s.lastHello) >= 50*time.Millisecond {
		return s.helloFrame(now), 0, line
	}
	// Retransmission timer: one backoff per expiry.
	expired := false
	for seq := s.una; seq != s.nextSeq; seq++ {
		fr := s.inflight[seq%maxWindow]
		if fr == nil || fr.acked || fr.lost {
			continue
		}
		if due := fr.sentAt.Add(s.rto); !now.Before(due) {
			fr.lost = true
			expired = true
			s.outcome(fr, true)
		} else {
			wait = min(wait, due.Sub(now))
		}
	}
	if expired {
		// Back off (Karn), but only so far: a serial line has no
		// congestion to relieve, and an outage is handled by the
		// down state, not by the timer.
		s.rto = min(2*s.rto, max(4*s.rtoBase, 250*time.Millisecond), 3*time.Second)
	}
	// 1. Retransmissions, oldest first.
	for seq := s.una; seq != s.nextSeq; seq++ {
		fr := s.inflight[seq%maxWindow]
		if fr == nil || !fr.lost {
			continue
		}
		fr.lost = false
		fr.tries++
		fr.sentAt = now
		s.order++
		fr.order = s.order
		s.stats.Retransmits++
		return s.dataFrame(fr), 0, line
	}
	// 2. New data, if the window has room.
	if int(s.nextSeq-s.una) < s.window {
		if body := s.fill(); len(body) > 0 {
			s.order++
			fr := &outFrame{seq: s.nextSeq, body: body, sentAt: now, order: s.order, tries: 1}
			s.inflight[fr.seq%maxWindow] = fr
			s.nextSeq++
			wait = min(wait, s.rto)
			return s.dataFrame(fr), 0, line
		}
	}
	// 3. A bare ack, or a keepalive ping.
	if s.ackPending {
		return s.ackFrame(0), 0, line
	}
	idle := now.Sub(s.lastSend)
	quiet := now.Sub(s.lastRecv)
	if idle >= s.keepAlive && quiet >= s.keepAlive/2 {
		return s.ackFrame(flagPing), 0, line
	}
	wait = min(wait, s.keepAlive-idle, s.deadAfter-quiet+time.Millisecond)
	return nil, max(wait, time.Millisecond), line
}

func (s *Session) anyLocked(f func(*Stream) bool) bool {
	for _, st := range s.streams {
		if f(st) {
			return true
		}
	}
	return false
}

func (s *Session) helloFrame(now time.Time) *frame {
	s.helloDue = false
	s.lastHello = now
	h := hello{version: Version, up: s.state == stateUp, id: s.localID, peer: s.peerID, baud: uint32(s.cfg.Baud)}
	return &frame{typ: frameHello, body: h.marshal()}
}

func (s *Session) dataFrame(fr *outFrame) *frame {
	s.ackPending = false
	return &frame{typ: frameData, tag: s.tag(), seq: fr.seq, ack: s.rcvNext, sack: s.sackBits(), body: fr.body}
}

func (s *Session) ackFrame(flags uint8) *frame {
	s.ackPending = false
	return &frame{typ: frameAck, flags: flags, tag: s.tag(), seq: s.nextSeq, ack: s.rcvNext, sack: s.sackBits()}
}

// statsLoop logs the counters every cfg.Stats.
func (s *Session) statsLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.Stats)
	defer t.Stop()
	prev := s.Stats()
	prevT := time.Now()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			cur := s.Stats()
			sec := now.Sub(prevT).Seconds()
			s.mu.Lock()
			state := s.state
			s.mu.Unlock()
			s.log.Info("tunnel: stats",
				"state", state,
				"tx_Bps", int(float64(cur.BytesSent-prev.BytesSent)/sec),
				"rx_Bps", int(float64(cur.BytesReceived-prev.BytesReceived)/sec),
				"line_tx_Bps", int(float64(cur.LineBytesSent-prev.LineBytesSent)/sec),
				"retransmits", cur.Retransmits-prev.Retransmits,
				"crc_errors", cur.CRCErrors-prev.CRCErrors,
				"streams", cur.Streams,
				"srtt", cur.SRTT.Round(time.Millisecond),
				"pace", fmt.Sprintf("%.3f", cur.Pace))
			prev, prevT = cur, now
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
