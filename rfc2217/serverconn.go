package rfc2217

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sertun/sertun/internal/fdio"
	"github.com/sertun/sertun/serialdev"
)

const (
	// netReadSize is what one client's bytes are read in.
	netReadSize = 32 << 10
	// keepBuffer: queue buffers up to this size are kept for reuse; a
	// burst's bigger ones go back to the collector.
	keepBuffer = 64 << 10
	// maxBatch bounds the device data in one write to a client (and an
	// eighth of ClientBuffer does).
	maxBatch = 64 << 10
	// flushTimeout bounds the last write to a client being dropped.
	flushTimeout = time.Second
	// busyTimeout bounds writing the "port busy" line.
	busyTimeout = 2 * time.Second
	// lingerTime is how long a client that has finished sending (EOF)
	// still gets what the device sends: `echo AT | socat - TCP:...`
	// half-closes and waits (0.5 s by default) for the answer.
	lingerTime = 500 * time.Millisecond
)

// srvConn is one client of a Server. Three goroutines serve it: serve
// reads the client (data to the device, commands to the session), the
// writer sends what is queued, and the session's device reader writes or
// queues device data. Control answers and notifications have their own queue,
// written before data, so they never wait behind a backlog of data.
//
// When nothing is queued or being written, the device reader tries the
// socket itself, without blocking (TryWrite): a pty gives a few KiB per
// read, and handing each read to the writer cost a futex wake and a thread
// switch, more than the write. What the socket does not take at once is
// queued, so the device reader never waits for the client there, and the
// writer only has a backlog to send (batched: what arrives during its
// write goes out in the next one).
type srvConn struct {
	s     *Server
	nc    net.Conn
	sock  *fdio.FD // nc's data path
	mode  Mode
	addr  string
	since time.Time
	ps    *portSession
	// leaving: the client has sent EOF and only waits for the device's
	// last words; a newcomer does not have to wait for it. Under s.mu.
	leaving bool
	log     *slog.Logger

	writerDone chan struct{}
	// ended is shutting, readable without mu: the reader stops at once,
	// and what it had already read (a kicked client's, say) never reaches
	// the device.
	ended atomic.Bool

	mu       sync.Mutex
	wake     sync.Cond // the writer waits for something to send
	room     sync.Cond // the device reader waits for room (one client at a time)
	head     []byte    // the rest of a direct write: before anything else, or an escape it split would swallow what follows
	ctrl     []byte    // encoded answers and notifications
	data     []byte    // encoded device data
	spare    [2][]byte // buffers the writer gave back
	inflight int       // data bytes being written now
	busy     bool      // a write to nc is in progress (the writer's or sendDirect's)
	scratch  []byte    // device data encoded for sendDirect; the device reader's, under busy
	suspend  bool      // FLOWCONTROL-SUSPEND in force
	purges   int       // PURGE-DATA receive requests: data read before one is not sent
	// afterTryWrite, for tests, runs when sendDirect's write stopped
	// short, before the rest is queued: where answers may come in.
	afterTryWrite func()
	shutting      bool
	flush         bool  // send what is queued before closing
	err           error // why the connection ends, the first reason given
	binary        bool  // our BINARY side: data goes out without CR NUL
	comport       bool  // COM-PORT-OPTION agreed: notifications are sent
	modemMsk      byte
	lineMsk       byte
	lines         byte  // modem line bits last notified
	fromDev       int64 // device bytes queued for the client
	toDev         int64 // client bytes written to the device
	sent          int64 // bytes written to the client
}

func newSrvConn(s *Server, nc net.Conn, mode Mode) *srvConn {
	c := &srvConn{
		s:          s,
		nc:         nc,
		mode:       mode,
		addr:       nc.RemoteAddr().String(),
		since:      time.Now(),
		writerDone: make(chan struct{}),
		modemMsk:   255,
		binary:     true,
	}
	c.log = s.log.With("device", s.cfg.Device, "client", c.addr)
	c.wake.L = &c.mu
	c.room.L = &c.mu
	c.sock = fdio.New(nc, nc)
	return c
}

