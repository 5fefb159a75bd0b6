package rfc2217

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sertun/sertun/internal/fdio"
	"github.com/sertun/sertun/serialdev"
)

// ErrNotRFC2217 is returned (wrapped, with the address and the reason) by
// Dial when the peer does not agree to COM-PORT-OPTION: it refused it, or it
// never answered (a raw TCP port, a plain telnet server).
var ErrNotRFC2217 = errors.New("rfc2217: peer does not speak RFC 2217")

// ClientConfig configures Dial. The zero value gives the defaults.
type ClientConfig struct {
	Timeout time.Duration // wait for each answer (0 => 3s)
	Logger  *slog.Logger  // nil => slog.Default()
}

// Sizes of the client's receive path. The reader goroutine reads the
// socket in clientReadSize pieces into a buffer that Read empties. While
// rxRest bytes wait there, the reader rests (up to rxRestMax, or until
// half of them are taken): the server's data then gathers in the socket
// and comes in a few large reads instead of one per segment, which halves
// the client's work when the consumer (a program's pty) is the slower
// side. Above highWater the client asks the server to pause
// (FLOWCONTROL-SUSPEND) and below lowWater to go on; at hardCap it stops
// reading the socket, so TCP flow control holds the server back even when
// it ignores SUSPEND. Nothing is ever dropped.
const (
	clientReadSize    = 64 << 10
	clientWriteChunk  = 64 << 10
	rxRest            = 64 << 10
	rxRestMax         = 50 * time.Millisecond // answers and notifications still get in
	rxHighWater       = 256 << 10
	rxLowWater        = 64 << 10
	rxHardCap         = 1 << 20
	suspendQuiet      = 100 * time.Millisecond // no data sent for this long before a SUSPEND
	maxOwedReplies    = 64 << 10               // negotiation replies owed but not yet sent
	clientDialTimeout = 10 * time.Second
	defaultAnswerWait = 3 * time.Second
	clientLineMask    = LineBreak | LineFraming | LineParity | LineOverrun
)

// answerKind groups server answers by what they report, so that an answer
// finds the requests waiting for it whatever order the server answers in
// and whoever asked (ser2net sends every answer to every client).
type answerKind uint8

const (
	ansBaud answerKind = iota
	ansDataSize
	ansParity
	ansStop
	ansOutFlow
	ansInFlow
	ansBreak
	ansDTR
	ansRTS
	ansPurge
	numAnswerKinds
)

func (k answerKind) String() string {
	switch k {
	case ansBaud:
		return "SET-BAUDRATE"
	case ansDataSize:
		return "SET-DATASIZE"
	case ansParity:
		return "SET-PARITY"
	case ansStop:
		return "SET-STOPSIZE"
	case ansOutFlow:
		return "SET-CONTROL flow control"
	case ansInFlow:
		return "SET-CONTROL inbound flow control"
	case ansBreak:
		return "SET-CONTROL BREAK"
	case ansDTR:
		return "SET-CONTROL DTR"
	case ansRTS:
		return "SET-CONTROL RTS"
	case ansPurge:
		return "PURGE-DATA"
	}
	return fmt.Sprintf("answerKind(%d)", uint8(k))
}

// partial says whether servers that implement only part of RFC 2217 are
// known to leave k unanswered: pyserial's server (and esptool's, made from
// it) ignores inbound flow control and the DTR, RTS and BREAK queries;
// hub4com and ser2net without modem lines leave DTR and RTS unanswered.
// Baud rate, format and outbound flow control every server answers.
func (k answerKind) partial() bool {
	switch k {
	case ansInFlow, ansBreak, ansDTR, ansRTS:
		return true
	}
	return false
}

// Client is a serial port on an RFC 2217 server. It implements
// serialdev.Port; all methods are safe for concurrent use.
//
// One goroutine (readLoop) owns the connection's read side and the telnet
// decoder: it appends data to the receive buffer that Read (or WriteTo)
// empties and applies the server's answers and notifications to the
// client's state. It never waits on anything but the socket: it writes
// only to a WriteTo sink that takes data without waiting, never to the
// socket, so a server that stops reading cannot stall the data coming from
// it; what the reader owes the server (negotiation replies,
// SUSPEND/RESUME) goes out through sendLoop. Writers (Write, control
// requests, sendLoop) share wmu.
type Client struct {
	conn    net.Conn
	addr    string
	timeout time.Duration
	log     *slog.Logger

	tn   Codec    // owned by the reader once it runs
	sock *fdio.FD // conn's data path

	wmu       sync.Mutex
	wbuf      []byte      // escaped data, under wmu
	owe       []byte      // under wmu: the rest of what a write cut short by the deadline had begun (a command, an escape); it goes out first
	owing     atomic.Bool // owe is not empty
	binaryOut atomic.Bool // our BINARY side is on: no CR NUL

	done       chan struct{} // closed by Close
	readerDone chan struct{} // closed when readLoop exits
	negotiated chan struct{} // closed when COM-PORT-OPTION settled
	rxReady    chan struct{} // data or an error for Read (buffer of one)
	rxSpace    chan struct{} // room in the receive buffer (buffer of one)
	kick       chan struct{} // work for sendLoop (buffer of one)
	status     chan struct{} // StatusChanged (buffer of one)
	closeOnce  sync.Once
	wg         sync.WaitGroup
	rdl, wdl   waitDeadline

	mu         sync.Mutex
	closed     bool
	rx         []byte // received data is rx[rxOff:]
	rxOff      int
	rxGen      uint64         // counts purges of rx: a delivery that spans one takes nothing off
	sink       TryWriter      // WriteTo's writer, when it can take data without waiting
	sinkBusy   bool           // data is on its way to WriteTo's writer; the rest waits
	resting    bool           // the reader waits for rx to go below rxRest/2
	restMax    time.Duration  // how long it waits at most: rxRestMax
	sunk       int64          // bytes the reader gave the sink, for WriteTo's count
	delivering sync.WaitGroup // a delivery to the sink is under way
	rxErr      error          // why the connection ended; Read returns it after the data
	comport    bool           // COM-PORT-OPTION agreed
	comportNo  bool           // COM-PORT-OPTION refused
	ownCmds    int            // client commands the server sent: our own, echoed back
	negDone    bool           // negotiated is closed
	replies    []byte
	settings   serialdev.Settings
	haveModem  bool
	st         serialdev.Status
	waiters    [numAnswerKinds][]chan struct{}
	silent     [numAnswerKinds]bool // timed out before: do not wait again
	purgeRx    int                  // receive purges waiting for their answer
	suspended  chan struct{}        // non-nil while the server suspended us; closed on RESUME
	wantSusp   bool                 // receive buffer above high water
	sentSusp   bool                 // we sent SUSPEND and no RESUME since
	lastData   time.Time            // when Write last sent data
	suspBroken bool                 // the server misreads SUSPEND: never send it again
	probing    bool                 // SUSPEND sent, its fence not yet answered
	suspOK     bool                 // a SUSPEND passed its fence: the server reads it right
	probeFlow  serialdev.Flow       // outbound flow control when we sent SUSPEND
	restore    bool                 // sendLoop re-sends probeFlow
}

