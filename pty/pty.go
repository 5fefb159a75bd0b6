// Package pty provides virtual serial ports: a pseudo-terminal whose slave a
// program opens as if it were a serial port (through a stable symlink), and
// whose master sertun drives. The program's line settings, flushes and opens
// are watched, so that `sertun attach` can carry them to a remote port. On
// Windows the same role is played by the hidden end of a com0com pair.
//
// On Linux the watch is event-driven: the master runs in packet mode
// (TIOCPKT) and the slave carries EXTPROC, which makes the kernel flag every
// tcsetattr on the slave with a TIOCPKT_IOCTL status packet at the master;
// tcflush shows up as TIOCPKT_FLUSHREAD/FLUSHWRITE. inotify on the slave
// node counts the programs that have it open. Where that is unavailable the
// settings are polled.
//
// The kernel hands a status packet out ahead of the data still unread, and
// tcdrain on a pty does not wait, so a settings change is reported only
// once the data the program wrote before it has been read (at most 20 ms
// later): bytes written before a speed change go out at the old speed.
//
// What a pty cannot carry: on Linux the kernel forces 8 data bits and no
// parity on a pty, so a program's 7E1 never reaches us; no OS gives a pty
// modem lines (a program's TIOCMSET fails) or a visible break.
package pty

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/sertun/sertun/internal/fdio"
	"github.com/sertun/sertun/serialdev"
)

// Errors that callers branch on.
var (
	// ErrLinkExists: the link path holds something that is not a stale
	// symlink, and Open refuses to replace it.
	ErrLinkExists = errors.New("pty: link path is in use")
	// ErrUnsupported: this OS has no pty support in sertun.
	ErrUnsupported = errors.New("pty: not supported on this OS")

	errWouldBlock = errors.New("pty: nothing to read")
)

// pollInterval is how often settings are polled where no event path exists.
const pollInterval = 20 * time.Millisecond

// Changes is what happened on the program's side since the last TakeChanges.
type Changes struct {
	Settings bool            // the program changed its line settings: read Settings
	Purge    serialdev.Purge // buffers the program flushed (tcflush)
	Lines    bool            // the program's DTR/RTS changed: read Lines
}

func (c Changes) any() bool { return c.Settings || c.Purge != 0 || c.Lines }

