package rfc2217

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sertun/sertun/serialdev"
)

// breakPulseTime is the length of the break sent for telnet's BRK, as
// tcsendbreak's 0.25 s.
const breakPulseTime = 250 * time.Millisecond

// deviceReadSize is the buffer the device is read into: big enough that a
// fast device fills whole TCP segments, small enough to stay in cache.
const deviceReadSize = 64 << 10

// portSession is one opening of the device, shared by the clients that the
// policy lets in. It owns the device reader (device -> clients) and the
// status watcher (modem and line state -> notifications).
type portSession struct {
	s     *Server
	prev  *portSession  // closed before this one opens the device
	ready chan struct{} // closed when open has finished, well or not
	done  chan struct{} // closed when the device is closed and the loops ended

	port      serialdev.Port
	clients   []*srvConn // under s.mu
	closing   atomic.Bool
	gone      atomic.Bool
	closeOnce sync.Once
	wg        sync.WaitGroup

	wmu        sync.Mutex              // one client's write to the device at a time
	writer     atomic.Pointer[srvConn] // the client writing now, for interrupt
	writeSince atomic.Int64            // when that write began (UnixNano), 0 when none
	stopped    chan struct{}           // closed by close

	// ctl serializes the control commands: settings are read, changed and
	// written back as a whole. dtr, rts and brk are the output states last
	// set: a device without modem lines cannot report them, so they are
	// kept here and reported as the client set them.
	ctl           sync.Mutex
	dtr, rts, brk bool

	stMu   sync.Mutex
	status serialdev.Status // the last snapshot of the inputs
}