// serve runs the connection to its end.
func (c *srvConn) serve() {
	defer c.s.untrack(c)
	ps, err := c.s.join(c)
	if err != nil {
		c.refuse(err)
		return
	}
	c.mu.Lock()
	c.ps = ps // shut reads it from other goroutines
	c.mu.Unlock()
	c.log.Info("client connected", "mode", c.mode.String(), "policy", c.s.cfg.Policy.String())
	go c.writer()
	if c.mode == Telnet {
		err = c.readTelnet()
	} else {
		err = c.readRaw()
	}
	if errors.Is(err, io.EOF) && c.s.linger(c) {
		// Done sending, perhaps only half-closed: the answer to its last
		// bytes may be on its way from the device.
		t := time.AfterFunc(lingerTime, func() { c.shut(err, true) })
		<-c.writerDone
		t.Stop()
	}
	c.shut(err, false)
	<-c.writerDone
	c.s.leave(c, ps)
	c.mu.Lock()
	reason, fromDev, toDev, sent := c.err, c.fromDev, c.toDev, c.sent
	c.mu.Unlock()
	c.log.Info("client disconnected", "reason", describe(reason), "for", time.Since(c.since).Round(time.Millisecond).String(),
		"to_device", toDev, "from_device", fromDev, "sent", sent)
}

// refuse tells the client in one line why it cannot have the port.
func (c *srvConn) refuse(err error) {
	msg := err.Error()
	switch {
	case errors.Is(err, ErrPortBusy):
		c.log.Info("client refused", "reason", msg)
	case errors.Is(err, ErrServerClosed):
		msg = "sertun: the server is shutting down"
		c.log.Info("client refused", "reason", msg)
	default:
		// The device cannot be opened: the operator has to act, and
		// the log tells them how. The client is told what it is, in
		// words that make sense at its end.
		c.log.Warn("client refused: the device cannot be opened", "err", err)
		msg = "sertun: cannot open " + c.s.cfg.Device + ": " + openProblem(err)
	}
	c.nc.SetWriteDeadline(time.Now().Add(busyTimeout))
	io.WriteString(c.nc, msg+"\r\n")
	c.nc.Close()
}

// openProblem words for a remote client why the device did not open.
func openProblem(err error) string {
	switch {
	case errors.Is(err, serialdev.ErrBusy):
		return "busy (another program on the server has it open)"
	case errors.Is(err, serialdev.ErrNotFound):
		return "not found (unplugged?)"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	}
	return "see the server's log"
}

func describe(err error) string {
	switch {
	case errors.Is(err, errDeviceGone):
		return err.Error() // may wrap the device's io.EOF
	case err == nil, errors.Is(err, io.EOF):
		return "closed by client"
	case errors.Is(err, net.ErrClosed):
		return "closed"
	}
	return err.Error()
}

// shut ends the connection for reason (the first reason is kept). With
// flush, what is queued is still sent (within flushTimeout) before the
// connection closes; the reader is stopped at once either way.
func (c *srvConn) shut(reason error, flush bool) {
	c.mu.Lock()
	if c.shutting {
		c.mu.Unlock()
		return
	}
	c.shutting, c.flush, c.err = true, flush, reason
	c.ended.Store(true)
	c.wake.Broadcast()
	c.room.Broadcast()
	ps := c.ps
	c.mu.Unlock()
	if ps != nil {
		ps.interrupt(c)
	}
	if flush {
		// Stop the reader; the writer closes the connection when done,
		// and a write in progress to a client that does not read must
		// not hold that up for ever.
		c.nc.SetReadDeadline(time.Now())
		c.nc.SetWriteDeadline(time.Now().Add(flushTimeout))
	} else {
		c.nc.Close()
	}
}

