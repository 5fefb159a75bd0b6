//go:build linux

// Package interop runs sertun against the real peers its users run: pyserial,
// gensio's gensiot, ser2net, socat, telnet and raw TCP clients. The device ends
// are pty pairs held by the test or the built-in loop:// port.
//
// The peers come from Debian packages (scripts/test.sh installs them). In CI
// (env CI set) a missing peer is a failure; elsewhere the test is skipped.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/serialdev"
)

// The sertun binary, built once for the whole package by TestMain.
var (
	sertunBin      string
	sertunBuildErr error
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "sertun-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	sertunBin, sertunBuildErr = buildSertun(dir)
	return m.Run()
}

// buildSertun builds ./cmd/sertun without -race: the binary is a peer here,
// and the race detector would only slow the interop runs down.
func buildSertun(dir string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(dir, "sertun")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/sertun")
	cmd.Dir = filepath.Join("..", "..") // the module root, seen from scripts/interop
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/sertun: %w\n%s", err, out)
	}
	return bin, nil
}

// sertun returns the path of the sertun binary built in TestMain.
func sertun(t *testing.T) string {
	t.Helper()
	if sertunBuildErr != nil {
		t.Fatal(sertunBuildErr)
	}
	return sertunBin
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a child's stdout and stderr, written from the
// goroutines os/exec starts and read from the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Proc is a child process started by the test, in its own process group so
// that whatever it starts dies with it. It is killed in t.Cleanup.
type Proc struct {
	name string
	cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done is closed
}

// start runs name with args, stdin from /dev/null, stdout and stderr
// captured together.
func start(t *testing.T, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{name: filepath.Base(name), done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	p.run(t, args)
	return p
}

// run starts p.cmd in its own process group and arranges its end.
func (p *Proc) run(t *testing.T, args []string) {
	t.Helper()
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("output of %s %s:\n%s", p.name, strings.Join(args, " "), p.Output())
		}
	})
}

// Coproc is a child process that the test talks to line by line: the test
// writes its stdin and reads its stdout one line at a time; stderr goes to
// Output. Python scripts that need the test to act on the device between
// their steps run this way.
type Coproc struct {
	*Proc
	stdin io.WriteCloser
	lines chan string // stdout, line by line; closed at EOF
}

// startPiped is start with stdin and stdout as pipes to the test (stderr
// goes to Output), for peers that move data through their stdio.
func startPiped(t *testing.T, name string, args ...string) (p *Proc, stdin io.WriteCloser, stdout io.Reader) {
	t.Helper()
	p = &Proc{name: filepath.Base(name), done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Stderr = &p.out
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err = p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.run(t, args)
	return p, stdin, stdout
}

// startCoproc is start with stdin and stdout as line pipes to the test.
func startCoproc(t *testing.T, name string, args ...string) *Coproc {
	t.Helper()
	p, stdin, stdout := startPiped(t, name, args...)
	c := &Coproc{Proc: p, stdin: stdin, lines: make(chan string, 64)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	return c
}

// Send writes one line to the process's stdin.
func (c *Coproc) Send(t *testing.T, format string, args ...any) {
	t.Helper()
	if _, err := fmt.Fprintf(c.stdin, format+"\n", args...); err != nil {
		t.Fatalf("%s: write stdin: %v; output:\n%s", c.name, err, c.Output())
	}
}

// Next returns the next line of stdout, failing t when none comes within d
// or it does not start with prefix.
func (c *Coproc) Next(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			select {
			case <-c.done:
				t.Fatalf("%s ended (%v) while the test waited for %q; stderr:\n%s", c.name, c.err, prefix, c.Output())
			case <-time.After(time.Second):
				t.Fatalf("%s closed stdout while the test waited for %q; stderr:\n%s", c.name, prefix, c.Output())
			}
		}
		if !strings.HasPrefix(line, prefix) {
			t.Fatalf("%s said %q, want a line starting %q; stderr:\n%s", c.name, line, prefix, c.Output())
		}
		return line
	case <-time.After(d):
		t.Fatalf("%s said nothing within %v while the test waited for %q; stderr:\n%s", c.name, d, prefix, c.Output())
	}
	return ""
}

// CloseStdin closes the process's stdin (an EOF for it).
func (c *Coproc) CloseStdin() { c.stdin.Close() }

