//go:build linux

package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sertun/sertun/serialdev"
)

// startShare runs "sertun share DEVICE LISTEN..." and waits for its
// "serving" line.
func startShare(t *testing.T, device string, listen ...string) *Proc {
	t.Helper()
	p := start(t, sertun(t), append([]string{"share", device}, listen...)...)
	p.WaitOutput(t, "serving "+device+" on ", 10*time.Second)
	return p
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readFull reads len(want) bytes from r within d and compares them.
func readFull(t *testing.T, what string, r io.Reader, setDeadline func(time.Time) error, want []byte, d time.Duration) {
	t.Helper()
	got, err := readN(r, setDeadline, len(want), d)
	if err != nil {
		t.Fatalf("%s: read %d of %d bytes: %v", what, len(got), len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes arrived changed (first difference at %d)", what, len(want), firstDiff(got, want))
	}
}

func readN(r io.Reader, setDeadline func(time.Time) error, n int, d time.Duration) ([]byte, error) {
	if setDeadline != nil {
		if err := setDeadline(time.Now().Add(d)); err != nil {
			return nil, err
		}
		defer setDeadline(time.Time{})
	}
	buf := make([]byte, n)
	k, err := io.ReadFull(r, buf)
	return buf[:k], err
}

// snippet is up to 16 bytes of b from i.
func snippet(b []byte, i int) []byte { return b[i:min(i+16, len(b))] }

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// waitSettings polls the pty until its settings satisfy ok.
func waitSettings(t *testing.T, master *os.File, what string, ok func(serialdev.Settings) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s := ptySettings(t, master)
		if ok(s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device settings %v, want %s", s, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Must show: pyserial's rfc2217 client against sertun share on a pty. The
// script (share_pyserial_pty.py) asks the test to check the device side at
// each step.
func TestSharePyserialPty(t *testing.T) {
	requirePeer(t, "/usr/bin/python3")
	master, slave := ptyPair(t)
	port := freePort(t)
	startShare(t, slave, fmt.Sprintf("127.0.0.1:%d", port))

	py := startCoproc(t, "/usr/bin/python3", "share_pyserial_pty.py", strconv.Itoa(port))
	const step = 30 * time.Second
	sends, recvs := 0, 0
	for {
		line := py.Next(t, "", step)
		f := strings.Fields(line)
		switch {
		case line == "DONE":
			if code := py.Wait(t, 10*time.Second); code != 0 {
				t.Fatalf("share_pyserial_pty.py exited %d: %s", code, py.Output())
			}
			if sends != 2 || recvs != 2 {
				t.Fatalf("script moved data %d+%d times, want 2+2", sends, recvs)
			}
			return

		case len(f) == 5 && f[0] == "CHECK" && f[1] == "settings":
			// CHECK settings BAUD STOP FLOW: what the client asked for is
			// what the device runs.
			baud, _ := strconv.Atoi(f[2])
			stop := map[string]serialdev.StopBits{"1": serialdev.Stop1, "2": serialdev.Stop2}[f[3]]
			flow := map[string]serialdev.Flow{"none": serialdev.FlowNone, "rtscts": serialdev.FlowRTSCTS}[f[4]]
			waitSettings(t, master, strings.Join(f[2:], " "), func(s serialdev.Settings) bool {
				return s.BaudRate == baud && s.StopBits == stop && s.OutFlow == flow && s.InFlow == flow
			})
			py.Send(t, "OK")

		case len(f) == 3 && f[0] == "SEND":
			// SEND N SHA, then CHECK sent: the client's bytes reach the
			// device intact.
			n, _ := strconv.Atoi(f[1])
			got, err := readN(master, master.SetReadDeadline, n, step)
			if err != nil {
				t.Fatalf("device got %d of %d bytes from the client: %v", len(got), n, err)
			}
			if sha(got) != f[2] {
				t.Fatalf("%d bytes from the client arrived changed", n)
			}
			py.Next(t, "CHECK sent", step)
			py.Send(t, "OK")
			sends++

		case line == "CHECK recv":
			// The device's bytes reach the client intact.
			data := append(randomBytes(t, 32*1024), bytes.Repeat([]byte{0xff}, 512)...)
			py.Send(t, "OK %d %s", len(data), sha(data))
			if _, err := master.Write(data); err != nil {
				t.Fatalf("write to the device: %v", err)
			}
			recvs++

		default:
			t.Fatalf("share_pyserial_pty.py said %q", line)
		}
	}
}

// Must show: pyserial against sertun share loop://: 19200 7E1, echo, modem
// lines, break and purges (all checked in share_pyserial_loop.py).
func TestSharePyserialLoop(t *testing.T) {
	requirePeer(t, "/usr/bin/python3")
	port := freePort(t)
	startShare(t, "loop://", fmt.Sprintf("127.0.0.1:%d", port))
	out := python(t, 60*time.Second, "share_pyserial_loop.py", strconv.Itoa(port))
	if strings.TrimSpace(out) != "OK" {
		t.Fatalf("share_pyserial_loop.py printed %q, want OK", out)
	}
}

// gensio's client, as ser2net users connect, moves data both ways.
func TestShareGensiot(t *testing.T) {
	requirePeer(t, "gensiot")
	master, slave := ptyPair(t)
	port := freePort(t)
	startShare(t, slave, fmt.Sprintf("127.0.0.1:%d", port))

	p, stdin, stdout := startPiped(t, "gensiot", "-e", "-1", fmt.Sprintf("telnet(rfc2217),tcp,127.0.0.1,%d", port))
	// Client to device first: its arrival shows the session is up, so the
	// device's bytes cannot be sent before sertun opened the device.
	up := append(randomBytes(t, 64*1024), bytes.Repeat([]byte{0xff}, 512)...)
	werr := make(chan error, 1)
	go func() { _, err := stdin.Write(up); werr <- err }()
	readFull(t, "gensiot to device", master, master.SetReadDeadline, up, 30*time.Second)
	if err := <-werr; err != nil {
		t.Fatalf("write to gensiot: %v", err)
	}

	down := append(randomBytes(t, 64*1024), bytes.Repeat([]byte{0xff}, 512)...)
	if _, err := master.Write(down); err != nil {
		t.Fatal(err)
	}
	got, err := readWithin(stdout, len(down), 30*time.Second)
	if err != nil || !bytes.Equal(got, down) {
		t.Fatalf("device to gensiot: %d of %d bytes, equal %v, err %v; gensiot said: %s",
			len(got), len(down), bytes.Equal(got, down), err, p.Output())
	}
	stdin.Close()
}

// readWithin reads n bytes from a reader without deadlines (a pipe from a
// child), giving up after d.
func readWithin(r io.Reader, n int, d time.Duration) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b := make([]byte, n)
		k, err := io.ReadFull(r, b)
		ch <- result{b[:k], err}
	}()
	select {
	case res := <-ch:
		return res.b, res.err
	case <-time.After(d):
		// The reader goroutine ends when the child is killed in cleanup.
		return nil, fmt.Errorf("timed out after %v", d)
	}
}

// raw:// moves bytes as they are, 0xFF included, with no telnet framing.
func TestShareRaw(t *testing.T) {
	master, slave := ptyPair(t)
	port := freePort(t)
	startShare(t, slave, fmt.Sprintf("raw://127.0.0.1:%d", port))

	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up := append(bytes.Repeat([]byte{0xff, 0xfd, 0x2c}, 200), randomBytes(t, 64*1024)...)
	go c.Write(up)
	readFull(t, "client to device", master, master.SetReadDeadline, up, 30*time.Second)

	down := append(bytes.Repeat([]byte{0xff}, 512), randomBytes(t, 64*1024)...)
	go master.Write(down)
	readFull(t, "device to client", c, c.SetReadDeadline, down, 30*time.Second)
}

// refuser is a telnet client that refuses every option, COM-PORT-OPTION and
// BINARY included: a plain telnet user. It decodes NVT data (IAC IAC, CR NUL)
// and answers each DO with WONT and each WILL with DONT.
type refuser struct {
	conn net.Conn
	r    *bufio.Reader

	mu        sync.Mutex
	comPortSB int             // subnegotiations of COM-PORT-OPTION received (must stay 0)
	refused   map[[2]byte]int // requests refused, by command and option
}

// hasRefused reports whether the server asked for cmd opt and was refused.
func (c *refuser) hasRefused(cmd, opt byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refused[[2]byte{cmd, opt}] > 0
}

const (
	iac  = 255
	dont = 254
	do   = 253
	wont = 252
	will = 251
	sb   = 250
	se   = 240
)

// read returns the next n data bytes, answering negotiation on the way.
func (c *refuser) read(n int) ([]byte, error) {
	var data []byte
	for len(data) < n {
		b, err := c.r.ReadByte()
		if err != nil {
			return data, err
		}
		switch {
		case b == '\r':
			next, err := c.r.ReadByte()
			if err != nil {
				return data, err
			}
			switch next {
			case 0:
				data = append(data, '\r')
			case '\n':
				data = append(data, '\r', '\n')
			default:
				return data, fmt.Errorf("CR followed by %#x in non-binary mode", next)
			}
		case b != iac:
			data = append(data, b)
		default:
			cmd, err := c.r.ReadByte()
			if err != nil {
				return data, err
			}
			switch cmd {
			case iac:
				data = append(data, iac)
			case do, will:
				opt, err := c.r.ReadByte()
				if err != nil {
					return data, err
				}
				answer := byte(wont)
				if cmd == will {
					answer = dont
				}
				if _, err := c.conn.Write([]byte{iac, answer, opt}); err != nil {
					return data, err
				}
				c.mu.Lock()
				c.refused[[2]byte{cmd, opt}]++
				c.mu.Unlock()
			case dont, wont:
				if _, err := c.r.ReadByte(); err != nil {
					return data, err
				}
			case sb:
				opt, err := c.r.ReadByte()
				if err != nil {
					return data, err
				}
				if opt == 44 {
					c.mu.Lock()
					c.comPortSB++
					c.mu.Unlock()
				}
				if err := c.skipSB(); err != nil {
					return data, err
				}
			}
		}
	}
	return data, nil
}

func (c *refuser) skipSB() error {
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			return err
		}
		if b != iac {
			continue
		}
		b, err = c.r.ReadByte()
		if err != nil {
			return err
		}
		if b == se {
			return nil
		}
	}
}