var _ serialdev.Port = (*Client)(nil)

// Dial connects to the RFC 2217 server at addr (host:port), negotiates
// COM-PORT-OPTION, BINARY both ways and SGA, and reads the port's current
// settings. A peer that refuses COM-PORT-OPTION or does not answer within
// cfg.Timeout gives an error wrapping ErrNotRFC2217. ctx bounds the
// connection and the negotiation, not the Client's life.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Client, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("rfc2217: bad address %q: want host:port", addr)
	}
	d := net.Dialer{Timeout: clientDialTimeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if connRefused(err) {
			return nil, fmt.Errorf("rfc2217: %s refused the connection (is the server running and listening there?): %w", addr, err)
		}
		return nil, fmt.Errorf("rfc2217: cannot connect to %s: %w", addr, err)
	}
	return newClient(ctx, conn, addr, cfg)
}

// newClient runs the client side of the handshake on conn and returns the
// Client, or closes conn and returns why it failed.
func newClient(ctx context.Context, conn net.Conn, addr string, cfg ClientConfig) (*Client, error) {
	c := &Client{
		conn:       conn,
		sock:       fdio.New(conn, conn),
		addr:       addr,
		timeout:    cfg.Timeout,
		log:        cfg.Logger,
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		negotiated: make(chan struct{}),
		rxReady:    make(chan struct{}, 1),
		rxSpace:    make(chan struct{}, 1),
		restMax:    rxRestMax,
		kick:       make(chan struct{}, 1),
		status:     make(chan struct{}, 1),
		rdl:        makeWaitDeadline(),
		wdl:        makeWaitDeadline(),
		rx:         make([]byte, 0, clientReadSize),
		settings:   serialdev.DefaultSettings(),
	}
	if c.timeout <= 0 {
		c.timeout = defaultAnswerWait
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("server", addr)

	// ECHO stays refused: the server must not echo our data back.
	c.tn.Support(OptBinary, true, true, false)
	c.tn.Support(OptSGA, true, true, false)
	c.tn.Support(OptComPort, true, true, true)
	c.tn.Request(OptComPort, true, true)
	c.tn.Request(OptBinary, true, true)
	c.tn.Request(OptBinary, false, true)
	c.tn.Request(OptSGA, true, true)
	c.tn.Request(OptSGA, false, true)
	hello := c.tn.AppendReplies(nil)
	c.binaryOut.Store(c.tn.Binary(true))

	c.wg.Add(2)
	go c.readLoop()
	go c.sendLoop()

	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	err := c.handshake(ctx, hello)
	if !stop() && err == nil {
		err = ctx.Err() // the connection was closed under us
	}
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("rfc2217: connecting to %s: %w", addr, ctx.Err())
		}
		return nil, err
	}
	return c, nil
}