// kill signals the whole process group.
func (p *Proc) kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Output returns stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

// WaitOutput waits until the output contains substr, failing t after d or
// when the process exits without printing it.
func (p *Proc) WaitOutput(t *testing.T, substr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if strings.Contains(p.Output(), substr) {
			return
		}
		select {
		case <-p.done:
			if strings.Contains(p.Output(), substr) {
				return
			}
			t.Fatalf("%s exited (%v) before printing %q; output:\n%s", p.name, p.err, substr, p.Output())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %v; output:\n%s", p.name, substr, d, p.Output())
		}
	}
}

// Wait waits up to d for the process to exit by itself and returns its exit
// code, failing t on timeout.
func (p *Proc) Wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s still running after %v; output:\n%s", p.name, d, p.Output())
	}
	return p.ExitCode()
}

// ExitCode is the exit status once the process has exited: -1 when a signal
// ended it.
func (p *Proc) ExitCode() int {
	select {
	case <-p.done:
	default:
		panic("interop: ExitCode called on a running process")
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -1
	}
	return 0
}

// Stop sends SIGTERM, then SIGKILL after 5s, and waits for the exit.
func (p *Proc) Stop(t *testing.T) {
	t.Helper()
	p.kill(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Errorf("%s ignored SIGTERM for 5s; killing it", p.name)
		p.kill(syscall.SIGKILL)
		<-p.done
	}
}

// waitTCP waits until addr accepts a TCP connection.
func waitTCP(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after %v: %v", addr, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ptyPair opens a pseudo-terminal in raw mode. The test reads and writes the
// master; the program under test opens slavePath. The test also holds the
// slave open, so the master does not fail with EIO between sessions. Both
// are closed in t.Cleanup.
func ptyPair(t *testing.T) (master *os.File, slavePath string) {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() {
		m.Close()
		s.Close()
	})
	// pty.Open calls Fd(), which leaves the master blocking: deadlines and
	// Close would not work. Put it back under the poller through the raw
	// conn, and never call Fd().
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetNonblock(int(fd), true); serr != nil {
			return
		}
		var tio *unix.Termios
		if tio, serr = unix.IoctlGetTermios(int(fd), unix.TCGETS); serr != nil {
			return
		}
		makeRaw(tio)
		serr = unix.IoctlSetTermios(int(fd), unix.TCSETS, tio)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		t.Fatalf("pty master: %v", err)
	}
	return m, s.Name()
}

// makeRaw is cfmakeraw(3).
func makeRaw(tio *unix.Termios) {
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL
	tio.Cc[unix.VMIN] = 1
	tio.Cc[unix.VTIME] = 0
}

// ptySettings reads the settings in force on the pty through its master
// (TCGETS2 on the master returns the slave's termios).
func ptySettings(t *testing.T, master *os.File) serialdev.Settings {
	t.Helper()
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var tio *unix.Termios
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		tio, ierr = unix.IoctlGetTermios(int(fd), unix.TCGETS2)
	}); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatalf("TCGETS2: %v", ierr)
	}
	s := termiosSettings(tio)
	// Programs that read the port with plain TCGETS (cfgetospeed, Python's
	// termios.tcgetattr) see only the Bnnn code: a standard rate must be
	// set as its code, not as BOTHER.
	for code, rate := range baudCodes {
		if rate == s.BaudRate && tio.Cflag&unix.CBAUD != code {
			t.Errorf("device at %d baud shows CBAUD %#x to TCGETS readers, want B%d (%#x)", rate, tio.Cflag&unix.CBAUD, rate, code)
		}
	}
	return s
}

// Baud rates by their Bnnn code, for a kernel that leaves c_ospeed zero.
var baudCodes = map[uint32]int{
	unix.B50: 50, unix.B75: 75, unix.B110: 110, unix.B134: 134, unix.B150: 150,
	unix.B200: 200, unix.B300: 300, unix.B600: 600, unix.B1200: 1200, unix.B1800: 1800,
	unix.B2400: 2400, unix.B4800: 4800, unix.B9600: 9600, unix.B19200: 19200,
	unix.B38400: 38400, unix.B57600: 57600, unix.B115200: 115200, unix.B230400: 230400,
	unix.B460800: 460800, unix.B500000: 500000, unix.B576000: 576000, unix.B921600: 921600,
	unix.B1000000: 1000000, unix.B1152000: 1152000, unix.B1500000: 1500000,
	unix.B2000000: 2000000, unix.B2500000: 2500000, unix.B3000000: 3000000,
	unix.B3500000: 3500000, unix.B4000000: 4000000,
}