// Pty is the master side of a pseudo-terminal. Read and Write move the
// program's data; the master is non-blocking, so deadlines work and Close
// unblocks a pending Read or Write.
//
// Only one goroutine may Read at a time: status packets (the program's
// tcsetattr and tcflush) arrive through Read, so settings events are seen
// only while somebody reads.
type Pty struct {
	master    *os.File
	slave     *os.File // held open so the pty survives the program's closes
	slavePath string
	link      string

	rc     syscall.RawConn // the master's, for reads that see status packets
	data   *fdio.FD        // the master's data path
	packet bool            // master in packet mode: every read has a status byte
	small  [2]byte         // read buffer for callers with len(b) < 2
	held   []byte          // a status packet met by more, for the next Read
	stop   chan bool       // closed by Close: stops the watchers
	wg     sync.WaitGroup

	mu      sync.Mutex
	last    serialdev.Settings
	pending Changes
	opens   int  // programs that have the slave open
	counted bool // opens is known (inotify works)
	notify  chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Open creates a pty in raw mode and, if link is not "", a symlink at link
// to its slave. A stale symlink at link (one whose target is gone, or that
// already points at the new slave) is replaced; anything else is refused
// with ErrLinkExists. Close removes the link.
func Open(link string) (*Pty, error) { return open(link, nil) }

// open is Open, with initial (if not nil) shown on the pty before the link
// exists: no program can have set anything yet.
func open(link string, initial *serialdev.Settings) (*Pty, error) {
	master, slave, slavePath, err := openPTY()
	if err != nil {
		return nil, err
	}
	p := &Pty{
		master:    master,
		slave:     slave,
		slavePath: slavePath,
		link:      link,
		stop:      make(chan bool),
		notify:    make(chan struct{}, 1),
	}
	if err := p.setup(); err != nil {
		p.closeFiles()
		return nil, err
	}
	if initial != nil {
		if err := p.SetSettings(*initial); err != nil {
			p.closeFiles()
			return nil, err
		}
	}
	if link != "" {
		if err := makeLink(link, slavePath); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// setup puts the slave in raw mode, starts the settings watch (events or
// polling) and the open counter. The slave fd we hold is open already, so
// the counter never sees it.
func (p *Pty) setup() error {
	if err := makeRaw(p.master); err != nil {
		return fmt.Errorf("pty: raw mode on %s: %w", p.slavePath, err)
	}
	s, err := readSettings(p.master)
	if err != nil {
		return fmt.Errorf("pty: reading settings of %s: %w", p.slavePath, err)
	}
	p.last = s
	if p.rc, err = p.master.SyscallConn(); err != nil {
		return fmt.Errorf("pty: %w", err)
	}
	p.data = fdio.New(p.master, p.master)
	if err := enablePacket(p.master); err == nil {
		p.packet = true
	} else {
		p.wg.Add(1)
		go p.poll()
	}
	if err := p.watchOpens(); err == nil {
		p.counted = true
	}
	return nil
}

// makeLink points link at target, replacing only a stale symlink.
func makeLink(link, target string) error {
	fi, err := os.Lstat(link)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("pty: link %s: %w", link, err)
	case fi.Mode()&fs.ModeSymlink == 0:
		what := "a file"
		if fi.IsDir() {
			what = "a directory"
		}
		return fmt.Errorf("%w: %s is %s, not a symlink; remove it or choose another path", ErrLinkExists, link, what)
	default:
		old, _ := os.Readlink(link)
		if _, err := os.Stat(link); err == nil && old != target {
			return fmt.Errorf("%w: %s points to %s, which exists (another sertun attach or cable?); remove it or choose another path", ErrLinkExists, link, old)
		}
	}
	// A new name and a rename, so the link is never missing or half-made
	// for a program that opens it now.
	tmp := filepath.Join(filepath.Dir(link), fmt.Sprintf(".%s.%d.tmp", filepath.Base(link), os.Getpid()))
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		// The *LinkError would name the temporary file, which the user
		// never asked for.
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("pty: creating link %s: directory %s does not exist: %w", link, filepath.Dir(link), err)
		}
		return fmt.Errorf("pty: creating link %s: %w", link, err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pty: creating link %s: %w", link, err)
	}
	return nil
}

// SlavePath is the slave device, /dev/pts/N.
func (p *Pty) SlavePath() string { return p.slavePath }

// Link is the symlink given to Open ("" for none).
func (p *Pty) Link() string { return p.link }

// String names the pty and its link for logs.
func (p *Pty) String() string {
	if p.link == "" {
		return p.slavePath
	}
	return p.link + " -> " + p.slavePath
}

// Read reads what the program wrote. The program's settings changes and
// flushes are posted (Changed) as their status packets are read. The kernel
// hands a status packet out ahead of any data still unread, so that data is
// returned after the change is posted and goes out at the new settings, as
// what a UART has not sent yet does after tcsetattr(TCSANOW). Data written
// right after a change (open, set the speed, write) is the common case, and
// it must never go out at the old speed.
func (p *Pty) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if !p.packet {
		return p.data.Read(b)
	}
	if st := p.held; st != nil {
		p.held = nil
		p.status(st[0], st[1:])
	}
	for {
		buf := b
		if len(b) < 2 {
			buf = p.small[:]
		}
		n, err := readRaw(p.rc, buf, true)
		if err != nil {
			return 0, err
		}
		if buf[0] != 0 {
			p.status(buf[0], buf[1:n])
			continue
		}
		if n = copy(b, buf[1:n]); n > 0 {
			if n >= moreAfter {
				n = p.more(b, n)
			}
			return n, nil
		}
	}
}

// moreAfter: a read of at least this much suggests the program wrote more
// than one read holds. A read that finds the master empty costs a wait for
// the kernel's buffer worker, so a short read (a keystroke, a command) is
// returned as it is.
const moreAfter = 2048