func (c *Client) handshake(ctx context.Context, hello []byte) error {
	if err := c.writeCtl(hello); err != nil {
		return err
	}
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	select {
	case <-c.negotiated:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.readerDone:
	}
	c.mu.Lock()
	ok, refused, rxErr, pre := c.comport, c.comportNo, c.rxErr, c.rx[c.rxOff:]
	var text string
	if rxErr != nil && len(pre) > 0 {
		// Perhaps a line from the server saying why (sertun: "port busy: ...").
		text = string(pre[:min(len(pre), 200)])
	}
	c.mu.Unlock()
	switch {
	case ok:
	case refused:
		return &notRFC2217Error{addr: c.addr, why: "it refused COM-PORT-OPTION"}
	case rxErr != nil:
		cause := errors.Unwrap(rxErr)
		if cause == nil {
			cause = rxErr
		}
		if text = strings.TrimSpace(text); text != "" {
			return fmt.Errorf("rfc2217: %s closed the connection during negotiation, saying %q: %w", c.addr, text, cause)
		}
		return fmt.Errorf("rfc2217: %s closed the connection during negotiation: %w", c.addr, cause)
	default:
		return &notRFC2217Error{addr: c.addr, why: fmt.Sprintf("no answer to WILL COM-PORT-OPTION in %v", c.timeout)}
	}

	// Ask for line errors and every modem line change, then read the
	// settings in force (value 0 asks without changing anything). Servers
	// answer in order, so by the time the answers are in, BINARY has
	// settled too, and so have the answers to the DTR and RTS queries,
	// which are not waited for (hub4com leaves them unanswered).
	kinds := []answerKind{ansBaud, ansDataSize, ansParity, ansStop, ansOutFlow, ansInFlow}
	err := c.exchange("read settings", []Command{
		&SetLinestateMask{Mask: clientLineMask},
		&SetModemstateMask{Mask: 255},
		&SetBaudRate{},
		&SetDataSize{},
		&SetParity{},
		&SetStopSize{},
		&SetControl{Value: CtlDTRAsk},
		&SetControl{Value: CtlRTSAsk},
		&SetControl{Value: CtlFlowAsk},
		&SetControl{Value: CtlInFlowAsk},
	}, kinds, nil)
	if err != nil {
		return err
	}
	c.mu.Lock()
	s, echoed := c.settings, c.ownCmds > 0
	for _, k := range kinds {
		echoed = echoed && c.silent[k]
	}
	c.mu.Unlock()
	if echoed {
		// An echo agrees to every option it is offered, since it offers
		// the same back, and answers nothing.
		return &notRFC2217Error{addr: c.addr, why: "it sent our own commands back and answered none: an echo server, or a raw port to a looped-back device?"}
	}
	c.log.Debug("rfc2217: connected", "settings", s.String(), "binary", c.binaryOut.Load())
	return nil
}

type notRFC2217Error struct{ addr, why string }

func (e *notRFC2217Error) Error() string {
	return "rfc2217: " + e.addr + " does not speak RFC 2217 (" + e.why + ")"
}

func (e *notRFC2217Error) Unwrap() error { return ErrNotRFC2217 }

// portClosedError is what every method returns after Close.
type portClosedError struct{ op string }

func (e portClosedError) Error() string { return "rfc2217: " + e.op + " on closed port" }

func (portClosedError) Is(target error) bool {
	return target == os.ErrClosed || target == net.ErrClosed
}

// readLoop owns the read side of the connection.
func (c *Client) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, clientReadSize)
	rest := time.NewTimer(time.Hour)
	rest.Stop()
	for {
		c.mu.Lock()
		for len(c.rx)-c.rxOff >= rxHardCap && !c.closed {
			c.mu.Unlock()
			select {
			case <-c.rxSpace:
			case <-c.done:
			}
			c.mu.Lock()
		}
		c.resting = len(c.rx)-c.rxOff >= rxRest && !c.closed
		resting, restMax := c.resting, c.restMax
		c.mu.Unlock()
		if resting {
			rest.Reset(restMax)
			select {
			case <-c.rxSpace:
			case <-rest.C:
			case <-c.done:
			}
			rest.Stop()
			c.mu.Lock()
			c.resting = false
			c.mu.Unlock()
		}
		n, err := c.sock.Read(buf)
		if n > 0 {
			c.process(buf[:n])
		}
		if err != nil {
			c.fail(err)
			return
		}
	}
}

// process decodes one piece of the server's bytes.
func (c *Client) process(in []byte) {
	c.mu.Lock()
	got := false
	for len(in) > 0 {
		n, data, ev := c.tn.Decode(in)
		if len(data) > 0 {
			c.appendRx(data)
			got = true
		}
		if ev.Kind != EventNone {
			c.event(ev)
		}
		in = in[n:]
	}
	kick := false
	if c.tn.HasReplies() {
		c.replies = c.tn.AppendReplies(c.replies)
		kick = true
	}
	switch buffered := len(c.rx) - c.rxOff; {
	case !c.wantSusp && buffered >= rxHighWater:
		c.wantSusp = true
		kick = true
	case c.wantSusp && buffered <= rxLowWater:
		// A purge answer emptied the buffer.
		c.wantSusp = false
		kick = true
	}
	if len(c.replies) > maxOwedReplies {
		// A peer that keeps negotiating and never reads: it is broken
		// or hostile, and the replies would grow without bound.
		c.rxErr = fmt.Errorf("rfc2217: %s floods option negotiation without reading our replies (%d bytes owed); connection dropped", c.addr, len(c.replies))
		c.mu.Unlock()
		c.log.Warn("rfc2217: server floods option negotiation without reading; dropping the connection", "owed", maxOwedReplies)
		c.conn.Close()
		return
	}
	var direct []byte
	var gen uint64
	sink := c.sink
	if got && sink != nil && !c.sinkBusy {
		direct, gen, c.sinkBusy = c.rx[c.rxOff:], c.rxGen, true
		c.delivering.Add(1)
	}
	c.mu.Unlock()
	if direct != nil {
		got = c.deliver(sink, direct, gen)
	}
	if got {
		wake(c.rxReady)
	}
	if kick {
		wake(c.kick)
	}
}

// deliver hands p, the head of rx, straight to WriteTo's writer, as much
// as it takes without waiting: one goroutine hand-off less per read of the
// socket. Only the reader appends to rx, so p stays valid; a purge
// meanwhile (gen) only empties it. It reports whether data is left for
// WriteTo.
func (c *Client) deliver(sink TryWriter, p []byte, gen uint64) (left bool) {
	n := sink.TryWrite(p)
	c.mu.Lock()
	c.sinkBusy = false
	c.sunk += int64(n)
	var resume, space bool
	if c.rxGen == gen {
		resume, space = c.took(n)
	}
	left = len(c.rx) > c.rxOff
	c.mu.Unlock()
	c.delivering.Done() // after sunk: WriteTo counts it
	c.tookWake(resume, space)
	return left
}