// writer sends the queues to the client: the rest of a direct write, then
// control, then data, in as few writes as there are batches.
func (c *srvConn) writer() {
	defer close(c.writerDone)
	defer c.nc.Close()
	var bufs net.Buffers
	for {
		c.mu.Lock()
		// FLOWCONTROL-SUSPEND holds the data only: answers still go, or
		// a client that suspends and then changes a setting would wait
		// for its answer until it resumes.
		// A sendDirect in progress goes first, even when shutting, and
		// then its remainder (head), even under SUSPEND: bytes keep their
		// order, and an escape it split is completed first.
		for c.busy || !c.shutting && len(c.head)+len(c.ctrl) == 0 && (c.suspend || len(c.data) == 0) {
			c.wake.Wait()
		}
		if c.shutting && (!c.flush || len(c.head)+len(c.ctrl)+len(c.data) == 0) {
			c.mu.Unlock()
			return
		}
		head, ctrl, data := c.head, c.ctrl, []byte(nil)
		c.head = nil
		c.ctrl, c.spare[0] = c.spare[0][:0], nil
		partial := false
		if !c.suspend || c.shutting {
			if batch := min(maxBatch, c.s.cfg.ClientBuffer/8); len(c.data) > batch {
				// In pieces, so that a slow client's progress frees
				// room (and counts against ClientStall) as it goes.
				data, c.data, partial = c.data[:batch:batch], c.data[batch:], true
			} else {
				data = c.data
				c.data, c.spare[1] = c.spare[1][:0], nil
			}
		}
		c.inflight = len(head) + len(data)
		c.busy = true
		flushing := c.shutting
		c.mu.Unlock()

		if flushing {
			c.nc.SetWriteDeadline(time.Now().Add(flushTimeout))
		}
		var err error
		switch {
		case len(head)+len(ctrl) == 0:
			_, err = c.sock.Write(data)
		case len(head)+len(data) == 0:
			_, err = c.sock.Write(ctrl)
		default:
			bufs = append(bufs[:0], head, ctrl, data)
			_, err = bufs.WriteTo(c.nc)
		}

		c.mu.Lock()
		c.inflight, c.busy = 0, false
		if err == nil {
			c.sent += int64(len(head) + len(ctrl) + len(data))
		}
		if cap(ctrl) <= keepBuffer {
			c.spare[0] = ctrl[:0]
		}
		if data != nil && !partial && cap(data) <= keepBuffer {
			c.spare[1] = data[:0] // (a piece shares its array with the rest)
		}
		c.room.Broadcast()
		c.mu.Unlock()
		if err != nil {
			c.shut(fmt.Errorf("writing to client: %w", err), false)
			return
		}
	}
}

// sendData queues device data p for the client. With one client at a time
// a full queue makes the device reader wait (the device's own buffers and
// flow control take the strain), up to ClientStall; shared, a client that
// falls behind by more than ClientBuffer is dropped so that it does not
// hold up the others.
func (c *srvConn) sendData(p []byte) {
	limit := c.s.cfg.ClientBuffer
	c.mu.Lock()
	if c.s.cfg.Policy != Shared {
		purges := c.purges
		var stall *time.Timer
		held, sent := false, c.sent
		for start := time.Now(); !c.shutting && len(c.head)+len(c.data)+c.inflight >= limit; {
			if c.suspend || held || c.sent != sent {
				// The client took some, or it is held at its own
				// request (FLOWCONTROL-SUSPEND), which loses nothing
				// and is no stall: the clock starts again.
				start, held, sent = time.Now(), c.suspend, c.sent
			} else if waited := time.Since(start); waited >= c.s.cfg.ClientStall {
				queued, sent := len(c.head)+len(c.data)+c.inflight, c.sent
				c.mu.Unlock()
				c.log.Warn("client takes nothing while the device waits for it; disconnecting it",
					"waited", waited.Round(time.Millisecond), "queued", queued, "limit", limit, "sent", sent)
				c.shut(fmt.Errorf("%w: took nothing for %v with %d bytes queued", errTooSlow, c.s.cfg.ClientStall, queued), false)
				if stall != nil {
					stall.Stop()
				}
				return
			}
			left := c.s.cfg.ClientStall - time.Since(start)
			if stall == nil {
				stall = time.AfterFunc(left, func() {
					c.mu.Lock()
					c.room.Broadcast()
					c.mu.Unlock()
				})
			} else {
				stall.Reset(left)
			}
			c.room.Wait()
		}
		if stall != nil {
			stall.Stop()
		}
		if c.purges != purges {
			// Read from the device before the client purged its
			// receive buffer, which this is part of.
			c.mu.Unlock()
			return
		}
	} else if queued := len(c.head) + len(c.data) + c.inflight; !c.shutting && queued > 0 && queued+len(p) > limit {
		// (An empty queue takes any one read, however small the limit.)
		sent := c.sent
		c.mu.Unlock()
		c.log.Warn("client too slow; disconnecting it", "queued", queued, "incoming", len(p), "limit", limit, "sent", sent)
		c.shut(fmt.Errorf("%w: %d bytes queued, limit %d", errTooSlow, queued, limit), false)
		return
	}
	if c.shutting {
		c.mu.Unlock()
		return
	}
	c.fromDev += int64(len(p))
	if c.sock.Nonblocking() && !c.busy && !c.suspend && len(c.head)+len(c.data)+len(c.ctrl) == 0 {
		c.sendDirect(p)
		return
	}
	if c.mode == Raw {
		c.data = append(c.data, p...)
	} else {
		c.data = AppendData(c.data, p, c.binary)
	}
	c.wake.Signal()
	c.mu.Unlock()
}