func newPortSession(s *Server, prev *portSession) *portSession {
	return &portSession{
		s:       s,
		prev:    prev,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
}

// open opens the device with the initial settings and DTR and RTS on, as a
// local open of a tty would leave them.
func (ps *portSession) open(ctx context.Context) error {
	cfg := &ps.s.cfg
	if ps.prev != nil {
		select {
		case <-ps.prev.done:
		case <-ctx.Done():
			ps.close()
			return ErrServerClosed
		}
	}
	port, err := cfg.Open(ctx)
	if err != nil {
		ps.close()
		return fmt.Errorf("rfc2217: opening the device: %w", err)
	}
	ps.port = port
	if err := port.SetSettings(cfg.Initial); err != nil {
		ps.close()
		return fmt.Errorf("rfc2217: setting %s to %v: %w", cfg.Device, cfg.Initial, err)
	}
	for _, f := range []func(bool) error{port.SetDTR, port.SetRTS} {
		if err := f(true); err != nil && !errors.Is(err, serialdev.ErrNoModemLines) {
			ps.s.log.Debug("raising DTR/RTS", "device", cfg.Device, "err", err)
		}
	}
	ps.dtr, ps.rts = true, true
	st, err := port.Status()
	if err != nil && !errors.Is(err, serialdev.ErrNoModemLines) {
		ps.s.log.Debug("reading modem status", "device", cfg.Device, "err", err)
	}
	ps.status = st
	cur, _ := port.Settings()
	ps.s.log.Info("device opened", "device", cfg.Device, "settings", cur.String())
	return nil
}

// restart puts the device back as open left it (the initial settings, DTR
// and RTS on, no break) for a client that took the port over.
func (ps *portSession) restart() {
	ps.ctl.Lock()
	defer ps.ctl.Unlock()
	cfg := &ps.s.cfg
	if err := ps.port.SetSettings(cfg.Initial); err != nil {
		ps.s.log.Warn("resetting the device settings for the new client", "device", cfg.Device, "settings", cfg.Initial.String(), "err", err)
	}
	if ps.brk {
		ps.setLine(&ps.brk, false, ps.port.SetBreak, "break off")
	}
	ps.setLine(&ps.dtr, true, ps.port.SetDTR, "DTR")
	ps.setLine(&ps.rts, true, ps.port.SetRTS, "RTS")
	// The new client's first NOTIFY-MODEMSTATE shows the lines as they
	// are now, not as the old client left them.
	if st, err := ps.port.Status(); err == nil || errors.Is(err, serialdev.ErrNoModemLines) {
		ps.stMu.Lock()
		ps.status = st
		ps.stMu.Unlock()
	}
}

// start runs the device loops; s.mu is held, so that close cannot run
// before the loops are counted.
func (ps *portSession) start() {
	ps.wg.Add(3)
	go ps.readDevice()
	go ps.watchStatus()
	go ps.watchWriter()
}

// stuckCheck is how often a device write that does not finish (flow
// control holding it back) has its client looked at.
const stuckCheck = time.Second

// watchWriter ends the connection of a client that went away while its
// data waits for the device: its socket is read by nobody meanwhile, and
// the port would stay taken, by a client that is no more, until the device
// takes the data.
func (ps *portSession) watchWriter() {
	defer ps.wg.Done()
	t := time.NewTicker(stuckCheck)
	defer t.Stop()
	for {
		select {
		case <-ps.stopped:
			return
		case <-t.C:
		}
		since, c := ps.writeSince.Load(), ps.writer.Load()
		if since == 0 || c == nil || time.Since(time.Unix(0, since)) < stuckCheck {
			continue
		}
		switch peerStateOf(c.nc) {
		case peerGone:
			c.log.Info("client gone while its data waits for the device; ending its session")
			c.shut(errGoneWaiting, false)
		case peerHalfClosed:
			// Done sending and perhaps waiting for the answer (nc -N), or
			// gone: a gone peer answers a telnet NOP with a reset. Raw
			// has no such thing; its client waits for the device.
			if c.mode == Telnet {
				c.mu.Lock()
				c.queueCtrlLocked(func(b []byte) []byte { return append(b, IAC, NOP) })
				c.wake.Signal()
				c.mu.Unlock()
			}
		}
	}
}

// close closes the device; done is closed once the loops have ended. It
// does not wait itself, since the loops call it.
func (ps *portSession) close() {
	ps.closeOnce.Do(func() {
		ps.closing.Store(true)
		close(ps.stopped)
		if ps.port == nil {
			close(ps.done)
			return
		}
		if err := ps.port.Close(); err != nil && !ps.gone.Load() {
			ps.s.log.Debug("closing device", "device", ps.s.cfg.Device, "err", err)
		}
		go func() {
			ps.wg.Wait()
			ps.s.log.Info("device closed", "device", ps.s.cfg.Device)
			close(ps.done)
		}()
	})
}

// failed reports a device error unless the session is being closed, in
// which case the error is only the close showing through.
func (ps *portSession) failed(err error) {
	if ps.closing.Load() {
		return
	}
	ps.s.deviceGone(ps, err)
}

// readDevice moves device data to every client.
func (ps *portSession) readDevice() {
	defer ps.wg.Done()
	buf := make([]byte, deviceReadSize)
	var clients []*srvConn
	for {
		n, err := ps.port.Read(buf)
		if n > 0 {
			clients = ps.s.clientsOf(ps, clients[:0])
			for _, c := range clients {
				c.sendData(buf[:n])
			}
			clear(clients) // keep no client alive from here
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			ps.failed(fmt.Errorf("reading: %w", err))
			return
		}
	}
}

// watchStatus turns changes of the device's inputs into notifications.
func (ps *portSession) watchStatus() {
	defer ps.wg.Done()
	var clients []*srvConn
	for range ps.port.StatusChanged() {
		cur, err := ps.port.Status()
		if err != nil && !errors.Is(err, serialdev.ErrNoModemLines) {
			if ps.closing.Load() {
				return
			}
			ps.s.log.Debug("reading modem status", "device", ps.s.cfg.Device, "err", err)
			continue
		}
		ps.stMu.Lock()
		prev := ps.status
		ps.status = cur
		ps.stMu.Unlock()
		lines, deltas := modemChange(prev, cur)
		events := lineEvents(prev, cur)
		if deltas == 0 && events == 0 {
			continue
		}
		ps.s.log.Debug("device status", "device", ps.s.cfg.Device, "modem", lines|deltas, "line", events)
		clients = ps.s.clientsOf(ps, clients[:0])
		for _, c := range clients {
			c.notifyStatus(lines, deltas, events)
		}
		clear(clients)
	}
	ps.failed(errors.New("status notifications ended"))
}

// modemLines is the NOTIFY-MODEMSTATE line bits now in force.
func (ps *portSession) modemLines() byte {
	ps.stMu.Lock()
	defer ps.stMu.Unlock()
	return ModemStateFromLines(ps.status.Lines)
}

// modemChange gives the line bits of cur and the delta bits against prev:
// CTS, DSR and DCD changed, and a trailing edge of RI (RI went off, or the
// ring counter moved: a ring came and went between the two snapshots).
func modemChange(prev, cur serialdev.Status) (lines, deltas byte) {
	lines = ModemStateFromLines(cur.Lines)
	changed := lines ^ ModemStateFromLines(prev.Lines)
	if changed&ModemCTS != 0 {
		deltas |= ModemDeltaCTS
	}
	if changed&ModemDSR != 0 {
		deltas |= ModemDeltaDSR
	}
	if changed&ModemDCD != 0 {
		deltas |= ModemDeltaDCD
	}
	if prev.Lines&serialdev.RI != 0 && cur.Lines&serialdev.RI == 0 || cur.Rings > prev.Rings {
		deltas |= ModemRIEdge
	}
	return lines, deltas
}

// lineEvents gives the NOTIFY-LINESTATE bits for the events counted
// between prev and cur.
func lineEvents(prev, cur serialdev.Status) byte {
	var b byte
	if cur.Breaks > prev.Breaks {
		b |= LineBreak
	}
	if cur.FramingErrors > prev.FramingErrors {
		b |= LineFraming
	}
	if cur.ParityErrors > prev.ParityErrors {
		b |= LineParity
	}
	if cur.Overruns > prev.Overruns {
		b |= LineOverrun
	}
	return b
}

// write sends client c's data to the device. A device that does not take
// it (flow control holding it back, a stalled device) must not hold up the
// end of c: interrupt cuts the write short once c is ended, so that a
// take-over or the server's Close never waits for the device.
func (ps *portSession) write(c *srvConn, p []byte) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.writer.Store(c)
	ps.writeSince.Store(time.Now().UnixNano())
	defer func() {
		ps.writeSince.Store(0)
		ps.writer.Store(nil)
	}()
	for {
		// Checked after writer is set: an interrupt that comes before
		// finds c ended here, one that comes after cuts the Write short.
		if c.ended.Load() {
			return errEnded
		}
		n, err := ps.port.Write(p)
		p = p[n:]
		switch {
		case err == nil:
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			// An interrupt, meant for us (seen above) or for a client
			// that wrote before us: go on with the rest.
			ps.port.SetWriteDeadline(time.Time{})
			continue
		}
		ps.failed(fmt.Errorf("writing: %w", err))
		return fmt.Errorf("writing to %s: %w", ps.s.cfg.Device, err)
	}
}