// took removes n delivered bytes from the head of rx and says whether the
// server may send again (RESUME) and the reader read again; c.mu held.
func (c *Client) took(n int) (resume, space bool) {
	before := len(c.rx) - c.rxOff
	buffered := before - n
	c.rxOff += n
	if buffered == 0 {
		c.rx, c.rxOff = c.rx[:0], 0
	}
	resume = c.wantSusp && buffered <= rxLowWater
	if resume {
		c.wantSusp = false
	}
	space = before >= rxHardCap && buffered < rxHardCap
	if c.resting && buffered < rxRest/2 {
		c.resting, space = false, true
	}
	return resume, space
}

func (c *Client) tookWake(resume, space bool) {
	if resume {
		wake(c.kick)
	}
	if space {
		wake(c.rxSpace)
	}
}

// appendRx adds data to the receive buffer; c.mu held.
func (c *Client) appendRx(data []byte) {
	if c.rxOff > 0 && len(c.rx)+len(data) > cap(c.rx) {
		n := copy(c.rx, c.rx[c.rxOff:])
		c.rx, c.rxOff = c.rx[:n], 0
	}
	c.rx = append(c.rx, data...)
}

// event applies one telnet event; c.mu held.
func (c *Client) event(ev Event) {
	switch ev.Kind {
	case EventOption:
		switch {
		case ev.Opt == OptComPort && ev.Local:
			if ev.On {
				c.comport = true
			} else if !c.comport {
				c.comportNo = true
			}
			if !c.negDone {
				c.negDone = true
				close(c.negotiated)
			}
		case ev.Opt == OptBinary && ev.Local:
			c.binaryOut.Store(c.tn.Binary(true))
		}
	case EventSubneg:
		if ev.Opt != OptComPort {
			return
		}
		cmd, answer, err := DecodeCommand(ev.Data)
		if err != nil {
			c.log.Debug("rfc2217: ignoring a COM-PORT-OPTION message from the server", "err", err)
			return
		}
		if !answer {
			c.ownCmds++
			c.log.Debug("rfc2217: ignoring a client command from the server", "code", ev.Data[0])
			return
		}
		c.answer(cmd)
	}
}

// answer applies a server message to the state and wakes whoever waits
// for one of its kind; c.mu held. Values the client cannot use (0, out of
// range, an echoed query as ser2net sends for DTR) still count as an
// answer but change nothing.
func (c *Client) answer(cmd Command) {
	switch v := cmd.(type) {
	case *SetBaudRate:
		if v.Baud > 0 && v.Baud <= 100_000_000 {
			c.settings.BaudRate = int(v.Baud)
		}
		c.answered(ansBaud)
	case *SetDataSize:
		if v.Size >= 5 && v.Size <= 8 {
			c.settings.DataBits = int(v.Size)
		}
		if c.probing { // the fence after SUSPEND
			c.probing, c.suspOK = false, true
			wake(c.kick) // a SUSPEND may have waited for the fence
		}
		c.answered(ansDataSize)
	case *SetParity:
		if p, ok := ParityFromWire(v.Parity); ok {
			c.settings.Parity = p
		}
		c.answered(ansParity)
	case *SetStopSize:
		if s, ok := StopFromWire(v.Stop); ok {
			c.settings.StopBits = s
		}
		c.answered(ansStop)
	case *SetControl:
		c.control(v.Value)
	case *NotifyLineState:
		if v.State&LineBreak != 0 {
			c.st.Breaks++
		}
		if v.State&LineFraming != 0 {
			c.st.FramingErrors++
		}
		if v.State&LineParity != 0 {
			c.st.ParityErrors++
		}
		if v.State&LineOverrun != 0 {
			c.st.Overruns++
		}
		wake(c.status)
	case *NotifyModemState:
		c.haveModem = true
		c.st.Lines = LinesFromModemState(v.State)
		if v.State&ModemRIEdge != 0 {
			c.st.Rings++
		}
		wake(c.status)
	case *FlowControlSuspend:
		if c.suspended == nil {
			c.suspended = make(chan struct{})
		}
	case *FlowControlResume:
		if c.suspended != nil {
			close(c.suspended)
			c.suspended = nil
		}
	case *PurgeData:
		if v.Which&PurgeRx != 0 && c.purgeRx > 0 {
			// Whatever came before this answer was received before the
			// purge: it goes too.
			c.purgeRx--
			c.rx, c.rxOff = c.rx[:0], 0
			c.rxGen++
		}
		c.answered(ansPurge)
	}
}

