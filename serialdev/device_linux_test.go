package serialdev

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openSlave opens the slave of a new pty with Open and closes it when the
// test ends.
func openSlave(t *testing.T) (*device, *os.File, string) {
	t.Helper()
	master, path := openPty(t)
	p, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { p.Close() })
	return p.(*device), master, path
}

func TestDeviceSettingsOnTheLine(t *testing.T) {
	cases := []struct {
		name      string
		set       Settings
		cflagOn   uint32 // must be set in the master's view
		cflagOff  uint32 // must be clear
		iflagOn   uint32
		iflagOff  uint32
		readsBack Settings
	}{
		{"57600 8N1", Settings{57600, 8, ParityNone, Stop1, FlowNone, FlowNone},
			unix.CS8, unix.CSTOPB | unix.CRTSCTS | unix.PARENB, 0, unix.IXON | unix.IXOFF,
			Settings{57600, 8, ParityNone, Stop1, FlowNone, FlowNone}},
		{"250000 non-standard", Settings{250000, 8, ParityNone, Stop1, FlowNone, FlowNone},
			unix.BOTHER, 0, 0, 0,
			Settings{250000, 8, ParityNone, Stop1, FlowNone, FlowNone}},
		{"two stop bits", Settings{9600, 8, ParityNone, Stop2, FlowNone, FlowNone},
			unix.CSTOPB, 0, 0, 0,
			Settings{9600, 8, ParityNone, Stop2, FlowNone, FlowNone}},
		{"RTS/CTS", Settings{115200, 8, ParityNone, Stop1, FlowRTSCTS, FlowRTSCTS},
			unix.CRTSCTS, 0, 0, unix.IXON | unix.IXOFF,
			Settings{115200, 8, ParityNone, Stop1, FlowRTSCTS, FlowRTSCTS}},
		{"XON/XOFF out", Settings{9600, 8, ParityNone, Stop1, FlowXonXoff, FlowNone},
			0, unix.CRTSCTS, unix.IXON, unix.IXOFF,
			Settings{9600, 8, ParityNone, Stop1, FlowXonXoff, FlowNone}},
		{"XON/XOFF in", Settings{9600, 8, ParityNone, Stop1, FlowNone, FlowXonXoff},
			0, unix.CRTSCTS, unix.IXOFF, unix.IXON,
			Settings{9600, 8, ParityNone, Stop1, FlowNone, FlowXonXoff}},
		{"7E1 becomes 8N1 on a pty", Settings{19200, 7, ParityEven, Stop1, FlowNone, FlowNone},
			unix.CS8, unix.PARENB, 0, 0,
			Settings{19200, 8, ParityNone, Stop1, FlowNone, FlowNone}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, master, _ := openSlave(t)
			if err := p.SetSettings(c.set); err != nil {
				t.Fatal(err)
			}
			tio := masterTermios(t, master)
			// Standard rates must show as their Bnnn code, so that plain
			// TCGETS readers (cfgetospeed, Python's termios) see them.
			wantCode := baudCode(c.set.BaudRate)
			if got := int(tio.Ospeed); got != c.set.BaudRate || tio.Cflag&unix.CBAUD != wantCode {
				t.Errorf("line speed %d (CBAUD %#x), want %d with CBAUD %#x", got, tio.Cflag&unix.CBAUD, c.set.BaudRate, wantCode)
			}
			if c.set.BaudRate == 250000 && wantCode != unix.BOTHER {
				t.Errorf("250000 got code %#x, want BOTHER", wantCode)
			}
			if c.set.BaudRate == 57600 && wantCode != unix.B57600 {
				t.Errorf("57600 got code %#x, want B57600", wantCode)
			}
			if tio.Cflag&c.cflagOn != c.cflagOn || tio.Cflag&c.cflagOff != 0 {
				t.Errorf("cflag %#x: want %#x set and %#x clear", tio.Cflag, c.cflagOn, c.cflagOff)
			}
			if tio.Iflag&c.iflagOn != c.iflagOn || tio.Iflag&c.iflagOff != 0 {
				t.Errorf("iflag %#x: want %#x set and %#x clear", tio.Iflag, c.iflagOn, c.iflagOff)
			}
			got, err := p.Settings()
			if err != nil {
				t.Fatal(err)
			}
			if got != c.readsBack {
				t.Errorf("Settings() = %v, want %v", got, c.readsBack)
			}
		})
	}
}

