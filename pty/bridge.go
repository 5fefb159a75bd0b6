package pty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sertun/sertun/serialdev"
)

// Virtual is the local end of an attached port, the side the program
// opened: a *Pty, or on Windows the hidden end of a com0com pair.
type Virtual interface {
	io.ReadWriter
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	// Settings are the program's line settings.
	Settings() (serialdev.Settings, error)
	// Changed signals that TakeChanges has something new.
	Changed() <-chan struct{}
	TakeChanges() Changes
	// Lines is the program's DTR and RTS; ok is false when unknown.
	Lines() (dtr, rts, ok bool)
}

// LineMode says how attach drives a modem line of the remote port.
type LineMode uint8

const (
	LineFollow LineMode = iota // the program's line (a pty: raised while a program has it open)
	LineOn
	LineOff
)

func (m LineMode) String() string {
	switch m {
	case LineFollow:
		return "follow"
	case LineOn:
		return "on"
	case LineOff:
		return "off"
	}
	return fmt.Sprintf("LineMode(%d)", uint8(m))
}

// ParseLineMode reads "on", "off" or "follow".
func ParseLineMode(s string) (LineMode, error) {
	switch s {
	case "follow", "":
		return LineFollow, nil
	case "on":
		return LineOn, nil
	case "off":
		return LineOff, nil
	}
	return 0, fmt.Errorf("pty: line mode %q: want on, off or follow", s)
}

// BridgeConfig tunes Bridge. The zero value follows the program in
// everything and retries every 100 ms to 5 s.
type BridgeConfig struct {
	// DataBits (5-8) and Parity, when set, are forced on the remote port
	// whatever the program sets (a Linux pty cannot carry them).
	DataBits int
	Parity   *serialdev.Parity
	DTR, RTS LineMode
	// MinBackoff and MaxBackoff bound the wait between reconnect attempts
	// (0 => 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Dialer connects to the remote port.
type Dialer func(ctx context.Context) (serialdev.Port, error)

const bufSize = 64 * 1024

// errVirtualGone: the local end failed (closed under Bridge); no reconnect
// helps.
var errVirtualGone = errors.New("pty: virtual port failed")

// Bridge joins v to a remote port until ctx is done: data both ways, the
// program's settings, flushes and lines to the remote. first is a port
// already connected (nil: dial first). When the remote fails, Bridge keeps
// v, stops reading from it (so the program's writes block rather than
// vanish), reconnects with backoff and re-applies the program's current
// settings and lines. It returns nil when ctx is done.
func Bridge(ctx context.Context, v Virtual, first serialdev.Port, dial Dialer, cfg BridgeConfig) error {
	if cfg.DataBits != 0 && (cfg.DataBits < 5 || cfg.DataBits > 8) {
		return fmt.Errorf("pty: %w: %d data bits (want 5 to 8)", serialdev.ErrInvalidSettings, cfg.DataBits)
	}
	if cfg.Parity != nil && *cfg.Parity > serialdev.ParitySpace {
		return fmt.Errorf("pty: %w: parity %v", serialdev.ErrInvalidSettings, *cfg.Parity)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	b := &bridge{v: v, dial: dial, cfg: cfg, log: cfg.Logger}
	port := first
	for {
		if port == nil {
			port = b.connect(ctx)
			if port == nil {
				return nil
			}
		}
		err := b.session(ctx, port)
		port.Close()
		port = nil
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errVirtualGone) {
			return err
		}
		b.log.Warn("attach: connection to the remote port lost; the virtual port stays, reconnecting", "err", err,
			"unsent", len(b.out))
		b.sessions++
	}
}

type bridge struct {
	v    Virtual
	dial Dialer
	cfg  BridgeConfig
	log  *slog.Logger

	// Bytes in hand when a session ended, carried to the next one so that
	// nothing is lost: out was read from the program, in from the remote.
	out, in []byte

	sessions int
	// format: the remote's data bits and parity, kept when the program's
	// side cannot carry them (a Linux pty).
	format *serialdev.Settings
}

// connect dials until it succeeds or ctx is done.
func (b *bridge) connect(ctx context.Context) serialdev.Port {
	wait := b.cfg.MinBackoff
	start := time.Now()
	why := "" // the reason last logged at Info: a new reason is logged there too
	for attempt := 1; ; attempt++ {
		port, err := b.dial(ctx)
		if err == nil {
			if b.sessions > 0 {
				b.log.Info("attach: reconnected", "attempts", attempt, "after", time.Since(start).Round(time.Millisecond))
			}
			return port
		}
		if ctx.Err() != nil {
			return nil
		}
		if err.Error() != why {
			why = err.Error()
			b.log.Info("attach: cannot connect yet; retrying", "attempt", attempt, "retry_in", wait, "err", err)
		} else {
			b.log.Debug("attach: connect failed", "attempt", attempt, "retry_in", wait, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		wait = min(wait*2, b.cfg.MaxBackoff)
	}
}

// keepsFormat reports whether v carries the program's data bits and parity.
func keepsFormat(v Virtual) bool {
	if _, ok := v.(*Pty); ok {
		return ptyKeepsFormat
	}
	return true
}

// want is what the remote should be set to: the program's settings with
// the forced and kept parts.
func (b *bridge) want() (serialdev.Settings, error) {
	s, err := b.v.Settings()
	if err != nil {
		return s, err
	}
	if b.format != nil && !keepsFormat(b.v) {
		s.DataBits, s.Parity = b.format.DataBits, b.format.Parity
	}
	if b.cfg.DataBits != 0 {
		s.DataBits = b.cfg.DataBits
	}
	if b.cfg.Parity != nil {
		s.Parity = *b.cfg.Parity
	}
	return s, nil
}

// session runs one connection until it fails or ctx is done.
func (b *bridge) session(ctx context.Context, port serialdev.Port) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() {
			firstErr = err
			cancel()
		})
	}

	if b.sessions == 0 {
		b.learnRemote(port)
	}
	ctl := newControl(b, port)
	ctl.kick(true, 0, true)

	wg.Add(4)
	go func() { defer wg.Done(); fail(b.up(ctx, port, ctl)) }()
	go func() { defer wg.Done(); fail(b.down(port)) }()
	go func() { defer wg.Done(); ctl.run(ctx) }()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-b.v.Changed():
				ctl.take()
			}
		}
	}()

	<-ctx.Done()
	fail(ctx.Err())
	// Unblock the pumps: the port by closing it, the virtual end by
	// deadlines (it lives on).
	past := time.Unix(1, 0)
	b.v.SetReadDeadline(past)
	b.v.SetWriteDeadline(past)
	port.Close()
	wg.Wait()
	if u, ok := port.(unreader); ok {
		// What the remote sent and the program has not taken yet: it
		// goes to the program first over the next connection.
		b.in = append(b.in, u.Unread()...)
	}
	b.v.SetReadDeadline(time.Time{})
	b.v.SetWriteDeadline(time.Time{})
	return firstErr
}