// control applies a SET-CONTROL answer; c.mu held.
func (c *Client) control(v byte) {
	if f, in, ok := FlowFromWire(v); ok {
		if in {
			c.settings.InFlow = f
			c.answered(ansInFlow)
			return
		}
		if c.probing && len(c.waiters[ansOutFlow]) == 0 {
			// Unasked, between our FLOWCONTROL-SUSPEND and its fence:
			// the server took SUSPEND for a flow-control setting
			// (ser2net 4 and gensio do, and turn the device's flow
			// control off). Put it back and rely on TCP backpressure
			// from now on.
			c.suspBroken = true
			c.probing = false
			c.sentSusp = false
			if f != c.probeFlow {
				c.restore = true
				wake(c.kick)
			}
			c.log.Warn("rfc2217: server takes FLOWCONTROL-SUSPEND for a flow-control setting; no longer sending it",
				"flow", c.probeFlow.String())
			return
		}
		c.settings.OutFlow = f
		c.answered(ansOutFlow)
		return
	}
	switch v {
	case CtlFlowAsk:
		c.answered(ansOutFlow)
	case CtlInFlowAsk:
		c.answered(ansInFlow)
	case CtlBreakAsk, CtlBreakOn, CtlBreakOff:
		c.answered(ansBreak)
	case CtlDTRAsk, CtlRTSAsk:
		// The query sent back as it came: the server cannot read the
		// line, and it leaves setting it unanswered too (ser2net on a
		// device without modem lines). Waiting 3 s for that helps
		// nobody: a relay in front of it would lose its own client.
		k := ansDTR
		if v == CtlRTSAsk {
			k = ansRTS
		}
		c.answered(k)
		c.silent[k] = true
	case CtlDTROn, CtlDTROff:
		c.answered(ansDTR)
	case CtlRTSOn, CtlRTSOff:
		c.answered(ansRTS)
	}
}

// answered wakes the waiters for k; c.mu held.
func (c *Client) answered(k answerKind) {
	c.silent[k] = false
	for _, ch := range c.waiters[k] {
		close(ch)
	}
	c.waiters[k] = c.waiters[k][:0]
}

// fail records why the connection ended and wakes everyone.
func (c *Client) fail(err error) {
	c.mu.Lock()
	switch {
	case c.rxErr != nil:
		// process already said why.
	case c.closed:
		c.rxErr = portClosedError{"read"}
	case errors.Is(err, io.EOF):
		c.rxErr = fmt.Errorf("rfc2217: %s closed the connection: %w", c.addr, io.EOF)
	default:
		c.rxErr = fmt.Errorf("rfc2217: connection to %s lost: %w", c.addr, err)
	}
	if c.suspended != nil {
		close(c.suspended)
		c.suspended = nil
	}
	c.mu.Unlock()
	close(c.status)
	close(c.readerDone)
	wake(c.rxReady)
}

// sendLoop sends what the reader owes the server: negotiation replies,
// FLOWCONTROL-SUSPEND/RESUME, and flow control put back after a server
// misread SUSPEND. It decides and writes under wmu, so that what it sends
// and what Write sends keep their order.
//
// SUSPEND goes out only while we send no data (for suspendQuiet), and
// Write sends RESUME before any data: a server that we suspended then never
// has data of ours queued ahead of the RESUME. Without that rule an echoing
// device deadlocks the link: the suspended server stops reading the device,
// the device stops taking data, the server stops reading our socket, and
// our RESUME waits behind our data for ever.
func (c *Client) sendLoop() {
	defer c.wg.Done()
	var buf []byte
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-c.kick:
		case <-retry.C:
		case <-c.done:
			return
		case <-c.readerDone:
			return
		}
		c.wmu.Lock()
		c.mu.Lock()
		buf = append(append(buf[:0], c.owe...), c.replies...)
		c.replies = c.replies[:0]
		want := c.wantSusp && !c.suspBroken && c.comport
		switch {
		case want && !c.sentSusp && !c.probing:
			// One SUSPEND at a time until one has passed its fence.
			if wait := suspendQuiet - time.Since(c.lastData); wait > 0 {
				retry.Reset(wait)
				break
			}
			// A data-size query after SUSPEND fences its answer: a
			// flow-control answer that nobody asked for arriving
			// before the fence is the server misreading SUSPEND. The
			// server's answers come in order, however much data is
			// queued before them.
			buf = AppendCommand(buf, &FlowControlSuspend{}, false)
			if !c.suspOK {
				buf = AppendCommand(buf, &SetDataSize{}, false)
				c.probing = true
				c.probeFlow = c.settings.OutFlow
			}
			c.sentSusp = true
		case !want && c.sentSusp:
			buf = AppendCommand(buf, &FlowControlResume{}, false)
			c.sentSusp = false
		}
		if c.restore {
			buf = AppendCommand(buf, &SetControl{Value: OutFlowToWire(c.probeFlow)}, false)
			c.restore = false
		}
		c.mu.Unlock()
		var err error
		if len(buf) > 0 {
			var n int
			n, err = c.sock.Write(buf)
			// A write deadline (meant for Write) cuts this short too: the
			// rest goes out first next time, ours or Write's.
			c.setOwe(buf[min(n, len(buf)):])
		}
		c.wmu.Unlock()
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return
		}
	}
}

// setOwe keeps b to go out before anything else; wmu held.
func (c *Client) setOwe(b []byte) {
	c.owe = append(c.owe[:0], b...)
	c.owing.Store(len(c.owe) > 0)
}

// writeCtl sends telnet commands. They are not data: a server's SUSPEND
// does not hold them back.
func (c *Client) writeCtl(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.owe) > 0 {
		b = append(append([]byte(nil), c.owe...), b...)
	}
	n, err := c.sock.Write(b)
	if err != nil {
		// Cut short by a deadline: the commands begun go out later, the
		// caller hears that they did not go out now.
		c.setOwe(b[min(n, len(b)):])
		return c.connErr("write", err)
	}
	c.setOwe(nil)
	return nil
}

// connErr words a failed socket operation.
func (c *Client) connErr(op string, err error) error {
	select {
	case <-c.done:
		return portClosedError{op}
	default:
	}
	return fmt.Errorf("rfc2217: %s to %s: %w", op, c.addr, err)
}

