package pty

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/serialdev"
)

func openPty(t *testing.T, link string) *Pty {
	t.Helper()
	p, err := Open(link)
	if err != nil {
		t.Fatalf("Open(%q): %v", link, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// openProgram opens the slave as a program would (O_NOCTTY, pollable so
// deadlines work).
func openProgram(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// programTermios runs fn on the program's termios2 and sets it with TCSETS2,
// as a program's tcsetattr does.
func programTermios(t *testing.T, f *os.File, fn func(*unix.Termios)) {
	t.Helper()
	err := control(f, func(fd int) error {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS2)
		if err != nil {
			return err
		}
		fn(tio)
		return unix.IoctlSetTermios(fd, unix.TCSETS2, tio)
	})
	if err != nil {
		t.Fatalf("program tcsetattr: %v", err)
	}
}

// drain reads the pty in the background (status packets arrive through
// Read) and returns what it read on a channel.
func drain(t *testing.T, p *Pty) <-chan []byte {
	t.Helper()
	ch := make(chan []byte, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := p.Read(buf)
			if n > 0 {
				ch <- bytes.Clone(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		p.Close()
		<-done
	})
	return ch
}

// waitChange waits for a change matching want.
func waitChange(t *testing.T, p *Pty, d time.Duration, want func(Changes) bool) time.Duration {
	t.Helper()
	start := time.Now()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-p.Changed():
			if c := p.TakeChanges(); want(c) {
				return time.Since(start)
			}
		case <-timer.C:
			t.Fatalf("no matching change within %v", d)
		}
	}
}

func TestLink(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		prepare func(t *testing.T, link string)
		wantErr bool
	}{
		{"new", func(*testing.T, string) {}, false},
		{"stale symlink", func(t *testing.T, link string) {
			if err := os.Symlink("/dev/pts/999999", link); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"regular file", func(t *testing.T, link string) {
			if err := os.WriteFile(link, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"directory", func(t *testing.T, link string) {
			if err := os.Mkdir(link, 0o755); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"live symlink", func(t *testing.T, link string) {
			if err := os.Symlink("/dev/null", link); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"no such dir/L", func(*testing.T, string) {}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			link := filepath.Join(dir, tt.name)
			tt.prepare(t, link)
			before, _ := os.Lstat(link)
			p, err := Open(link)
			if tt.wantErr && before == nil {
				// The error names what the user gave, not a temporary name.
				want := "pty: creating link " + link + ": directory " + filepath.Dir(link) + " does not exist: no such file or directory"
				if err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Open(%s): err %v, want %s", link, err, want)
				}
				return
			}
			if tt.wantErr {
				if !errors.Is(err, ErrLinkExists) {
					t.Fatalf("Open over %s: err %v, want ErrLinkExists", tt.name, err)
				}
				after, err := os.Lstat(link)
				if err != nil || after.Mode() != before.Mode() {
					t.Fatalf("refused link was changed: %v %v", after, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if got, err := os.Readlink(link); err != nil || got != p.SlavePath() {
				t.Fatalf("link -> %q (%v), want %q", got, err, p.SlavePath())
			}
			if p.Link() != link {
				t.Fatalf("Link() = %q", p.Link())
			}
			if err := p.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("link still there after Close: %v", err)
			}
		})
	}
}

// A link that points at the new slave is stale: an earlier attach that died
// left it, and the kernel reused the pty number for us.
func TestLinkToOwnSlaveIsReplaced(t *testing.T) {
	link := filepath.Join(t.TempDir(), "L")
	p := openPty(t, link)
	p.Close()
	// Open again and pre-point the link at the number the kernel will
	// hand out next: the lowest free one, which p just released.
	if err := os.Symlink(p.SlavePath(), link); err != nil {
		t.Fatal(err)
	}
	q, err := Open(link)
	if q != nil {
		defer q.Close()
	}
	if q != nil && q.SlavePath() != p.SlavePath() {
		t.Skipf("kernel gave %s, not the released %s", q.SlavePath(), p.SlavePath())
	}
	if err != nil {
		t.Fatalf("Open over a link to its own slave: %v", err)
	}
}

// Close leaves a link alone that somebody re-pointed.
func TestCloseKeepsForeignLink(t *testing.T) {
	link := filepath.Join(t.TempDir(), "L")
	p := openPty(t, link)
	os.Remove(link)
	if err := os.Symlink("/dev/null", link); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if got, _ := os.Readlink(link); got != "/dev/null" {
		t.Fatalf("Close removed or changed a foreign link: %q", got)
	}
}

func allBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/256)
	}
	return append(b, 0xff, 0xff, 0x00, '\r', '\n', 0x11, 0x13, 0x03, 0x04, 0x7f)
}

func readFull(t *testing.T, r interface {
	io.Reader
	SetReadDeadline(time.Time) error
}, n int) []byte {
	t.Helper()
	r.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer r.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("reading %d bytes: %v", n, err)
	}
	return b
}

func TestDataBothWays(t *testing.T) {
	p := openPty(t, "")
	prog := openProgram(t, p.SlavePath())
	want := allBytes(64 * 1024)

	// program -> pty
	errc := make(chan error, 1)
	go func() { _, err := prog.Write(want); errc <- err }()
	if got := readFull(t, p, len(want)); !bytes.Equal(got, want) {
		t.Fatal("program -> pty: data differs")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}

	// pty -> program
	go func() { _, err := p.Write(want); errc <- err }()
	if got := readFull(t, prog, len(want)); !bytes.Equal(got, want) {
		t.Fatal("pty -> program: data differs")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// The pty survives the program closing and reopening, many times, and the
// master never sees EOF or EIO.
func TestReopen(t *testing.T) {
	p := openPty(t, filepath.Join(t.TempDir(), "L"))
	for i := range 20 {
		prog, err := os.OpenFile(p.Link(), os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		msg := []byte{byte(i), 0xff, '\n'}
		if _, err := prog.Write(msg); err != nil {
			t.Fatal(err)
		}
		if got := readFull(t, p, len(msg)); !bytes.Equal(got, msg) {
			t.Fatalf("round %d: got %x", i, got)
		}
		if _, err := p.Write(msg); err != nil {
			t.Fatal(err)
		}
		if got := readFull(t, prog, len(msg)); !bytes.Equal(got, msg) {
			t.Fatalf("round %d back: got %x", i, got)
		}
		prog.Close()
	}
	// Nobody has it open now: a read times out instead of failing.
	p.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := p.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with no program: %v, want deadline exceeded", err)
	}
}

func TestDeadlineAndCloseUnblock(t *testing.T) {
	p := openPty(t, "")
	errc := make(chan error, 1)
	go func() { _, err := p.Read(make([]byte, 10)); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	p.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}

func TestSettingsEvents(t *testing.T) {
	tests := []struct {
		name string
		set  func(*unix.Termios)
		want serialdev.Settings
	}{
		{"115200", func(tio *unix.Termios) {
			tio.Cflag &^= unix.CBAUD
			tio.Cflag |= unix.B115200
		}, serialdev.Settings{BaudRate: 115200, DataBits: 8}},
		{"custom 250000 2 stop bits", func(tio *unix.Termios) {
			tio.Cflag &^= unix.CBAUD
			tio.Cflag |= unix.BOTHER | unix.CSTOPB
			tio.Ispeed, tio.Ospeed = 250000, 250000
		}, serialdev.Settings{BaudRate: 250000, DataBits: 8, StopBits: serialdev.Stop2}},
		{"rtscts", func(tio *unix.Termios) {
			tio.Cflag |= unix.CRTSCTS
		}, serialdev.Settings{BaudRate: 250000, DataBits: 8, StopBits: serialdev.Stop2, OutFlow: serialdev.FlowRTSCTS, InFlow: serialdev.FlowRTSCTS}},
		{"xonxoff 57600 lflag cleared", func(tio *unix.Termios) {
			// A termios built from scratch clears EXTPROC: the change must
			// still be seen, and so must the next one.
			tio.Cflag &^= unix.CBAUD | unix.CSTOPB | unix.CRTSCTS
			tio.Cflag |= unix.B57600
			tio.Iflag |= unix.IXON | unix.IXOFF
			tio.Lflag = 0
		}, serialdev.Settings{BaudRate: 57600, DataBits: 8, OutFlow: serialdev.FlowXonXoff, InFlow: serialdev.FlowXonXoff}},
		{"baud alone after EXTPROC was cleared", func(tio *unix.Termios) {
			tio.Cflag &^= unix.CBAUD
			tio.Cflag |= unix.B4800
		}, serialdev.Settings{BaudRate: 4800, DataBits: 8, OutFlow: serialdev.FlowXonXoff, InFlow: serialdev.FlowXonXoff}},
		{"after EXTPROC was cleared 9600", func(tio *unix.Termios) {
			tio.Cflag &^= unix.CBAUD
			tio.Cflag |= unix.B9600
			tio.Iflag &^= unix.IXON | unix.IXOFF
		}, serialdev.Settings{BaudRate: 9600, DataBits: 8}},
		{"7E1 is forced to 8N1 by the pty", func(tio *unix.Termios) {
			tio.Cflag &^= unix.CBAUD | unix.CSIZE
			tio.Cflag |= unix.B19200 | unix.CS7 | unix.PARENB
		}, serialdev.Settings{BaudRate: 19200, DataBits: 8}},
	}
	p := openPty(t, "")
	drain(t, p)
	prog := openProgram(t, p.SlavePath())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			programTermios(t, prog, tt.set)
			took := waitChange(t, p, time.Second, func(c Changes) bool { return c.Settings })
			if took > 50*time.Millisecond {
				t.Errorf("settings event took %v, want <= 50ms", took)
			}
			got, err := p.Settings()
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("Settings() = %v %+v, want %v", got, got, tt.want)
			}
		})
	}
}

func TestFlushEvents(t *testing.T) {
	tests := []struct {
		queue int
		want  serialdev.Purge
	}{
		{unix.TCIFLUSH, serialdev.PurgeReceive},
		{unix.TCOFLUSH, serialdev.PurgeTransmit},
		{unix.TCIOFLUSH, serialdev.PurgeBoth},
	}
	p := openPty(t, "")
	drain(t, p)
	prog := openProgram(t, p.SlavePath())
	for _, tt := range tests {
		err := control(prog, func(fd int) error { return unix.IoctlSetInt(fd, unix.TCFLSH, tt.queue) })
		if err != nil {
			t.Fatal(err)
		}
		var got serialdev.Purge
		waitChange(t, p, time.Second, func(c Changes) bool { got |= c.Purge; return got == tt.want })
	}
}

func TestOpenCounting(t *testing.T) {
	p := openPty(t, "")
	if p.Opens() != 0 {
		t.Fatalf("Opens() = %d before any program, want 0 (our own slave fd must not count)", p.Opens())
	}
	waitOpens := func(want int) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for p.Opens() != want {
			if time.Now().After(deadline) {
				t.Fatalf("Opens() = %d, want %d", p.Opens(), want)
			}
			select {
			case <-p.Changed():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	a := openProgram(t, p.SlavePath())
	waitOpens(1)
	if dtr, rts, ok := p.Lines(); !dtr || !rts || !ok {
		t.Fatalf("Lines() = %v %v %v with a program, want raised", dtr, rts, ok)
	}
	b, err := os.Open(p.SlavePath()) // read-only: IN_CLOSE_NOWRITE
	if err != nil {
		t.Fatal(err)
	}
	waitOpens(2)
	a.Close()
	waitOpens(1)
	b.Close()
	waitOpens(0)
	if c := p.TakeChanges(); !c.Lines {
		t.Log("Lines change already taken")
	}
	if dtr, _, ok := p.Lines(); dtr || !ok {
		t.Fatalf("Lines() dtr=%v ok=%v after last close, want dropped", dtr, ok)
	}
}

// SetSettings shows the program new settings without reporting them back.
func TestSetSettings(t *testing.T) {
	p := openPty(t, "")
	drain(t, p)
	prog := openProgram(t, p.SlavePath())
	want := serialdev.Settings{BaudRate: 460800, DataBits: 8, StopBits: serialdev.Stop2, OutFlow: serialdev.FlowRTSCTS, InFlow: serialdev.FlowRTSCTS}
	if err := p.SetSettings(want); err != nil {
		t.Fatal(err)
	}
	var tio *unix.Termios
	control(prog, func(fd int) (err error) { tio, err = unix.IoctlGetTermios(fd, unix.TCGETS2); return })
	if got := serialdev.TermiosSettings(tio); got != want {
		t.Fatalf("program sees %v, want %v", got, want)
	}
	select {
	case <-p.Changed():
		if c := p.TakeChanges(); c.Settings {
			t.Fatal("our own SetSettings was reported as the program's")
		}
	case <-time.After(100 * time.Millisecond):
	}
}

// OpenVirtual shows the remote's settings before the link exists.
func TestOpenVirtualShowsInitial(t *testing.T) {
	link := filepath.Join(t.TempDir(), "ttyV")
	initial := serialdev.Settings{BaudRate: 115200, DataBits: 8, StopBits: serialdev.Stop2}
	v, err := OpenVirtual(link, &initial)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	prog := openProgram(t, link)
	var tio *unix.Termios
	control(prog, func(fd int) (err error) { tio, err = unix.IoctlGetTermios(fd, unix.TCGETS2); return })
	if got := serialdev.TermiosSettings(tio); got != initial {
		t.Fatalf("program sees %v at its open, want %v", got, initial)
	}
	// Status packets are seen by Read: read until the master is quiet.
	p := v.(*Pty)
	p.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := p.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want the deadline", n, err)
	}
	if c := p.TakeChanges(); c.Settings {
		t.Fatal("the shown settings were reported as the program's")
	}
}

// Where packet mode is unavailable the settings are polled.
func TestSettingsPolling(t *testing.T) {
	p := openPty(t, "")
	if err := control(p.master, func(fd int) error { return unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 0) }); err != nil {
		t.Fatal(err)
	}
	p.packet = false
	p.wg.Add(1)
	go p.poll()
	prog := openProgram(t, p.SlavePath())
	programTermios(t, prog, func(tio *unix.Termios) {
		tio.Cflag &^= unix.CBAUD
		tio.Cflag |= unix.B230400
	})
	took := waitChange(t, p, time.Second, func(c Changes) bool { return c.Settings })
	if took > 3*pollInterval {
		t.Errorf("polled change took %v", took)
	}
	if s, _ := p.Settings(); s.BaudRate != 230400 {
		t.Fatalf("Settings() = %v", s)
	}
	// Data still flows without the status byte.
	prog.Write([]byte{0, 1, 0xff})
	if got := readFull(t, p, 3); !bytes.Equal(got, []byte{0, 1, 0xff}) {
		t.Fatalf("got %x", got)
	}
}