// Open makes the line raw but leaves the rate and format as it finds them.
func TestDeviceOpenRawKeepsRate(t *testing.T) {
	master, path := openPty(t)
	rc, _ := master.SyscallConn()
	rc.Control(func(fd uintptr) {
		tio, err := getTermios(int(fd))
		if err != nil {
			t.Fatal(err)
		}
		tio.Cflag &^= unix.CBAUD | unix.CLOCAL
		tio.Cflag |= unix.BOTHER | unix.CSTOPB
		tio.Ispeed, tio.Ospeed = 38400, 38400
		tio.Iflag |= unix.ICRNL | unix.IXON
		tio.Lflag |= unix.ICANON | unix.ECHO | unix.ISIG
		tio.Oflag |= unix.OPOST
		if err := setTermios(int(fd), tio); err != nil {
			t.Fatal(err)
		}
	})
	p, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, err := p.Settings()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Settings{38400, 8, ParityNone, Stop2, FlowNone, FlowNone}); s != want {
		t.Errorf("after Open: %v, want %v", s, want)
	}
	tio := masterTermios(t, master)
	if tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 || tio.Iflag&(unix.ICRNL|unix.IXON) != 0 ||
		tio.Oflag&unix.OPOST != 0 || tio.Cflag&(unix.CLOCAL|unix.CREAD) != unix.CLOCAL|unix.CREAD {
		t.Errorf("not raw after Open: iflag %#x oflag %#x lflag %#x cflag %#x", tio.Iflag, tio.Oflag, tio.Lflag, tio.Cflag)
	}
}