// nvt encodes data for a peer not in binary mode: IAC doubled, a CR not
// followed by LF sent as CR NUL.
func nvt(data []byte) []byte {
	var out []byte
	for i, b := range data {
		switch {
		case b == iac:
			out = append(out, iac, iac)
		case b == '\r' && (i+1 == len(data) || data[i+1] != '\n'):
			out = append(out, '\r', 0)
		default:
			out = append(out, b)
		}
	}
	return out
}

// A telnet client that refuses COM-PORT-OPTION (and BINARY) still gets the
// data stream, in NVT form both ways, and no COM-PORT subnegotiation.
func TestShareTelnetRefusesComPort(t *testing.T) {
	master, slave := ptyPair(t)
	port := freePort(t)
	startShare(t, slave, fmt.Sprintf("127.0.0.1:%d", port))

	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &refuser{conn: conn, r: bufio.NewReader(conn), refused: map[[2]byte]int{}}

	// The reader answers negotiation while the test writes.
	down := []byte("login: \r\nline two\rover\xff\xffend\r\n")
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	go func() {
		b, err := c.read(len(down))
		got <- result{b, err}
	}()

	// Data typed before the negotiation settles is taken as binary (pyserial
	// sends CR without NUL then); a telnet user types after the client has
	// refused BINARY, which our answers on the same stream now stand before.
	const binary = 0
	deadline := time.Now().Add(5 * time.Second)
	for !c.hasRefused(do, binary) || !c.hasRefused(will, binary) {
		if time.Now().After(deadline) {
			t.Fatalf("server did not ask for BINARY both ways within 5s (asked for DO %v, WILL %v)",
				c.hasRefused(do, binary), c.hasRefused(will, binary))
		}
		time.Sleep(5 * time.Millisecond)
	}
	up := []byte("root\r\nls\rx\xffy\r\n")
	if _, err := conn.Write(nvt(up)); err != nil {
		t.Fatal(err)
	}
	readFull(t, "telnet client to device", master, master.SetReadDeadline, up, 20*time.Second)

	if _, err := master.Write(down); err != nil {
		t.Fatal(err)
	}
	res := <-got
	if res.err != nil || !bytes.Equal(res.b, down) {
		t.Fatalf("device to telnet client: got %q, %v; want %q", res.b, res.err, down)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.comPortSB != 0 {
		t.Errorf("server sent %d COM-PORT-OPTION subnegotiations to a client that refused the option", c.comPortSB)
	}
}

// With the default policy, a second client is told who holds the port and
// is disconnected; the first keeps working, and once it leaves the port is
// free.
func TestShareExclusiveBusy(t *testing.T) {
	telnetPort, rawPort := freePort(t), freePort(t)
	startShare(t, "loop://", fmt.Sprintf("127.0.0.1:%d", telnetPort), fmt.Sprintf("raw://127.0.0.1:%d", rawPort))
	rawAddr := fmt.Sprintf("127.0.0.1:%d", rawPort)

	first, err := net.Dial("tcp", rawAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	echo(t, first, "first")

	for _, addr := range []string{fmt.Sprintf("127.0.0.1:%d", telnetPort), rawAddr} {
		second, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		second.SetReadDeadline(time.Now().Add(10 * time.Second))
		msg, err := io.ReadAll(second)
		second.Close()
		if err != nil {
			t.Fatalf("second client on %s: not disconnected: %v (got %q)", addr, err, msg)
		}
		want := "port busy: in use by " + first.LocalAddr().String() + " since "
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("second client on %s got %q, want it to contain %q", addr, msg, want)
		}
	}
	echo(t, first, "first, still")
	first.Close()

	// The port is free again (the server may take a moment to see the close).
	deadline := time.Now().Add(5 * time.Second)
	for {
		next, err := net.Dial("tcp", rawAddr)
		if err != nil {
			t.Fatal(err)
		}
		next.SetReadDeadline(time.Now().Add(5 * time.Second))
		next.Write([]byte("next"))
		b, _ := readN(next, nil, 4, 0)
		next.Close()
		if string(b) == "next" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a client after the first left got %q, not its echo", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// echo writes s to a raw connection to loop:// and reads it back.
func echo(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	readFull(t, "echo", c, c.SetReadDeadline, []byte(s), 10*time.Second)
}

// The startup line names the device and every listener; SIGTERM closes
// everything and exits 0.
func TestShareLogAndSignal(t *testing.T) {
	p1, p2 := freePort(t), freePort(t)
	p := startShare(t, "loop://", fmt.Sprintf("127.0.0.1:%d", p1), fmt.Sprintf("raw://127.0.0.1:%d", p2), "--baud", "19200")
	want := fmt.Sprintf("serving loop:// on rfc2217://127.0.0.1:%d, raw://127.0.0.1:%d", p1, p2)
	p.WaitOutput(t, want, time.Second)
	p.WaitOutput(t, "19200 8N1", time.Second)

	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo(t, c, "hello")

	p.Stop(t)
	if code := p.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; output:\n%s", code, p.Output())
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("client connection after shutdown: %v, want it closed", err)
	}
	for _, port := range []int{p1, p2} {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			t.Errorf("port %d still accepts connections after shutdown", port)
		}
	}
}

// Bad input gives one line on stderr, "sertun: ...", and exit status 1.
func TestShareErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	missing := filepath.Join(t.TempDir(), "ttyUSB9")

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing device", []string{"share", missing}, missing + `: no such serial port (run "sertun list" to see the ports)`},
		{"unknown device scheme", []string{"share", "foo://x"}, "unknown port URL scheme"},
		{"unknown listen scheme", []string{"share", "loop://", "ftp://127.0.0.1:7000"}, `unknown scheme "ftp"`},
		{"bad listen address", []string{"share", "loop://", "127.0.0.1"}, "want HOST:PORT"},
		{"bad baud", []string{"share", "--baud", "abc", "loop://"}, `--baud "abc"`},
		{"zero baud", []string{"share", "--baud", "0", "loop://"}, "--baud 0"},
		{"bad parity", []string{"share", "loop://", "--parity", "x"}, "--parity"},
		{"two policies", []string{"share", "--kick-old", "--shared", "loop://"}, "--kick-old and --shared"},
		{"address in use", []string{"share", "loop://", busy.Addr().String()}, "address already in use"},
		{"no device", []string{"share"}, "missing DEVICE"},
		{"unknown flag", []string{"share", "--nope", "loop://"}, "flag provided but not defined"},
		{"unknown command", []string{"shar"}, `unknown command "shar"`},
	}
	bin := sertun(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, tt.args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("sertun %s: %v, want exit status 1; stderr:\n%s", strings.Join(tt.args, " "), err, stderr.String())
			}
			msg := stderr.String()
			if !strings.HasPrefix(msg, "sertun: ") || strings.Count(msg, "\n") != 1 || !strings.HasSuffix(msg, "\n") {
				t.Errorf("stderr is not one line starting \"sertun: \":\n%s", msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("stderr %q does not contain %q", msg, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: %q, want nothing", stdout.String())
			}
		})
	}
}

