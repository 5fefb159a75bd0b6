//go:build linux

package interop

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/serialdev"
)

// attachServer starts an RFC 2217 server for the device pty at addr and
// returns once it listens.
type attachServer func(t *testing.T, device, addr string) *Proc

func ser2netServer(t *testing.T, device, addr string) *Proc {
	t.Helper()
	requirePeer(t, "ser2net")
	host, port, _ := strings.Cut(addr, ":")
	// The device starts each connection at 9600, so that a speed seen
	// after a restart was set by attach.
	conf := fmt.Sprintf(`connection: &attach
  accepter: telnet(rfc2217),tcp,%s,%s
  connector: serialdev(nouucplock),%s,9600n81,local
  options:
    kickolduser: true
`, host, port, device)
	file := filepath.Join(t.TempDir(), "ser2net.yaml")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "ser2net", "-n", "-d", "-u", "-c", file)
	waitTCP(t, addr, 10*time.Second)
	return p
}

func shareServer(t *testing.T, device, addr string) *Proc {
	t.Helper()
	return startShare(t, device, addr)
}

// pyserialServer is pyserial's own RFC 2217 server (PortManager), the one
// esptool's esp_rfc2217_server is made from.
func pyserialServer(t *testing.T, device, addr string) *Proc {
	t.Helper()
	requirePeer(t, "/usr/bin/python3")
	host, port, _ := strings.Cut(addr, ":")
	p := start(t, "/usr/bin/python3", "pyserial_rfc2217_server.py", device, host, port)
	p.WaitOutput(t, "listening", 10*time.Second)
	return p
}

// Must show, against ser2net: a pty ser2net serves, sertun attach in front,
// pyserial on the link.
func TestAttachSer2net(t *testing.T) { testAttach(t, ser2netServer) }

// Must show, against sertun share.
func TestAttachShare(t *testing.T) { testAttach(t, shareServer) }

// The same against pyserial's server, which answers only what it was asked,
// refuses DTR/RTS state requests and reports modem lines once a second.
func TestAttachPyserialServer(t *testing.T) { testAttach(t, pyserialServer) }