func TestDeviceDataBothWays(t *testing.T) {
	p, master, _ := openSlave(t)
	data := make([]byte, 256*64)
	for i := range data {
		data[i] = byte(i * 7)
	}
	dirs := []struct {
		name string
		w    io.Writer
		r    io.Reader
		dl   func(time.Time) error
	}{
		{"port to line", p, master, master.SetReadDeadline},
		{"line to port", master, p, p.SetReadDeadline},
	}
	for _, d := range dirs {
		t.Run(d.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() { _, err := d.w.Write(data); errc <- err }()
			d.dl(time.Now().Add(10 * time.Second))
			got := make([]byte, len(data))
			if _, err := io.ReadFull(d.r, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("data changed on the way")
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A read that comes back full gathers what else the tty has at once, up to
// gatherMax; a short one is returned as it is.
func TestDeviceReadGathers(t *testing.T) {
	tests := []struct {
		name     string
		write    int
		min, max int // bytes the first Read returns
	}{
		{"a line", 100, 100, 100},
		{"more than one read holds", 24 << 10, 4096 + 1, 24 << 10},
		{"more than gatherMax", 96 << 10, 4096 + 1, gatherMax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, master, _ := openSlave(t)
			data := bytes.Repeat([]byte("0123456789abcdef"), tt.write/16+1)[:tt.write]
			errc := make(chan error, 1)
			go func() { _, err := master.Write(data); errc <- err }()
			// Let the pty take in what fits before the first read.
			deadline := time.Now().Add(5 * time.Second)
			rc, err := p.f.SyscallConn() // not Fd: it makes the descriptor blocking
			if err != nil {
				t.Fatal(err)
			}
			for {
				var n int
				var ierr error
				rc.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) })
				if ierr != nil {
					t.Fatal(ierr)
				}
				if n >= min(tt.write, 4095) || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
			p.SetReadDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 64<<10)
			n, err := p.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if n < tt.min || n > tt.max {
				t.Errorf("first Read returned %d bytes, want %d to %d", n, tt.min, tt.max)
			}
			got := append([]byte(nil), buf[:n]...)
			for len(got) < len(data) {
				n, err := p.Read(buf)
				if err != nil {
					t.Fatalf("after %d bytes: %v", len(got), err)
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("data changed on the way")
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A pty has no modem lines: the port says so rather than pretending, and
// a break is accepted (the pty ignores it).
func TestDeviceNoModemLines(t *testing.T) {
	p, _, _ := openSlave(t)
	for _, c := range []struct {
		name string
		fn   func() error
	}{
		{"DTR on", func() error { return p.SetDTR(true) }},
		{"DTR off", func() error { return p.SetDTR(false) }},
		{"RTS on", func() error { return p.SetRTS(true) }},
		{"RTS off", func() error { return p.SetRTS(false) }},
		{"status", func() error { _, err := p.Status(); return err }},
	} {
		if err := c.fn(); !errors.Is(err, ErrNoModemLines) {
			t.Errorf("%s: %v, want ErrNoModemLines", c.name, err)
		}
	}
	for _, on := range []bool{true, false} {
		if err := p.SetBreak(on); err != nil {
			t.Errorf("SetBreak(%v): %v", on, err)
		}
	}
	if p.hasLines || p.hasCounts {
		t.Errorf("pty: hasLines %v, hasCounts %v; want no polling", p.hasLines, p.hasCounts)
	}
}

func TestDeviceExclusive(t *testing.T) {
	p, _, path := openSlave(t)
	_, err := Open(path)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: %v, want ErrBusy naming %s", err, path)
	}
	var excl int
	p.control(func(fd int) error {
		excl, err = unix.IoctlGetInt(fd, unix.TIOCGEXCL)
		return nil
	})
	if err != nil || excl != 1 {
		t.Errorf("TIOCGEXCL = %d, %v; want exclusive mode", excl, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing releases the port: TIOCEXCL is undone (the pty outlives our
	// fd) and the lock dropped.
	p2, err := Open(path)
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	p2.Close()
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if excl, err := unix.IoctlGetInt(fd, unix.TIOCGEXCL); err != nil || excl != 0 {
		t.Errorf("after Close TIOCGEXCL = %d, %v; want 0", excl, err)
	}
}

func TestDeviceOpenErrors(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, []byte("x"), 0o600)
	cases := []struct {
		name   string
		is     []error
		isNot  []error
		inText string
	}{
		{"/dev/ttyUSB-sertun-missing", []error{ErrNotFound, fs.ErrNotExist}, nil,
			"serialdev: open /dev/ttyUSB-sertun-missing: no such serial port"},
		{filepath.Join(dir, "missing"), []error{ErrNotFound}, nil, "no such serial port"},
		{regular, nil, []error{ErrNotFound, ErrBusy}, "not a serial device"},
		{"/dev/null", nil, []error{ErrNotFound, ErrBusy}, "/dev/null: not a serial device"},
		{"rfc2217://127.0.0.1:7000", []error{ErrUnknownScheme}, []error{ErrNotFound}, `"rfc2217"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Open(c.name)
			if err == nil {
				p.Close()
				t.Fatal("Open succeeded")
			}
			for _, e := range c.is {
				if !errors.Is(err, e) {
					t.Errorf("%v: not %v", err, e)
				}
			}
			for _, e := range c.isNot {
				if errors.Is(err, e) {
					t.Errorf("%v: is %v", err, e)
				}
			}
			if !strings.Contains(err.Error(), c.inText) {
				t.Errorf("%q does not say %q", err, c.inText)
			}
		})
	}
}

func TestDeviceStat(t *testing.T) {
	_, path := openPty(t)
	if err := Stat(path); err != nil {
		t.Errorf("Stat(%s) = %v", path, err)
	}
	if err := Stat("/dev/ttyUSB-sertun-missing"); !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat of a missing path = %v", err)
	}
	for _, path := range []string{"/etc/passwd", "/dev/null"} {
		if err := Stat(path); err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "not a serial device") {
			t.Errorf("Stat(%s) = %v, want not a serial device", path, err)
		}
	}
	if _, err := os.Stat("/sys/dev/char/4:64"); err == nil {
		if err := Stat("/dev/ttyS0"); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(/dev/ttyS0) = %v, want a serial device", err)
		}
	}
}

// When the other end of the pty goes, a pending Read fails and
// StatusChanged is closed: what an unplugged USB adapter looks like.
func TestDeviceGone(t *testing.T) {
	p, master, _ := openSlave(t)
	errc := make(chan error, 1)
	go func() {
		_, err := p.Read(make([]byte, 16))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	master.Close()
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, os.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read after the device went: %v, want EOF or EIO", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Read still pending after the device went")
	}
	select {
	case _, ok := <-p.StatusChanged():
		if ok {
			t.Fatal("StatusChanged signalled instead of closed")
		}
	case <-time.After(time.Second):
		t.Fatal("StatusChanged not closed when the device went")
	}
	if _, err := p.Settings(); err == nil {
		t.Error("Settings succeeded on a device that has gone")
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close of a device that has gone: %v", err)
	}
}

func TestDevicePurgeReceive(t *testing.T) {
	p, master, _ := openSlave(t)
	if _, err := master.Write([]byte("stale")); err != nil {
		t.Fatal(err)
	}
	// Wait (bounded) until the bytes have reached the port's input queue.
	for i := 0; ; i++ {
		var n int
		p.control(func(fd int) error { n, _ = unix.IoctlGetInt(fd, unix.TIOCINQ); return nil })
		if n == 5 {
			break
		}
		if i == 1000 {
			t.Fatalf("input queue holds %d bytes, want 5", n)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.Purge(PurgeReceive); err != nil {
		t.Fatal(err)
	}
	master.Write([]byte("fresh"))
	readFull(t, p, []byte("fresh"), 5*time.Second)
	for _, w := range []Purge{PurgeTransmit, PurgeBoth} {
		if err := p.Purge(w); err != nil {
			t.Errorf("Purge(%d): %v", w, err)
		}
	}
	if err := p.Purge(0x80); err == nil {
		t.Error("Purge of an unknown buffer succeeded")
	}
}

func TestDeviceDrain(t *testing.T) {
	p, master, _ := openSlave(t)
	p.Write(bytes.Repeat([]byte{0x55}, 1000))
	done := make(chan error, 1)
	go func() { done <- p.Drain() }()
	go io.CopyN(io.Discard, master, 1000)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return")
	}
}

func TestPollLoop(t *testing.T) {
	type sample struct {
		bits int
		c    icount
		err  error
	}
	cases := []struct {
		name    string
		samples []sample
		signals int  // signals expected, counted as the loop runs
		closed  bool // StatusChanged closed at the end
	}{
		{"steady", []sample{{bits: unix.TIOCM_CTS}, {bits: unix.TIOCM_CTS}, {bits: unix.TIOCM_CTS}}, 0, false},
		{"line change", []sample{{}, {bits: unix.TIOCM_CD}, {bits: unix.TIOCM_CD}}, 1, false},
		{"short break between samples", []sample{{}, {c: icount{brk: 1}}, {c: icount{brk: 1}}}, 1, false},
		{"transient error", []sample{{}, {err: unix.EINTR}, {}}, 0, false},
		{"device gone", []sample{{}, {err: unix.ENODEV}}, 0, true},
		{"closed", []sample{{}, {err: os.ErrClosed}}, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := newNotifier()
			done := make(chan struct{})
			finished := make(chan struct{})
			i, signals := 0, 0
			go func() {
				defer close(finished)
				pollLoop(done, n, func() (int, icount, error) {
					// Count the signal the previous sample caused.
					select {
					case <-n.ch:
						signals++
					default:
					}
					if i == len(c.samples) {
						close(done) // as Close does: the loop must stop
						i++
						return 0, icount{}, nil
					}
					if i > len(c.samples) {
						t.Error("sampled after done was closed")
						return 0, icount{}, os.ErrClosed
					}
					s := c.samples[i]
					i++
					return s.bits, s.c, s.err
				})
			}()
			select {
			case <-finished:
			case <-time.After(5 * time.Second):
				t.Fatal("pollLoop did not return")
			}
			if signals != c.signals {
				t.Errorf("%d signals, want %d", signals, c.signals)
			}
			if n.isClosed() != c.closed {
				t.Errorf("closed = %v, want %v", n.closed, c.closed)
			}
		})
	}
}

func BenchmarkPtyThroughput(b *testing.B) {
	master, path := openPty(b)
	p, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	chunk := bytes.Repeat([]byte{0xA5}, 32<<10)
	for _, dir := range []struct {
		name string
		w    io.Writer
		r    io.Reader
	}{
		{"port-to-line", p, master},
		{"line-to-port", master, p},
	} {
		b.Run(dir.name, func(b *testing.B) {
			b.SetBytes(int64(len(chunk)))
			errc := make(chan error, 1)
			go func() {
				buf := make([]byte, 64<<10)
				var err error
				for got := 0; err == nil && got < b.N*len(chunk); {
					var n int
					n, err = dir.r.Read(buf)
					got += n
				}
				errc <- err
			}()
			for i := 0; i < b.N; i++ {
				if _, err := dir.w.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		})
	}
}