// A second client under --kick-old takes the port over; under --shared every
// client reads what the device sends and may write.
func TestSharePolicies(t *testing.T) {
	tests := []struct {
		flag string
		// firstKept: the first client stays connected when the second comes.
		firstKept bool
	}{
		{"--kick-old", false},
		{"--shared", true},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			port := freePort(t)
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			startShare(t, "loop://", "raw://"+addr, tt.flag)
			first, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			echo(t, first, "first")

			second, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer second.Close()
			echo(t, second, "2")
			if !tt.firstKept {
				first.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.ReadAll(first); err != nil {
					t.Fatalf("first client not disconnected: %v", err)
				}
				return
			}
			// Shared: the second client's echo reached the first too, and
			// the first can still write.
			first.SetReadDeadline(time.Now().Add(5 * time.Second))
			b, err := readN(first, nil, 1, 0)
			if err != nil || string(b) != "2" {
				t.Fatalf("first client read %q, %v; want the device's echo of the second client", b, err)
			}
			first.Write([]byte("1"))
			for _, c := range []net.Conn{first, second} {
				readFull(t, "echo of the first client", c, c.SetReadDeadline, []byte("1"), 5*time.Second)
			}
		})
	}
}

// comPortAnswers speaks just enough telnet to agree on COM-PORT-OPTION, sends
// the given requests and returns the server's COM-PORT subnegotiations until
// done says enough.
func comPortAnswers(t *testing.T, addr string, requests [][]byte, done func([][]byte) bool) [][]byte {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const comPort = 44
	out := []byte{iac, will, comPort}
	for _, r := range requests {
		out = append(out, iac, sb, comPort)
		out = append(out, bytes.ReplaceAll(r, []byte{iac}, []byte{iac, iac})...)
		out = append(out, iac, se)
	}
	if _, err := conn.Write(out); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	var answers [][]byte
	for !done(answers) {
		b, err := r.ReadByte()
		if err != nil {
			t.Fatalf("reading answers: %v (so far %q)", err, answers)
		}
		if b != iac {
			continue
		}
		cmd, err := r.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		switch cmd {
		case do, will, dont, wont:
			r.ReadByte()
		case sb:
			var payload []byte
			for {
				c, err := r.ReadByte()
				if err != nil {
					t.Fatal(err)
				}
				if c == iac {
					if c, err = r.ReadByte(); err != nil {
						t.Fatal(err)
					}
					if c == se {
						break
					}
				}
				payload = append(payload, c)
			}
			if len(payload) > 0 && payload[0] == comPort {
				answers = append(answers, payload[1:])
			}
		}
	}
	return answers
}