func testAttach(t *testing.T, server attachServer) {
	requirePeer(t, "/usr/bin/python3")
	master, slave := ptyPair(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv := server(t, slave, addr)

	dir := t.TempDir()
	link := filepath.Join(dir, "ttyREMOTE")
	at := start(t, sertun(t), "attach", "rfc2217://"+addr, "--link", link, "-v")
	at.WaitOutput(t, "attached "+link, 10*time.Second)

	py := startCoproc(t, "/usr/bin/python3", "attach_pyserial.py", link)
	const step = 60 * time.Second
	do := func(format string, args ...any) string {
		t.Helper()
		py.Send(t, format, args...)
		return py.Next(t, "OK", step)
	}
	file := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	baud := func(want int) func(serialdev.Settings) bool {
		return func(s serialdev.Settings) bool { return s.BaudRate == want }
	}
	toDevice := func(what string, data []byte, d time.Duration) {
		t.Helper()
		py.Send(t, "WRITE %s", file("up", data))
		readFull(t, what, master, master.SetReadDeadline, data, d)
		py.Next(t, "OK", step)
	}
	fromDevice := func(what string, data []byte) {
		t.Helper()
		out := filepath.Join(dir, "down")
		py.Send(t, "READ %d %s", len(data), out)
		if _, err := master.Write(data); err != nil {
			t.Fatal(err)
		}
		if n := strings.Fields(py.Next(t, "OK", step)); len(n) != 2 || n[1] != strconv.Itoa(len(data)) {
			t.Fatalf("%s: the program read %v bytes, want %d", what, n, len(data))
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if sha(got) != sha(data) {
			t.Fatalf("%s: %d bytes arrived changed (first difference at %d)", what, len(data), firstDiff(got, data))
		}
	}
	binary := func(n int) []byte { return append(randomBytes(t, n), 0xff, 0xff, 0x00, '\r', '\n') }

	// pyserial opens the link at 38400: the device is at 38400 within 3 s
	// (waitSettings allows 2).
	do("OPEN 38400")
	waitSettings(t, master, "38400 after the program opened the link", baud(38400))

	toDevice("program to device", binary(16*1024), 30*time.Second)
	fromDevice("device to program", binary(16*1024))

	// The program's speed change reaches the device within 50 ms (the
	// bound is looser here, on a shared machine, and the time is logged).
	do("BAUD 115200")
	changed := time.Now()
	waitSettings(t, master, "115200 after the program changed speed", baud(115200))
	took := time.Since(changed)
	t.Logf("speed change reached the device %v after the program's tcsetattr returned", took.Round(100*time.Microsecond))
	if took > 250*time.Millisecond {
		t.Errorf("speed change took %v to reach the device, want 50 ms", took)
	}

	// Stop bits and flow control follow the program too. Flow control
	// goes back to none before more data: XON/XOFF on the device would
	// stop at the first 0x13 of it.
	settingsSteps := []struct {
		cmd  string
		what string
		ok   func(serialdev.Settings) bool
	}{
		{"SET stopbits 2", "2 stop bits", func(s serialdev.Settings) bool { return s.StopBits == serialdev.Stop2 }},
		{"SET rtscts 1", "RTS/CTS both ways", func(s serialdev.Settings) bool {
			return s.OutFlow == serialdev.FlowRTSCTS && s.InFlow == serialdev.FlowRTSCTS
		}},
		{"SET rtscts 0", "no flow control", func(s serialdev.Settings) bool {
			return s.OutFlow == serialdev.FlowNone && s.InFlow == serialdev.FlowNone
		}},
		{"SET xonxoff 1", "XON/XOFF both ways", func(s serialdev.Settings) bool {
			return s.OutFlow == serialdev.FlowXonXoff && s.InFlow == serialdev.FlowXonXoff
		}},
		{"SET xonxoff 0", "no flow control", func(s serialdev.Settings) bool {
			return s.OutFlow == serialdev.FlowNone && s.InFlow == serialdev.FlowNone
		}},
		{"SET stopbits 1", "1 stop bit at 115200", func(s serialdev.Settings) bool {
			return s.StopBits == serialdev.Stop1 && s.BaudRate == 115200
		}},
	}
	for _, st := range settingsSteps {
		do("%s", st.cmd)
		waitSettings(t, master, st.what+" after "+st.cmd, st.ok)
	}

	// The server goes away and comes back while the program keeps the
	// port open. The device is put back to 9600 meanwhile, so 115200
	// afterwards shows that attach set it again.
	srv.Stop(t)
	setDeviceBaud(t, master, 9600)
	time.Sleep(300 * time.Millisecond) // attach sees the drop and starts retrying
	srv = server(t, slave, addr)
	toDevice("program to device after the server restarted", binary(4096), 15*time.Second)
	waitSettings(t, master, "115200 again after the reconnect", baud(115200))
	fromDevice("device to program after the server restarted", binary(4096))
	at.WaitOutput(t, "reconnected", 5*time.Second)

	// The program closes and opens the link again, at another speed.
	do("CLOSE")
	do("OPEN 57600")
	waitSettings(t, master, "57600 after the program reopened", baud(57600))
	toDevice("program to device after reopening", binary(2048), 30*time.Second)
	fromDevice("device to program after reopening", binary(2048))
	do("CLOSE")

	at.Stop(t)
	if code := at.ExitCode(); code != 0 && code != -1 {
		t.Errorf("attach exited %d", code)
	}
	if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link %s still there after attach exited (%v)", link, err)
	}
	if testing.Verbose() {
		t.Logf("attach said:\n%s", at.Output())
	}
	if strings.Count(at.Output(), "connection to the remote port lost") != 1 {
		t.Errorf("want one drop logged; attach said:\n%s", at.Output())
	}
}

// setDeviceBaud sets the device pty's speed from the master side.
func setDeviceBaud(t *testing.T, master *os.File, baud uint32) {
	t.Helper()
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) {
		var tio *unix.Termios
		if tio, serr = unix.IoctlGetTermios(int(fd), unix.TCGETS2); serr != nil {
			return
		}
		tio.Cflag &^= unix.CBAUD
		tio.Cflag |= unix.BOTHER
		tio.Ispeed, tio.Ospeed = baud, baud
		serr = unix.IoctlSetTermios(int(fd), unix.TCSETS2, tio)
	})
	if serr != nil {
		t.Fatalf("set device speed: %v", serr)
	}
}