// unreader is a port that keeps what it received until it is read (the
// RFC 2217 client): after Close, Unread hands over the rest.
type unreader interface {
	Unread() []byte
}

// learnRemote reads the remote's settings at the first connect and keeps
// its data bits and parity, which the program cannot set where the virtual
// end forces them. Showing the settings to the program is OpenVirtual's
// job: done before the link exists, no program can meet the change.
func (b *bridge) learnRemote(port serialdev.Port) {
	s, err := port.Settings()
	if err != nil || s.Validate() != nil {
		b.log.Debug("attach: remote settings unknown; the program's apply", "err", err)
		return
	}
	b.format = &s
	b.log.Debug("attach: remote port settings", "settings", s)
}

// up moves the program's data to the remote. Settings and flushes the
// program made before writing go out first: a purge sent after the data
// would drop the device's answer to it, and data must not go out at the
// old speed.
func (b *bridge) up(ctx context.Context, port serialdev.Port, ctl *remoteCtl) error {
	if len(b.out) > 0 {
		// Carried over from the last connection: after a reconnect the
		// remote may be back at its own speed.
		ctl.applySettings(ctx)
		n, err := port.Write(b.out)
		b.out = b.out[n:]
		if err != nil {
			return fmt.Errorf("writing to the remote: %w", err)
		}
	}
	buf := make([]byte, bufSize)
	for {
		n, err := b.v.Read(buf)
		if n > 0 {
			ctl.take()
			ctl.applySettings(ctx)
			w, werr := port.Write(buf[:n])
			if werr != nil {
				b.out = append(b.out[:0], buf[w:n]...)
				return fmt.Errorf("writing to the remote: %w", werr)
			}
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("%w: reading: %w", errVirtualGone, err)
		}
	}
}

// down moves the remote's data to the program. A remote that can write to
// the program itself (the RFC 2217 client, an io.WriterTo) does, and when
// the virtual end takes data without waiting its reader does so directly.
func (b *bridge) down(port serialdev.Port) error {
	if len(b.in) > 0 {
		n, err := b.v.Write(b.in)
		b.in = b.in[n:]
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil // session ending: the rest waits for the next one
		}
		if err != nil {
			return fmt.Errorf("%w: writing: %w", errVirtualGone, err)
		}
	}
	sink := &toProgram{b: b}
	var w io.Writer = sink
	if tw, ok := b.v.(tryWriter); ok {
		w = tryToProgram{sink, tw}
	}
	_, err := io.CopyBuffer(w, port, make([]byte, bufSize))
	if sink.err != nil {
		if errors.Is(sink.err, os.ErrDeadlineExceeded) {
			return nil
		}
		return fmt.Errorf("%w: writing: %w", errVirtualGone, sink.err)
	}
	if err == nil {
		err = io.EOF // a port has no end: the connection closed
	}
	return fmt.Errorf("reading from the remote: %w", err)
}

// tryWriter takes what it can of p without waiting (a *Pty).
type tryWriter interface {
	TryWrite(p []byte) int
}

// toProgram writes to the virtual end; what it could not write when the
// session ended waits in b.in for the next one.
type toProgram struct {
	b   *bridge
	err error
}