// interrupt cuts short the device write of c, which has ended, if it is
// in one.
func (ps *portSession) interrupt(c *srvConn) {
	if ps.writer.Load() == c {
		ps.port.SetWriteDeadline(time.Now())
	}
}

// control carries out one settings command and returns the answer (the
// value now in force, read back from the device) and whether it changed
// something that the other clients should hear about. A nil answer means
// none is owed (a value the RFC does not define, a device error).
func (ps *portSession) control(cmd Command) (answer Command, changed bool) {
	ps.ctl.Lock()
	defer ps.ctl.Unlock()
	switch v := cmd.(type) {
	case *SetBaudRate:
		if v.Baud != 0 {
			changed = ps.apply(func(s *serialdev.Settings) { s.BaudRate = int(v.Baud) })
		}
		if cur, ok := ps.settings(); ok {
			return &SetBaudRate{Baud: uint32(cur.BaudRate)}, changed
		}
	case *SetDataSize:
		if v.Size != 0 {
			changed = ps.apply(func(s *serialdev.Settings) { s.DataBits = int(v.Size) })
		}
		if cur, ok := ps.settings(); ok {
			return &SetDataSize{Size: byte(cur.DataBits)}, changed
		}
	case *SetParity:
		if p, ok := ParityFromWire(v.Parity); ok {
			changed = ps.apply(func(s *serialdev.Settings) { s.Parity = p })
		}
		if cur, ok := ps.settings(); ok {
			return &SetParity{Parity: ParityToWire(cur.Parity)}, changed
		}
	case *SetStopSize:
		if st, ok := StopFromWire(v.Stop); ok {
			changed = ps.apply(func(s *serialdev.Settings) { s.StopBits = st })
		}
		if cur, ok := ps.settings(); ok {
			return &SetStopSize{Stop: StopToWire(cur.StopBits)}, changed
		}
	case *SetControl:
		return ps.setControl(v.Value)
	case *NotifyModemState:
		// A client asking: the lines now (not the last snapshot, which
		// may be behind), unmasked, no deltas.
		st, err := ps.port.Status()
		if err != nil && !errors.Is(err, serialdev.ErrNoModemLines) {
			ps.s.log.Warn("reading modem status", "device", ps.s.cfg.Device, "err", err)
			return nil, false
		}
		return &NotifyModemState{State: ModemStateFromLines(st.Lines)}, false
	case *NotifyLineState:
		// Line events are reported as they happen; between them the line
		// state has nothing to show.
		return &NotifyLineState{}, false
	}
	return nil, false
}