// exchange sends cmds and waits, up to the timeout, for an answer of each
// of kinds. A kind the server leaves unanswered is assumed in force
// (assume is called for it) and not waited for again until the server
// answers one: ser2net never answers SET-CONTROL for DTR and RTS on a
// device without modem lines, and stalling each request would help nobody.
// A partial kind asked together with others is waited for only briefly
// once the others are in (see answerKind.partial).
func (c *Client) exchange(op string, cmds []Command, kinds []answerKind, assume func(answerKind)) error {
	chans := make([]chan struct{}, len(kinds))
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return portClosedError{op}
	}
	if c.rxErr != nil {
		err := c.rxErr
		c.mu.Unlock()
		return err
	}
	for i, k := range kinds {
		if !c.silent[k] {
			chans[i] = make(chan struct{})
			c.waiters[k] = append(c.waiters[k], chans[i])
		}
	}
	c.mu.Unlock()

	var buf []byte
	for _, cmd := range cmds {
		buf = AppendCommand(buf, cmd, false)
	}
	if err := c.writeCtl(buf); err != nil {
		return err
	}

	start := time.Now()
	t := time.NewTimer(c.timeout)
	defer t.Stop()
	timedOut := false
	// The answers every server gives are waited for first. A server
	// answers a batch together (in order, or as hub4com does, in reverse),
	// so once those are in, a missing answer of a partial kind is one the
	// server does not give: it gets a grace as long as the others took (at
	// least a tenth of the timeout), not the whole timeout, or each
	// connection to such a server would stall for it. An answer that
	// comes later still counts.
	for _, partial := range []bool{false, true} {
		anchored := false
		for i, ch := range chans {
			if ch == nil || kinds[i].partial() != partial {
				continue
			}
			anchored = true
			select {
			case <-ch:
				continue
			case <-t.C:
				timedOut = true
			case <-c.done:
				return portClosedError{op}
			case <-c.readerDone:
				c.mu.Lock()
				err := c.rxErr
				c.mu.Unlock()
				return err
			}
			break
		}
		if timedOut {
			break
		}
		if !partial && anchored {
			if grace := max(time.Since(start), c.timeout/10); grace < c.timeout-time.Since(start) {
				t.Reset(grace)
			}
		}
	}
	waited := time.Since(start).Round(time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range kinds {
		ch := chans[i]
		if ch != nil {
			if !timedOut {
				continue
			}
			select {
			case <-ch:
				continue
			default:
			}
			c.waiters[k] = removeWaiter(c.waiters[k], ch)
			c.silent[k] = true
			if k == ansDTR || k == ansRTS {
				// One SET-CONTROL handler serves both lines: a
				// server silent on one is silent on the other
				// (hub4com), and waiting again for it would
				// hold the next line back for the whole timeout.
				c.silent[ansDTR], c.silent[ansRTS] = true, true
			}
			c.log.Debug("rfc2217: no answer from the server; assuming the request is in force",
				"op", op, "command", k.String(), "waited", waited)
		}
		if assume != nil {
			assume(k)
		}
	}
	return nil
}

// assumeSettings returns an exchange callback that takes a field of s as
// in force when the server left it unanswered; c.mu is held when it runs.
func (c *Client) assumeSettings(s serialdev.Settings) func(answerKind) {
	return func(k answerKind) {
		switch k {
		case ansBaud:
			c.settings.BaudRate = s.BaudRate
		case ansDataSize:
			c.settings.DataBits = s.DataBits
		case ansParity:
			c.settings.Parity = s.Parity
		case ansStop:
			c.settings.StopBits = s.StopBits
		case ansOutFlow:
			c.settings.OutFlow = s.OutFlow
		case ansInFlow:
			c.settings.InFlow = s.InFlow
		}
	}
}

func removeWaiter(list []chan struct{}, ch chan struct{}) []chan struct{} {
	for i, x := range list {
		if x == ch {
			return append(list[:i], list[i+1:]...)
		}
	}
	return list
}

// wake makes a non-blocking send on a channel with a buffer of one.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Unread returns the data received that no Read or WriteTo has taken, and
// forgets it. After Close it is what a caller keeps for later: attach
// gives it to the program after reconnecting, so that nothing the server
// sent is lost when the connection ends while the program is behind.
func (c *Client) Unread() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := bytes.Clone(c.rx[c.rxOff:])
	c.rx, c.rxOff = c.rx[:0], 0
	return b
}

// Read returns what the server sent, as soon as anything is buffered.
func (c *Client) Read(p []byte) (int, error) { return c.read(p, false) }

// read is Read; with hold, data returned marks sinkBusy (WriteTo clears it
// once written), so that the reader's deliveries keep their place after it.
func (c *Client) read(p []byte, hold bool) (int, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, portClosedError{"read"}
		}
		select {
		case <-c.rdl.wait():
			c.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		default:
		}
		if len(p) == 0 {
			c.mu.Unlock()
			return 0, nil
		}
		if len(c.rx) > c.rxOff && !c.sinkBusy {
			n := copy(p, c.rx[c.rxOff:])
			resume, space := c.took(n)
			c.sinkBusy = hold
			c.mu.Unlock()
			c.tookWake(resume, space)
			return n, nil
		}
		if err := c.rxErr; err != nil && len(c.rx) == c.rxOff {
			c.mu.Unlock()
			return 0, err
		}
		c.mu.Unlock()
		select {
		case <-c.rxReady:
		case <-c.rdl.wait():
		case <-c.done:
		}
	}
}