func (t *toProgram) Write(p []byte) (int, error) {
	n, err := t.b.v.Write(p)
	if err != nil {
		t.err = err
		t.b.in = append(t.b.in[:0], p[n:]...)
	}
	return n, err
}

type tryToProgram struct {
	*toProgram
	tw tryWriter
}

func (t tryToProgram) TryWrite(p []byte) int { return t.tw.TryWrite(p) }

// remoteCtl applies settings, purges and lines to the remote. Settings and
// lines have workers of their own: a remote that never answers a line
// command (ser2net on a pty) must not hold up the next baud change.
type remoteCtl struct {
	b    *bridge
	port serialdev.Port

	// apply is held while settings and purges go out, by the control
	// worker or by the data pump (which waits for them).
	apply    sync.Mutex
	takeMu   sync.Mutex
	mu       sync.Mutex
	settings bool
	purge    serialdev.Purge
	lines    bool
	setCh    chan struct{}
	lineCh   chan struct{}

	applied  *serialdev.Settings // last settings the remote took
	dtr, rts *bool               // last lines sent
	warned   bool
}

func newControl(b *bridge, port serialdev.Port) *remoteCtl {
	return &remoteCtl{b: b, port: port, setCh: make(chan struct{}, 1), lineCh: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// take moves what the program changed from the virtual end into c. The
// data pump and the watcher both take: holding takeMu across the take and
// the kick means that once the pump has taken, every change posted before
// is in c, whichever of them took it, and applySettings sends it ahead of
// the data read after it.
func (c *remoteCtl) take() {
	c.takeMu.Lock()
	defer c.takeMu.Unlock()
	ch := c.b.v.TakeChanges()
	c.kick(ch.Settings, ch.Purge, ch.Lines)
}

func (c *remoteCtl) kick(settings bool, purge serialdev.Purge, lines bool) {
	c.mu.Lock()
	c.settings = c.settings || settings
	c.purge |= purge
	c.lines = c.lines || lines
	c.mu.Unlock()
	if settings || purge != 0 {
		signal(c.setCh)
	}
	if lines {
		signal(c.lineCh)
	}
}

func (c *remoteCtl) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.setCh:
				c.applySettings(ctx)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.lineCh:
				c.applyLines(ctx)
			}
		}
	}()
	wg.Wait()
}

// applySettings and applyLines stay quiet about failures once the session
// is over: the port was closed under them.
func (c *remoteCtl) applySettings(ctx context.Context) {
	c.apply.Lock()
	defer c.apply.Unlock()
	c.mu.Lock()
	settings, purge := c.settings, c.purge
	c.settings, c.purge = false, 0
	c.mu.Unlock()
	log := c.b.log
	if settings {
		s, err := c.b.want()
		switch {
		case err != nil:
			log.Warn("attach: reading the program's settings", "err", err)
		case s.BaudRate == 0:
			// B0 is a hang-up request, not a speed; keep the speed.
		case c.applied != nil && *c.applied == s:
		default:
			if err := c.port.SetSettings(s); err != nil && ctx.Err() == nil {
				log.Warn("attach: remote port did not take the settings", "settings", s, "err", err)
			} else if err == nil {
				log.Debug("attach: settings sent to the remote", "settings", s)
			}
			c.applied = &s
		}
	}
	if purge != 0 {
		if err := c.port.Purge(purge); err != nil {
			log.Debug("attach: purge on the remote", "which", purge, "err", err)
		}
	}
}

func (c *remoteCtl) applyLines(ctx context.Context) {
	c.mu.Lock()
	c.lines = false
	c.mu.Unlock()
	pdtr, prts, ok := c.b.v.Lines()
	want := func(m LineMode, program bool) bool {
		switch m {
		case LineOn:
			return true
		case LineOff:
			return false
		}
		return program || !ok
	}
	dtr, rts := want(c.b.cfg.DTR, pdtr), want(c.b.cfg.RTS, prts)
	set := func(name string, last **bool, on bool, fn func(bool) error) {
		if *last != nil && **last == on {
			return
		}
		*last = &on
		if err := fn(on); err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, serialdev.ErrNoModemLines) || c.warned {
				c.b.log.Debug("attach: remote line", "line", name, "on", on, "err", err)
				return
			}
			c.warned = true
			c.b.log.Warn("attach: remote port did not confirm a modem line (further ones at debug level)", "line", name, "on", on, "err", err)
			return
		}
		c.b.log.Debug("attach: remote line", "line", name, "on", on)
	}
	set("DTR", &c.dtr, dtr, c.port.SetDTR)
	set("RTS", &c.rts, rts, c.port.SetRTS)
}

// Port is a virtual serial port as attach opens it.
type Port interface {
	Virtual
	io.Closer
	fmt.Stringer // what the program opens, for logs
}

// OpenVirtual opens the local end for `sertun attach`: on Linux and macOS a
// pty with a symlink at name (Open), showing initial (the remote port's
// settings; nil for none) from before the link exists, so that a program
// never sees them replace its own; on Windows the hidden end of the
// com0com pair named name (CNCB0), whose other end the program opens.
func OpenVirtual(name string, initial *serialdev.Settings) (Port, error) {
	return openVirtual(name, initial)
}