func (ps *portSession) setControl(v byte) (Command, bool) {
	answer := func(b byte) (Command, bool) { return &SetControl{Value: b}, v != CtlFlowAsk && v != CtlInFlowAsk }
	switch v {
	case CtlFlowAsk, CtlInFlowAsk:
	case CtlBreakAsk, CtlDTRAsk, CtlRTSAsk:
		return &SetControl{Value: ps.lineAnswer(v)}, false
	case CtlBreakOn, CtlBreakOff:
		ps.setLine(&ps.brk, v == CtlBreakOn, ps.port.SetBreak, "break")
		return &SetControl{Value: ps.lineAnswer(CtlBreakAsk)}, true
	case CtlDTROn, CtlDTROff:
		ps.setLine(&ps.dtr, v == CtlDTROn, ps.port.SetDTR, "DTR")
		return &SetControl{Value: ps.lineAnswer(CtlDTRAsk)}, true
	case CtlRTSOn, CtlRTSOff:
		ps.setLine(&ps.rts, v == CtlRTSOn, ps.port.SetRTS, "RTS")
		return &SetControl{Value: ps.lineAnswer(CtlRTSAsk)}, true
	default:
		f, in, ok := FlowFromWire(v)
		if !ok {
			ps.s.log.Debug("SET-CONTROL value undefined; not answered", "value", v)
			return nil, false
		}
		ps.apply(func(s *serialdev.Settings) {
			switch {
			case in:
				s.InFlow = f
			case v == CtlFlowDCD || v == CtlFlowDSR:
				s.OutFlow = f
			default:
				// 1, 2 and 3 are "outbound/both": pyserial's rtscts and
				// xonxoff mean both directions.
				s.OutFlow, s.InFlow = f, f
			}
		})
	}
	cur, ok := ps.settings()
	if !ok {
		return nil, false
	}
	if v == CtlInFlowAsk || v >= CtlInFlowNone && v <= CtlInFlowHardware || v == CtlInFlowDTR {
		return answer(InFlowToWire(cur.InFlow))
	}
	return answer(OutFlowToWire(cur.OutFlow))
}

// setLine drives one output; a device without modem lines keeps the state
// the client set, as if it had the line.
func (ps *portSession) setLine(state *bool, on bool, set func(bool) error, name string) {
	err := set(on)
	if err != nil && !errors.Is(err, serialdev.ErrNoModemLines) {
		ps.s.log.Warn("device refused "+name, "device", ps.s.cfg.Device, "on", on, "err", err)
		return
	}
	*state = on
}

// lineAnswer answers a BREAK, DTR or RTS query (its "ask" value) from the
// kept state.
func (ps *portSession) lineAnswer(ask byte) byte {
	var on bool
	switch ask {
	case CtlBreakAsk:
		on = ps.brk
	case CtlDTRAsk:
		on = ps.dtr
	case CtlRTSAsk:
		on = ps.rts
	}
	if on {
		return ask + 1
	}
	return ask + 2
}

// settings reads back what is in force.
func (ps *portSession) settings() (serialdev.Settings, bool) {
	cur, err := ps.port.Settings()
	if err != nil {
		ps.s.log.Warn("reading device settings", "device", ps.s.cfg.Device, "err", err)
		return cur, false
	}
	return cur, true
}

// apply changes the settings in force with mod; a change the device
// refuses is logged and the answer shows the value kept.
func (ps *portSession) apply(mod func(*serialdev.Settings)) bool {
	cur, ok := ps.settings()
	if !ok {
		return false
	}
	next := cur
	mod(&next)
	if next == cur {
		return false
	}
	if err := ps.port.SetSettings(next); err != nil {
		ps.s.log.Info("device refused settings", "device", ps.s.cfg.Device, "want", next.String(), "err", err)
		return false
	}
	ps.s.log.Debug("device settings", "device", ps.s.cfg.Device, "settings", next.String())
	return true
}

// breakPulse sends a break of breakPulseTime, for telnet's BRK command.
func (ps *portSession) breakPulse() {
	ps.ctl.Lock()
	defer ps.ctl.Unlock()
	if ps.brk {
		return // already in break
	}
	if err := ps.port.SetBreak(true); err != nil {
		if !errors.Is(err, serialdev.ErrNoModemLines) {
			ps.s.log.Warn("device refused break", "device", ps.s.cfg.Device, "err", err)
		}
		return
	}
	time.Sleep(breakPulseTime)
	if err := ps.port.SetBreak(false); err != nil {
		ps.s.log.Warn("ending break", "device", ps.s.cfg.Device, "err", err)
	}
}

// purge empties the named device buffers.
func (ps *portSession) purge(which serialdev.Purge) {
	ps.ctl.Lock()
	defer ps.ctl.Unlock()
	if err := ps.port.Purge(which); err != nil {
		ps.s.log.Warn("purging device buffers", "device", ps.s.cfg.Device, "err", err)
	}
}