// sendDirect writes p to the client from the device reader, as much as the
// socket takes without waiting; the rest is queued for the writer. c.mu is
// held on entry and released on return. While it writes, busy holds the
// writer back, and what comes meanwhile (answers, a suspend) is queued and
// sent after it, the rest of the write included: the write never blocks,
// so they wait for no client.
func (c *srvConn) sendDirect(p []byte) {
	out := p
	if c.mode != Raw {
		c.scratch = AppendData(c.scratch[:0], p, c.binary)
		out = c.scratch
	}
	c.busy, c.inflight = true, len(out)
	c.mu.Unlock()

	n := c.sock.TryWrite(out)
	if n < len(out) && c.afterTryWrite != nil {
		c.afterTryWrite()
	}

	c.mu.Lock()
	c.busy, c.inflight = false, 0
	c.sent += int64(n)
	if rest := out[n:]; len(rest) > 0 {
		// Ahead of what was queued meanwhile (answers, tell's line):
		// the write may have stopped inside an escape.
		c.head = append([]byte(nil), rest...)
	}
	if len(c.head)+len(c.ctrl)+len(c.data) > 0 || c.shutting {
		c.wake.Signal()
	}
	if cap(c.scratch) > keepBuffer {
		c.scratch = nil
	}
	c.mu.Unlock()
}

// tell queues a message for the client's data stream, past the buffer
// limit: it is one short line, sent just before the connection is closed.
func (c *srvConn) tell(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutting {
		return
	}
	if c.mode == Raw {
		c.data = append(c.data, msg...)
	} else {
		c.data = AppendData(c.data, []byte(msg), c.binary)
	}
	c.wake.Signal()
}

// sendCommand queues an answer or notification.
func (c *srvConn) sendCommand(cmd Command) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queueCtrlLocked(func(b []byte) []byte { return AppendCommand(b, cmd, true) })
}

// queueCtrlLocked appends control bytes; a client that lets them pile up
// past ctrlLimit (it sends requests but does not read) is dropped.
func (c *srvConn) queueCtrlLocked(add func([]byte) []byte) {
	if c.shutting {
		return
	}
	c.ctrl = add(c.ctrl)
	if len(c.ctrl) > ctrlLimit {
		c.shutting, c.err = true, fmt.Errorf("%w: %d control bytes unread", errTooSlow, len(c.ctrl))
		c.ended.Store(true)
		c.room.Broadcast()
		c.nc.Close()
		if c.ps != nil {
			c.ps.interrupt(c)
		}
	}
	c.wake.Signal()
}

// notifyStatus sends the modem and line state notifications that the
// client's masks let through.
func (c *srvConn) notifyStatus(lines, deltas, events byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.comport {
		return
	}
	if ((lines^c.lines)|deltas)&c.modemMsk != 0 {
		st := (lines | deltas) & c.modemMsk
		c.queueCtrlLocked(func(b []byte) []byte { return AppendCommand(b, &NotifyModemState{State: st}, true) })
	}
	c.lines = lines
	if events&c.lineMsk != 0 {
		st := events & c.lineMsk
		c.queueCtrlLocked(func(b []byte) []byte { return AppendCommand(b, &NotifyLineState{State: st}, true) })
	}
}

// readRaw copies the client's bytes to the device.
func (c *srvConn) readRaw() error {
	buf := make([]byte, netReadSize)
	for {
		n, err := c.sock.Read(buf)
		if c.ended.Load() {
			return nil // the reason is set already
		}
		if n > 0 {
			if werr := c.ps.write(c, buf[:n]); werr != nil {
				return werr
			}
			c.addToDev(n)
		}
		if err != nil {
			return err
		}
	}
}

func (c *srvConn) addToDev(n int) {
	c.mu.Lock()
	c.toDev += int64(n)
	c.mu.Unlock()
}