// TryWriter is a writer that can also take data without waiting: TryWrite
// writes what of p fits now and returns its length (0 when full, closed or
// failed; Write then meets the error).
type TryWriter interface {
	io.Writer
	TryWrite(p []byte) int
}

// WriteTo writes what the server sends to w until the connection ends or w
// fails, and returns the error that ended it (as Read would) or w's. When w
// is a TryWriter, the goroutine that reads the socket writes to w itself
// whenever w takes the data at once, and WriteTo writes only what w could
// not take then: a relay (attach's pty) saves a goroutine hand-off per read.
// Read must not be used while WriteTo runs.
func (c *Client) WriteTo(w io.Writer) (n int64, err error) {
	tw, _ := w.(TryWriter)
	c.mu.Lock()
	c.sink = tw
	sunk := c.sunk
	c.mu.Unlock()
	var total int64
	defer func() {
		c.mu.Lock()
		c.sink = nil // no delivery starts from now on
		c.mu.Unlock()
		c.delivering.Wait() // and w is not written after WriteTo returns
		c.mu.Lock()
		n += c.sunk - sunk
		c.mu.Unlock()
	}()
	buf := make([]byte, clientReadSize)
	for {
		got, rerr := c.read(buf, true)
		if got > 0 {
			k, werr := w.Write(buf[:got])
			total += int64(k)
			c.mu.Lock()
			c.sinkBusy = false
			c.mu.Unlock()
			if werr == nil && k < got {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// Write sends p as data, IAC doubled. It blocks while the server has
// suspended us (FLOWCONTROL-SUSPEND), up to the write deadline.
func (c *Client) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if err := c.waitResumed(); err != nil {
			return n, err
		}
		chunk := p[n:]
		if len(chunk) > clientWriteChunk {
			chunk = chunk[:clientWriteChunk]
		}
		c.wmu.Lock()
		c.mu.Lock()
		resume := c.sentSusp // see sendLoop: RESUME goes before our data
		c.sentSusp = false
		c.lastData = time.Now()
		c.mu.Unlock()
		var sent, w int
		var err error
		if binary := c.binaryOut.Load(); resume || len(c.owe) > 0 || NeedsEscape(chunk, binary) {
			c.wbuf = append(c.wbuf[:0], c.owe...)
			if resume {
				c.wbuf = AppendCommand(c.wbuf, &FlowControlResume{}, false)
			}
			head := len(c.wbuf)
			c.wbuf = AppendData(c.wbuf, chunk, binary)
			w, err = c.sock.Write(c.wbuf)
			sent = len(chunk)
			if err != nil {
				var rest []byte
				sent, rest = cutData(c.wbuf, head, min(w, len(c.wbuf)), chunk, binary)
				c.setOwe(rest)
			} else {
				c.setOwe(nil)
			}
		} else {
			sent, err = c.sock.Write(chunk)
		}
		c.wmu.Unlock()
		n += sent
		if err != nil {
			return n, c.connErr("write", err)
		}
	}
	if len(p) == 0 && c.isClosed() {
		return 0, portClosedError{"write"}
	}
	return n, nil
}

func (c *Client) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitResumed waits while the server has us suspended.
// cutData reads a write of wbuf cut short after w bytes, where wbuf is
// what must go first (owed bytes, a command) up to head and then chunk as
// telnet data: it returns how many bytes of chunk went out, counting one
// whose escape went out only in part, and the rest of what had begun.
func cutData(wbuf []byte, head, w int, chunk []byte, binary bool) (sent int, rest []byte) {
	if w < head {
		return 0, wbuf[w:head]
	}
	pos := head
	for i, b := range chunk {
		size := 1
		if b == IAC || (!binary && b == '\r') {
			size = 2
		}
		if pos+size > w {
			if pos < w {
				return i + 1, wbuf[w : pos+size]
			}
			return i, nil
		}
		pos += size
	}
	return len(chunk), nil
}

func (c *Client) waitResumed() error {
	for {
		c.mu.Lock()
		closed, susp, rxErr := c.closed, c.suspended, c.rxErr
		c.mu.Unlock()
		switch {
		case closed:
			return portClosedError{"write"}
		case susp == nil && rxErr != nil && !errors.Is(rxErr, io.EOF):
			return rxErr
		case susp == nil:
			select {
			case <-c.wdl.wait():
				return os.ErrDeadlineExceeded
			default:
			}
			return nil
		}
		select {
		case <-susp:
		case <-c.wdl.wait():
			return os.ErrDeadlineExceeded
		case <-c.done:
		}
	}
}

// Close closes the connection; blocked calls return errors wrapping
// net.ErrClosed and os.ErrClosed.
func (c *Client) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.done)
		c.conn.Close()
	})
	if !first {
		return portClosedError{"close"}
	}
	c.wg.Wait()
	return nil
}

// SetReadDeadline sets the deadline for Read.
func (c *Client) SetReadDeadline(t time.Time) error {
	if c.isClosed() {
		return portClosedError{"set deadline"}
	}
	c.rdl.set(t)
	return nil
}

// SetWriteDeadline sets the deadline for Write, including a wait while the
// server has us suspended.
func (c *Client) SetWriteDeadline(t time.Time) error {
	if c.isClosed() {
		return portClosedError{"set deadline"}
	}
	c.wdl.set(t)
	err := c.conn.SetWriteDeadline(t)
	if c.owing.Load() {
		wake(c.kick) // sendLoop sends what a past deadline held back
	}
	return err
}

