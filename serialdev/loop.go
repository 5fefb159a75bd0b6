package serialdev

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// loopBufferSize bounds what a loop plug holds: a writer blocks once this
// much has been written and not yet read, as it would on a real line.
const loopBufferSize = 64 << 10

// loop is the loop:// plug: what is written comes back on Read, DTR drives
// DSR and DCD, RTS drives CTS, a break is counted, and settings are kept as
// given. Flow control settings are kept but not acted on.
type loop struct {
	mu   sync.Mutex
	cond *sync.Cond // signalled when data, space, deadlines or closing change

	buf        []byte // ring buffer of loopBufferSize
	head, size int

	closed       bool
	readDL       time.Time
	writeDL      time.Time
	readTimer    *time.Timer
	writeTimer   *time.Timer
	settings     Settings
	dtr, rts, br bool
	breaks       uint64
	status       *notifier
}

// NewLoop returns a new loop:// plug, at DefaultSettings with DTR and RTS
// off. Each plug is separate: two Opens of loop:// do not see each other.
func NewLoop() Port {
	l := &loop{
		buf:      make([]byte, loopBufferSize),
		settings: DefaultSettings(),
		status:   newNotifier(),
	}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func loopError(op string, err error) error {
	return &os.PathError{Op: op, Path: LoopURL, Err: err}
}

// expired reports whether deadline dl has passed; the zero time never does.
func expired(dl time.Time) bool { return !dl.IsZero() && !time.Now().Before(dl) }

func (l *loop) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		switch {
		case l.closed:
			return 0, loopError("read", os.ErrClosed)
		case expired(l.readDL):
			return 0, loopError("read", os.ErrDeadlineExceeded)
		case len(p) == 0:
			return 0, nil
		case l.size > 0:
			n := 0
			for n < len(p) && l.size > 0 {
				end := min(l.head+l.size, len(l.buf))
				c := copy(p[n:], l.buf[l.head:end])
				n += c
				l.head = (l.head + c) % len(l.buf)
				l.size -= c
			}
			if l.size == 0 {
				l.head = 0
			}
			l.cond.Broadcast() // room for writers
			return n, nil
		}
		l.cond.Wait()
	}
}

func (l *loop) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for {
		switch {
		case l.closed:
			return n, loopError("write", os.ErrClosed)
		case expired(l.writeDL):
			return n, loopError("write", os.ErrDeadlineExceeded)
		case n == len(p):
			return n, nil
		case l.size < len(l.buf):
			for n < len(p) && l.size < len(l.buf) {
				tail := (l.head + l.size) % len(l.buf)
				end := len(l.buf)
				if tail < l.head {
					end = l.head
				}
				c := copy(l.buf[tail:end], p[n:])
				n += c
				l.size += c
			}
			l.cond.Broadcast() // data for readers
			continue
		}
		l.cond.Wait()
	}
}

func (l *loop) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return loopError("close", os.ErrClosed)
	}
	l.closed = true
	stopTimer(l.readTimer)
	stopTimer(l.writeTimer)
	l.status.close()
	l.cond.Broadcast()
	return nil
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

func (l *loop) SetReadDeadline(t time.Time) error {
	return l.setDeadline(&l.readDL, &l.readTimer, t)
}

func (l *loop) SetWriteDeadline(t time.Time) error {
	return l.setDeadline(&l.writeDL, &l.writeTimer, t)
}

// setDeadline records a deadline and arms a timer that wakes the waiters
// when it passes, so that they can see it has.
func (l *loop) setDeadline(dl *time.Time, timer **time.Timer, t time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return loopError("set deadline", os.ErrClosed)
	}
	*dl = t
	stopTimer(*timer)
	*timer = nil
	if d := time.Until(t); !t.IsZero() && d > 0 {
		*timer = time.AfterFunc(d, func() {
			l.mu.Lock()
			l.cond.Broadcast()
			l.mu.Unlock()
		})
	}
	l.cond.Broadcast()
	return nil
}

func (l *loop) Settings() (Settings, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Settings{}, loopError("settings", os.ErrClosed)
	}
	return l.settings, nil
}

func (l *loop) SetSettings(s Settings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("serialdev: %s: %w", LoopURL, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return loopError("set settings", os.ErrClosed)
	}
	l.settings = s
	return nil
}

// setLine sets one output line and signals StatusChanged when it changed.
func (l *loop) setLine(op string, line *bool, on bool, changed func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return loopError(op, os.ErrClosed)
	}
	if *line == on {
		return nil
	}
	*line = on
	if changed != nil {
		changed()
	}
	l.status.signal()
	return nil
}

func (l *loop) SetDTR(on bool) error { return l.setLine("set DTR", &l.dtr, on, nil) }
func (l *loop) SetRTS(on bool) error { return l.setLine("set RTS", &l.rts, on, nil) }

// SetBreak counts a break each time the line goes into break, as the
// receiving end of a real line would.
func (l *loop) SetBreak(on bool) error {
	return l.setLine("set break", &l.br, on, func() {
		if on {
			l.breaks++
		}
	})
}

func (l *loop) Status() (Status, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Status{}, loopError("status", os.ErrClosed)
	}
	var st Status
	if l.dtr {
		st.Lines |= DSR | DCD
	}
	if l.rts {
		st.Lines |= CTS
	}
	st.Breaks = l.breaks
	return st, nil
}

func (l *loop) StatusChanged() <-chan struct{} { return l.status.ch }

// Purge of the receive buffer empties what is waiting to be read; the loop
// has no transmit queue (written data arrives at once), so there is nothing
// else to discard.
func (l *loop) Purge(which Purge) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return loopError("purge", os.ErrClosed)
	}
	if which&^PurgeBoth != 0 {
		return fmt.Errorf("serialdev: %s: purge of unknown buffers %#x", LoopURL, uint8(which))
	}
	if which&PurgeReceive != 0 {
		l.head, l.size = 0, 0
		l.cond.Broadcast()
	}
	return nil
}

func (l *loop) Drain() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return loopError("drain", os.ErrClosed)
	}
	return nil
}