// readTelnet decodes the client's bytes: data to the device, negotiation
// and commands handled in stream order.
func (c *srvConn) readTelnet() error {
	var tn Codec
	tn.Support(OptBinary, true, true, false)
	tn.Support(OptSGA, true, true, false)
	tn.Support(OptEcho, true, false, false)
	tn.Support(OptComPort, true, true, true)
	// BINARY both ways, and character mode for an interactive telnet
	// (SGA, and ECHO: the device echoes, the client must not). COM-PORT is
	// left to the client to propose (see the package doc).
	tn.Request(OptBinary, true, true)
	tn.Request(OptBinary, false, true)
	tn.Request(OptSGA, true, true)
	tn.Request(OptEcho, true, true)
	c.queueReplies(&tn)

	buf := make([]byte, netReadSize)
	for {
		n, err := c.sock.Read(buf)
		in := buf[:n]
		for len(in) > 0 {
			if c.ended.Load() {
				return nil // the reason is set already
			}
			k, data, ev := tn.Decode(in)
			if len(data) > 0 {
				if werr := c.ps.write(c, data); werr != nil {
					return werr
				}
				c.addToDev(len(data))
			}
			if ev.Kind != EventNone {
				c.event(&tn, ev)
			}
			if tn.HasReplies() {
				c.queueReplies(&tn)
			}
			in = in[k:]
		}
		if err != nil {
			return err
		}
	}
}

func (c *srvConn) queueReplies(tn *Codec) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queueCtrlLocked(tn.AppendReplies)
}

func (c *srvConn) event(tn *Codec, ev Event) {
	switch ev.Kind {
	case EventOption:
		c.log.Debug("telnet option", "option", optionName(ev.Opt), "ours", ev.Local, "on", ev.On)
		switch {
		case ev.Opt == OptBinary && ev.Local:
			c.mu.Lock()
			c.binary = tn.Binary(true)
			c.mu.Unlock()
		case ev.Opt == OptComPort && ev.On:
			// Any agreement on COM-PORT-OPTION (the client's WILL, or its
			// DO) starts notifications, with the state now right away:
			// pyserial insists on having one.
			if tn.HasReplies() {
				c.queueReplies(tn) // our DO/WILL goes before the notification
			}
			lines := c.ps.modemLines()
			c.mu.Lock()
			if !c.comport {
				c.comport, c.lines = true, lines
				st := lines & c.modemMsk
				c.queueCtrlLocked(func(b []byte) []byte { return AppendCommand(b, &NotifyModemState{State: st}, true) })
			}
			c.mu.Unlock()
		}
	case EventSubneg:
		if ev.Opt != OptComPort {
			return
		}
		cmd, answer, err := DecodeCommand(ev.Data)
		switch {
		case err != nil:
			c.log.Debug("COM-PORT-OPTION ignored", "err", err)
		case answer:
			c.log.Debug("COM-PORT-OPTION server code from a client ignored", "code", ev.Data[0])
		default:
			c.command(cmd)
		}
	case EventCommand:
		if ev.Cmd == BRK {
			// A telnet user's "send brk": a break on the line.
			c.log.Debug("telnet BRK: sending a break")
			c.ps.breakPulse()
			return
		}
		c.log.Debug("telnet command ignored", "command", telnetCommandName(ev.Cmd))
	}
}

// command carries out one COM-PORT-OPTION request.
func (c *srvConn) command(cmd Command) {
	c.log.Debug("COM-PORT-OPTION", "command", cmd)
	switch v := cmd.(type) {
	case *Signature:
		if v.Text == "" {
			c.sendCommand(&Signature{Text: c.s.cfg.Signature})
		} else {
			c.log.Info("client signature", "signature", v.Text)
		}
	case *FlowControlSuspend, *FlowControlResume:
		_, suspend := v.(*FlowControlSuspend)
		c.mu.Lock()
		c.suspend = suspend
		c.wake.Signal()
		c.mu.Unlock()
	case *SetLinestateMask:
		c.mu.Lock()
		c.lineMsk = v.Mask
		c.mu.Unlock()
		c.sendCommand(v)
	case *SetModemstateMask:
		c.mu.Lock()
		c.modemMsk = v.Mask
		c.mu.Unlock()
		c.sendCommand(v)
	case *PurgeData:
		which, ok := PurgeFromWire(v.Which)
		if !ok {
			c.log.Debug("PURGE-DATA value undefined; not answered", "value", v.Which)
			return
		}
		c.ps.purge(which)
		if which&serialdev.PurgeReceive != 0 {
			// Device data not yet sent to this client is in the server's
			// receive buffer too.
			c.mu.Lock()
			c.data = c.data[:0]
			c.purges++
			c.mu.Unlock()
		}
		c.sendCommand(v)
	default:
		answer, changed := c.ps.control(cmd)
		if answer == nil {
			return
		}
		c.sendCommand(answer)
		if changed && c.s.cfg.Policy == Shared {
			for _, o := range c.s.clientsOf(c.ps, nil) {
				if o != c && o.agreed() {
					o.sendCommand(answer)
				}
			}
		}
	}
}

func (c *srvConn) agreed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.comport
}