// termiosSettings decodes the kernel's view of a device on its own, not
// through serialdev, so that the interop tests check serialdev rather
// than agree with it.
func termiosSettings(tio *unix.Termios) serialdev.Settings {
	var s serialdev.Settings
	s.BaudRate = int(tio.Ospeed)
	if code := tio.Cflag & unix.CBAUD; code != unix.BOTHER && s.BaudRate == 0 {
		s.BaudRate = baudCodes[code]
	}
	switch tio.Cflag & unix.CSIZE {
	case unix.CS5:
		s.DataBits = 5
	case unix.CS6:
		s.DataBits = 6
	case unix.CS7:
		s.DataBits = 7
	default:
		s.DataBits = 8
	}
	switch odd := tio.Cflag&unix.PARODD != 0; {
	case tio.Cflag&unix.PARENB == 0:
		s.Parity = serialdev.ParityNone
	case tio.Cflag&unix.CMSPAR != 0 && odd:
		s.Parity = serialdev.ParityMark
	case tio.Cflag&unix.CMSPAR != 0:
		s.Parity = serialdev.ParitySpace
	case odd:
		s.Parity = serialdev.ParityOdd
	default:
		s.Parity = serialdev.ParityEven
	}
	if tio.Cflag&unix.CSTOPB != 0 {
		s.StopBits = serialdev.Stop2
	}
	if tio.Cflag&unix.CRTSCTS != 0 {
		s.OutFlow, s.InFlow = serialdev.FlowRTSCTS, serialdev.FlowRTSCTS
	}
	if tio.Iflag&unix.IXON != 0 {
		s.OutFlow = serialdev.FlowXonXoff
	}
	if tio.Iflag&unix.IXOFF != 0 {
		s.InFlow = serialdev.FlowXonXoff
	}
	return s
}

// requirePeer skips the test when bin is not installed, or fails it in CI.
// For a python interpreter it also asks for pyserial.
func requirePeer(t *testing.T, bin string) {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + " (scripts/test.sh installs the test peers)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		missing("peer %s not installed", bin)
	}
	if strings.HasPrefix(filepath.Base(path), "python") {
		if out, err := exec.Command(path, "-c", "import serial").CombinedOutput(); err != nil {
			missing("pyserial missing for %s: %s", path, bytes.TrimSpace(out))
		}
	}
}

// python runs /usr/bin/python3 scripts/interop/<script> args..., failing t
// when it exits non-zero or runs longer than d. It returns stdout.
func python(t *testing.T, d time.Duration, script string, args ...string) string {
	t.Helper()
	const py = "/usr/bin/python3"
	requirePeer(t, py)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{script}, args...)...)
	var stdout, stderr lockedBuffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after %v\nstdout:\n%s\nstderr:\n%s", script, strings.Join(args, " "), d, stdout.String(), stderr.String())
	}
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", script, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// The harness checks itself: a test of the tests that would otherwise pass
// for the wrong reason.
func TestHarnessPty(t *testing.T) {
	master, slavePath := ptyPair(t)

	// Deadlines work on the master: it is back under the poller.
	if err := master.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := master.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read on an idle master: %v, want a deadline error", err)
	}
	master.SetReadDeadline(time.Time{})

	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	rc, err := slave.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		set   func(*unix.Termios)
		check func(serialdev.Settings) bool
	}{
		{"57600", func(tio *unix.Termios) { setSpeed(tio, unix.B57600, 57600) },
			func(s serialdev.Settings) bool { return s.BaudRate == 57600 && s.StopBits == serialdev.Stop1 }},
		{"odd speed, 2 stop", func(tio *unix.Termios) { setSpeed(tio, unix.BOTHER, 123457); tio.Cflag |= unix.CSTOPB },
			func(s serialdev.Settings) bool { return s.BaudRate == 123457 && s.StopBits == serialdev.Stop2 }},
		{"rtscts", func(tio *unix.Termios) { tio.Cflag |= unix.CRTSCTS },
			func(s serialdev.Settings) bool {
				return s.OutFlow == serialdev.FlowRTSCTS && s.InFlow == serialdev.FlowRTSCTS
			}},
		{"xon out", func(tio *unix.Termios) { tio.Iflag |= unix.IXON },
			func(s serialdev.Settings) bool {
				return s.OutFlow == serialdev.FlowXonXoff && s.InFlow == serialdev.FlowNone
			}},
	}
	for _, tt := range tests {
		var ierr error
		if err := rc.Control(func(fd uintptr) {
			var tio *unix.Termios
			if tio, ierr = unix.IoctlGetTermios(int(fd), unix.TCGETS2); ierr != nil {
				return
			}
			tio.Cflag &^= unix.CSTOPB | unix.CRTSCTS
			tio.Iflag &^= unix.IXON | unix.IXOFF
			tt.set(tio)
			ierr = unix.IoctlSetTermios(int(fd), unix.TCSETS2, tio)
		}); err != nil || ierr != nil {
			t.Fatalf("%s: set termios: %v %v", tt.name, err, ierr)
		}
		if got := ptySettings(t, master); !tt.check(got) {
			t.Errorf("%s: ptySettings = %+v", tt.name, got)
		}
	}
}