// attach refuses to replace what is not a stale link, with a one-line
// error, and replaces a stale one.
func TestAttachLinkRules(t *testing.T) {
	_, slave := ptyPair(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startShare(t, slave, addr)
	dir := t.TempDir()

	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("precious"), 0o644)
	p := start(t, sertun(t), "attach", addr, "--link", file)
	if code := p.Wait(t, 10*time.Second); code != 1 {
		t.Fatalf("attach over a regular file exited %d, want 1: %s", code, p.Output())
	}
	if out := strings.TrimSpace(p.Output()); strings.Count(out, "\n") != 0 || !strings.HasPrefix(out, "sertun: ") || !strings.Contains(out, "not a symlink") {
		t.Errorf("want one line saying why, got %q", out)
	}
	if b, _ := os.ReadFile(file); string(b) != "precious" {
		t.Fatal("attach changed the file")
	}

	stale := filepath.Join(dir, "stale")
	os.Symlink("/dev/pts/999999", stale)
	a := start(t, sertun(t), "attach", addr, "--link", stale)
	a.WaitOutput(t, "attached "+stale, 10*time.Second)
	if target, err := os.Readlink(stale); err != nil || !strings.HasPrefix(target, "/dev/pts/") || target == "/dev/pts/999999" {
		t.Fatalf("stale link -> %q (%v), want the new pty", target, err)
	}
	a.Stop(t)
	if _, err := os.Lstat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("link still there after attach exited (%v)", err)
	}
	// Closing the terminal or ssh session that runs attach sends SIGHUP.
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGHUP} {
		link := filepath.Join(dir, "ttyS"+strconv.Itoa(int(sig)))
		a := start(t, sertun(t), "attach", addr, "--link", link)
		a.WaitOutput(t, "attached "+link, 10*time.Second)
		a.kill(sig)
		if code := a.Wait(t, 5*time.Second); code != 0 {
			t.Errorf("attach exited %d on %v, want 0: %s", code, sig, a.Output())
		}
		if _, err := os.Lstat(link); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("link still there after %v (%v)", sig, err)
		}
	}
	// Under nohup a hang-up is ignored, as nohup asks.
	if _, err := exec.LookPath("nohup"); err == nil {
		link := filepath.Join(dir, "ttyNohup")
		a := start(t, "nohup", sertun(t), "attach", addr, "--link", link)
		a.WaitOutput(t, "attached "+link, 10*time.Second)
		a.kill(syscall.SIGHUP)
		time.Sleep(300 * time.Millisecond)
		if _, err := os.Lstat(link); err != nil {
			t.Errorf("attach under nohup ended on SIGHUP (link: %v): %s", err, a.Output())
		}
		a.Stop(t)
	}

	bad := start(t, sertun(t), "attach", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--link", filepath.Join(dir, "x"))
	if code := bad.Wait(t, 10*time.Second); code != 1 || !strings.Contains(bad.Output(), "refused") {
		t.Fatalf("attach to a closed port: exit %d, %q", code, bad.Output())
	}
	if _, err := os.Lstat(filepath.Join(dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a failed attach left its link")
	}
}

// --data and --parity set what a pty cannot carry on the remote port, and
// the program's speed still follows it. The device is a loopback that keeps
// every setting (a pty, as the other tests use, is always 8N on Linux),
// so what shows is what the server answered: its device's settings read
// back.
func TestAttachForcedFormat(t *testing.T) {
	requirePeer(t, "/usr/bin/python3")
	for _, tt := range []struct {
		name   string
		server attachServer
		device string
	}{
		{"share", shareServer, "loop://"},
		{"pyserial", pyserialServer, "loop://"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			tt.server(t, tt.device, addr)
			link := filepath.Join(t.TempDir(), "ttyREMOTE")
			at := start(t, sertun(t), "attach", addr, "--link", link, "--data", "7", "--parity", "even", "-v")
			at.WaitOutput(t, "attached "+link, 10*time.Second)
			py := startCoproc(t, "/usr/bin/python3", "attach_pyserial.py", link)
			py.Send(t, "OPEN 19200")
			py.Next(t, "OK", 30*time.Second)
			at.WaitOutput(t, `msg="attach: settings sent to the remote" remote=`+addr+` settings="19200 7E1"`, 5*time.Second)
			py.Send(t, "CLOSE")
			py.Next(t, "OK", 30*time.Second)
			at.Stop(t)
			if strings.Contains(at.Output(), "server keeps other settings") {
				t.Errorf("the server did not take 7E1:\n%s", at.Output())
			}
		})
	}
}