// The SIGNATURE answer is "sertun VERSION DEVICE", or what --signature says.
func TestShareSignature(t *testing.T) {
	tests := []struct {
		args []string
		want func(string) bool
	}{
		{nil, func(s string) bool { return strings.HasPrefix(s, "sertun ") && strings.HasSuffix(s, " loop://") }},
		{[]string{"--signature", "lab bench \xff 3"}, func(s string) bool { return s == "lab bench \xff 3" }},
	}
	for _, tt := range tests {
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		p := startShare(t, "loop://", append([]string{addr}, tt.args...)...)
		const signature, answer = 0, 100
		answers := comPortAnswers(t, addr, [][]byte{{signature}}, func(a [][]byte) bool {
			for _, x := range a {
				if len(x) > 0 && x[0] == answer {
					return true
				}
			}
			return false
		})
		for _, x := range answers {
			if x[0] == answer && !tt.want(string(x[1:])) {
				t.Errorf("sertun share %v: SIGNATURE %q", tt.args, x[1:])
			}
		}
		p.Stop(t)
	}
}

// DEVICE may be a port that another server shares: sertun passes it on
// through its RFC 2217 client.
func TestShareChain(t *testing.T) {
	inner, outer := freePort(t), freePort(t)
	startShare(t, "loop://", fmt.Sprintf("127.0.0.1:%d", inner))
	startShare(t, fmt.Sprintf("rfc2217://127.0.0.1:%d", inner), fmt.Sprintf("raw://127.0.0.1:%d", outer))
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", outer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := append(randomBytes(t, 16*1024), bytes.Repeat([]byte{0xff}, 256)...)
	go c.Write(data)
	readFull(t, "echo through two servers", c, c.SetReadDeadline, data, 20*time.Second)
}