func setSpeed(tio *unix.Termios, code uint32, baud uint32) {
	tio.Cflag = tio.Cflag&^unix.CBAUD | code
	tio.Ispeed, tio.Ospeed = baud, baud
}

func TestHarnessProc(t *testing.T) {
	// The grandchild must die with the group: Stop may not leave it behind.
	p := start(t, "/bin/sh", "-c", "sleep 60 & echo started $!; wait")
	p.WaitOutput(t, "started", 5*time.Second)
	var child int
	if _, err := fmt.Sscanf(strings.TrimSpace(p.Output()), "started %d", &child); err != nil {
		t.Fatalf("output %q: %v", p.Output(), err)
	}
	begin := time.Now()
	p.Stop(t)
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("Stop took %v", d)
	}
	deadline := time.Now().Add(2 * time.Second)
	for unix.Kill(child, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still running after Stop", child)
		}
		time.Sleep(10 * time.Millisecond)
	}

	q := start(t, "/bin/sh", "-c", "echo bye; exit 3")
	if code := q.Wait(t, 5*time.Second); code != 3 || !strings.Contains(q.Output(), "bye") {
		t.Errorf("exit %d, output %q; want 3 and bye", code, q.Output())
	}
}

// termiosSettings maps what a pty cannot hold (it forces CS8, clears PARENB)
// as well; the table checks those bits directly.
func TestHarnessTermiosSettings(t *testing.T) {
	tests := []struct {
		cflag, iflag uint32
		ospeed       uint32
		want         string
	}{
		{unix.CS8 | unix.B9600, 0, 0, "9600 8N1"},
		{unix.CS8 | unix.BOTHER, 0, 250000, "250000 8N1"},
		{unix.CS7 | unix.PARENB | unix.B19200, 0, 19200, "19200 7E1"},
		{unix.CS7 | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.B19200, 0, 19200, "19200 7O2"},
		{unix.CS5 | unix.PARENB | unix.PARODD | unix.CMSPAR | unix.B300, 0, 300, "300 5M1"},
		{unix.CS6 | unix.PARENB | unix.CMSPAR | unix.B300, 0, 300, "300 6S1"},
		{unix.CS8 | unix.CRTSCTS | unix.B115200, 0, 115200, "115200 8N1 rtscts"},
		{unix.CS8 | unix.B115200, unix.IXON | unix.IXOFF, 115200, "115200 8N1 xonxoff"},
		{unix.CS8 | unix.B115200, unix.IXOFF, 115200, "115200 8N1 out:none in:xonxoff"},
	}
	for _, tt := range tests {
		got := termiosSettings(&unix.Termios{Cflag: tt.cflag, Iflag: tt.iflag, Ospeed: tt.ospeed}).String()
		if got != tt.want {
			t.Errorf("cflag %#x iflag %#x ospeed %d: %s, want %s", tt.cflag, tt.iflag, tt.ospeed, got, tt.want)
		}
	}
}