// Settings returns the settings the server last reported in force (or,
// where it never answers, what was last asked of it).
func (c *Client) Settings() (serialdev.Settings, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return serialdev.Settings{}, portClosedError{"read settings"}
	}
	return c.settings, nil
}

// SetSettings sends what differs from the settings in force and waits for
// the answers. A server that answers with another value is believed (and
// logged); one that does not answer in time is assumed to have complied.
func (c *Client) SetSettings(s serialdev.Settings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("rfc2217: %w", err)
	}
	c.mu.Lock()
	cur := c.settings
	c.mu.Unlock()
	var cmds []Command
	var kinds []answerKind
	add := func(cmd Command, k answerKind) {
		cmds = append(cmds, cmd)
		kinds = append(kinds, k)
	}
	if s.BaudRate != cur.BaudRate {
		add(&SetBaudRate{Baud: uint32(s.BaudRate)}, ansBaud)
	}
	if s.DataBits != cur.DataBits {
		add(&SetDataSize{Size: byte(s.DataBits)}, ansDataSize)
	}
	if s.Parity != cur.Parity {
		add(&SetParity{Parity: ParityToWire(s.Parity)}, ansParity)
	}
	if s.StopBits != cur.StopBits {
		add(&SetStopSize{Stop: StopToWire(s.StopBits)}, ansStop)
	}
	out := s.OutFlow != cur.OutFlow
	if out {
		add(&SetControl{Value: OutFlowToWire(s.OutFlow)}, ansOutFlow)
	}
	// Values 1-3 set "outbound/both": some servers change inbound flow
	// control with them, so inbound follows whenever outbound was sent.
	if out || s.InFlow != cur.InFlow {
		add(&SetControl{Value: InFlowToWire(s.InFlow)}, ansInFlow)
	}
	if len(cmds) == 0 {
		if c.isClosed() {
			return portClosedError{"set settings"}
		}
		return nil
	}
	if err := c.exchange("set settings", cmds, kinds, c.assumeSettings(s)); err != nil {
		return err
	}
	c.mu.Lock()
	got := c.settings
	c.mu.Unlock()
	if got != s {
		c.log.Info("rfc2217: server keeps other settings than asked", "asked", s.String(), "in_force", got.String())
	}
	return nil
}

func (c *Client) setControl(op string, k answerKind, v byte) error {
	return c.exchange(op, []Command{&SetControl{Value: v}}, []answerKind{k}, nil)
}

// SetDTR drives DTR through SET-CONTROL.
func (c *Client) SetDTR(on bool) error {
	if on {
		return c.setControl("set DTR", ansDTR, CtlDTROn)
	}
	return c.setControl("set DTR", ansDTR, CtlDTROff)
}

// SetRTS drives RTS through SET-CONTROL.
func (c *Client) SetRTS(on bool) error {
	if on {
		return c.setControl("set RTS", ansRTS, CtlRTSOn)
	}
	return c.setControl("set RTS", ansRTS, CtlRTSOff)
}

// SetBreak sets or clears BREAK through SET-CONTROL.
func (c *Client) SetBreak(on bool) error {
	if on {
		return c.setControl("set BREAK", ansBreak, CtlBreakOn)
	}
	return c.setControl("set BREAK", ansBreak, CtlBreakOff)
}

// Status returns the modem lines from the server's last NOTIFY-MODEMSTATE
// and the events counted from its notifications. Until a first
// NOTIFY-MODEMSTATE arrives it reports no lines and ErrNoModemLines.
func (c *Client) Status() (serialdev.Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return serialdev.Status{}, portClosedError{"read status"}
	}
	if !c.haveModem {
		return c.st, fmt.Errorf("rfc2217: %s sent no modem state: %w", c.addr, serialdev.ErrNoModemLines)
	}
	return c.st, nil
}

// StatusChanged is signalled on each notification from the server and
// closed when the connection is gone.
func (c *Client) StatusChanged() <-chan struct{} { return c.status }

// Purge sends PURGE-DATA. A receive purge also drops what the client holds
// and anything the server sent before its answer.
func (c *Client) Purge(which serialdev.Purge) error {
	if which == 0 || which > serialdev.PurgeBoth {
		return fmt.Errorf("rfc2217: purge %d: want receive, transmit or both", which)
	}
	rx := which&serialdev.PurgeReceive != 0
	if rx {
		c.mu.Lock()
		c.rx, c.rxOff = c.rx[:0], 0
		c.rxGen++
		c.purgeRx++
		c.mu.Unlock()
		wake(c.rxSpace)
	}
	var v byte
	if rx {
		v |= PurgeRx
	}
	if which&serialdev.PurgeTransmit != 0 {
		v |= PurgeTx
	}
	return c.exchange("purge", []Command{&PurgeData{Which: v}}, []answerKind{ansPurge}, func(answerKind) {
		if rx && c.purgeRx > 0 {
			c.purgeRx--
		}
	})
}

// Drain returns once every Write has been handed to the network; the
// protocol has no way to ask whether the device has sent it.
func (c *Client) Drain() error {
	c.wmu.Lock() // wait for a Write in progress
	closed := c.isClosed()
	c.wmu.Unlock()
	if closed {
		return portClosedError{"drain"}
	}
	return nil
}

// waitDeadline is a deadline that can be waited on (as in net.Pipe): wait
// returns a channel closed once the deadline has passed.
type waitDeadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func makeWaitDeadline() waitDeadline { return waitDeadline{cancel: make(chan struct{})} }

func (d *waitDeadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	closed := chanClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

func (d *waitDeadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func chanClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