// more adds to b[:n] what else the master has at once, while reads come
// back full. A pty master hands out at most 4 KiB per read; the caller gets
// fewer, larger chunks (and the remote fewer, larger writes).
func (p *Pty) more(b []byte, n int) int {
	for len(b)-n >= 1024 {
		k, err := readRaw(p.rc, b[n:], false)
		if err != nil || k == 0 {
			return n
		}
		if b[n] != 0 {
			// A status packet: posted by the next Read, once the
			// caller has passed on the data read before it.
			p.held = bytes.Clone(b[n : n+k])
			return n
		}
		n += copy(b[n:], b[n+1:n+k])
		if k < moreAfter {
			return n
		}
	}
	return n
}

// Write gives data to the program. It blocks (up to the write deadline)
// while the program does not read.
func (p *Pty) Write(b []byte) (int, error) { return p.data.Write(b) }

// TryWrite gives the program what of b the pty takes now, without waiting,
// and returns its length; Write meets the error, if any.
func (p *Pty) TryWrite(b []byte) int { return p.data.TryWrite(b) }

// SetReadDeadline sets the deadline for Read.
func (p *Pty) SetReadDeadline(t time.Time) error { return p.master.SetReadDeadline(t) }

// SetWriteDeadline sets the deadline for Write.
func (p *Pty) SetWriteDeadline(t time.Time) error { return p.master.SetWriteDeadline(t) }

// Settings reads the program's line settings (TCGETS2 on the master on
// Linux, custom speeds included).
func (p *Pty) Settings() (serialdev.Settings, error) {
	s, err := readSettings(p.master)
	if err != nil {
		return s, fmt.Errorf("pty: reading settings of %s: %w", p.slavePath, err)
	}
	return s, nil
}

// SetSettings changes the pty's settings as a program's tcsetattr would
// (used to show the program the remote port's settings). The change is not
// reported back through Changes. Settings a program set that are not yet
// reported win: they are left as they are.
func (p *Pty) SetSettings(s serialdev.Settings) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("pty: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, err := readSettings(p.master); err == nil && cur != p.last {
		// A program's change not reported yet: writing would undo it.
		return nil
	}
	if err := writeSettings(p.master, s); err != nil {
		return fmt.Errorf("pty: setting %v on %s: %w", s, p.slavePath, err)
	}
	if now, err := readSettings(p.master); err == nil {
		p.last = now
	}
	return nil
}

// Changed receives a value when TakeChanges has something new. Signals
// coalesce (buffer of one).
func (p *Pty) Changed() <-chan struct{} { return p.notify }

// TakeChanges returns what happened since the last call and clears it.
func (p *Pty) TakeChanges() Changes {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.pending
	p.pending = Changes{}
	return c
}

// Opens is the number of programs that have the slave open, or -1 where
// opens cannot be counted (no inotify).
func (p *Pty) Opens() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.counted {
		return -1
	}
	return p.opens
}

// Lines is the program's DTR and RTS. A pty has no modem lines, so they are
// modelled as on a real port with HUPCL: raised while a program has the
// port open. ok is false where opens cannot be counted.
func (p *Pty) Lines() (dtr, rts, ok bool) {
	n := p.Opens()
	return n > 0, n > 0, n >= 0
}

// post records changes and signals Changed. Callers hold p.mu.
func (p *Pty) post(c Changes) {
	if !c.any() {
		return
	}
	p.pending.Settings = p.pending.Settings || c.Settings
	p.pending.Purge |= c.Purge
	p.pending.Lines = p.pending.Lines || c.Lines
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// refresh re-reads the settings and posts a change if they differ.
func (p *Pty) refresh() {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, err := readSettings(p.master)
	if err != nil || s == p.last {
		return
	}
	p.last = s
	p.post(Changes{Settings: true})
}

// poll is the fallback settings watch.
func (p *Pty) poll() {
	defer p.wg.Done()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.refresh()
		}
	}
}

// Close closes the pty and removes the link if it still points at the
// slave.
func (p *Pty) Close() error {
	p.closeOnce.Do(func() {
		p.closeErr = p.closeFiles()
		if p.link != "" {
			if old, err := os.Readlink(p.link); err == nil && old == p.slavePath {
				if err := os.Remove(p.link); err != nil && p.closeErr == nil {
					p.closeErr = fmt.Errorf("pty: removing link: %w", err)
				}
			}
		}
	})
	return p.closeErr
}

func (p *Pty) closeFiles() error {
	close(p.stop)
	err := p.master.Close()
	p.wg.Wait()
	p.slave.Close()
	return err
}
