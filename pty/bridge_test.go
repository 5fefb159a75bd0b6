//go:build linux

package pty

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/serialdev"
)

// device is the far end of the fake remote: it outlives connections, like a
// real device behind a server that restarts.
type device struct {
	mu       sync.Mutex
	got      []byte // bytes the bridge delivered
	settings serialdev.Settings
	initial  serialdev.Settings // each connection starts from these
	dtr, rts []bool             // every line change, in order
	purges   []serialdev.Purge
	changed  chan struct{}

	purgeDelay time.Duration // Purge waits this long for its answer
	// writes: for each Write, len(got) before it and the purges done then.
	writes [][2]int

	lineDelay time.Duration // SetDTR/SetRTS take this long (a server that never answers)
	bytesAt   []int         // len(got) when each SetSettings arrived
	slowWrite time.Duration // each Write takes this long (a slow link)
	entered   int           // Writes begun
	dialFail  int           // the next dialFail dials fail
	dials     int
	cur       *fakePort
	wrap      func(*fakePort) serialdev.Port // nil: dial gives the fakePort itself
}

func newDevice(initial serialdev.Settings) *device {
	return &device{initial: initial, settings: initial, changed: make(chan struct{}, 1)}
}

func (d *device) poke() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

func (d *device) dial(ctx context.Context) (serialdev.Port, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dials++
	if d.dialFail > 0 {
		d.dialFail--
		return nil, errors.New("connection refused")
	}
	d.settings = d.initial
	d.cur = &fakePort{d: d, done: make(chan struct{}), inbox: make(chan []byte, 1024)}
	if d.wrap != nil {
		return d.wrap(d.cur), nil
	}
	return d.cur, nil
}

// kill drops the current connection as a server that goes away does.
func (d *device) kill() {
	d.mu.Lock()
	p := d.cur
	d.mu.Unlock()
	p.Close()
}

func (d *device) send(b []byte) {
	d.mu.Lock()
	p := d.cur
	d.mu.Unlock()
	p.inbox <- bytes.Clone(b)
}

// wait polls cond (under d.mu) until it holds or d passes.
func (d *device) wait(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		d.mu.Lock()
		ok := cond()
		d.mu.Unlock()
		if ok {
			return time.Since(start)
		}
		select {
		case <-d.changed:
		case <-time.After(5 * time.Millisecond):
		case <-deadline.C:
			d.mu.Lock()
			st := d.settings
			d.mu.Unlock()
			t.Fatalf("%s: not within %v (device at %v)", what, timeout, st)
		}
	}
}

type fakePort struct {
	d     *device
	inbox chan []byte
	rest  []byte
	once  sync.Once
	done  chan struct{}
}

func (p *fakePort) Read(b []byte) (int, error) {
	if len(p.rest) == 0 {
		select {
		case p.rest = <-p.inbox:
		case <-p.done:
			return 0, io.EOF
		}
	}
	n := copy(b, p.rest)
	p.rest = p.rest[n:]
	return n, nil
}

func (p *fakePort) Write(b []byte) (int, error) {
	select {
	case <-p.done:
		return 0, os.ErrClosed
	default:
	}
	p.d.mu.Lock()
	slow := p.d.slowWrite
	p.d.entered++
	p.d.mu.Unlock()
	time.Sleep(slow)
	p.d.mu.Lock()
	p.d.writes = append(p.d.writes, [2]int{len(p.d.got), len(p.d.purges)})
	p.d.got = append(p.d.got, b...)
	p.d.mu.Unlock()
	p.d.poke()
	return len(b), nil
}

// Unread hands over what came in and was not read, as the RFC 2217
// client does.
func (p *fakePort) Unread() []byte {
	b := p.rest
	for {
		select {
		case c := <-p.inbox:
			b = append(b, c...)
		default:
			p.rest = nil
			return b
		}
	}
}

func (p *fakePort) Close() error                      { p.once.Do(func() { close(p.done) }); return nil }
func (p *fakePort) SetReadDeadline(time.Time) error   { return nil }
func (p *fakePort) SetWriteDeadline(time.Time) error  { return nil }
func (p *fakePort) SetBreak(bool) error               { return nil }
func (p *fakePort) Status() (serialdev.Status, error) { return serialdev.Status{}, nil }
func (p *fakePort) StatusChanged() <-chan struct{}    { return nil }
func (p *fakePort) Drain() error                      { return nil }
func (p *fakePort) Settings() (serialdev.Settings, error) {
	p.d.mu.Lock()
	defer p.d.mu.Unlock()
	return p.d.settings, nil
}

func (p *fakePort) SetSettings(s serialdev.Settings) error {
	if err := s.Validate(); err != nil {
		return err
	}
	p.d.mu.Lock()
	p.d.settings = s
	p.d.bytesAt = append(p.d.bytesAt, len(p.d.got))
	p.d.mu.Unlock()
	p.d.poke()
	return nil
}

func (p *fakePort) line(list *[]bool, on bool) error {
	time.Sleep(p.d.lineDelay)
	p.d.mu.Lock()
	*list = append(*list, on)
	p.d.mu.Unlock()
	p.d.poke()
	return nil
}

func (p *fakePort) SetDTR(on bool) error { return p.line(&p.d.dtr, on) }
func (p *fakePort) SetRTS(on bool) error { return p.line(&p.d.rts, on) }

func (p *fakePort) Purge(which serialdev.Purge) error {
	p.d.mu.Lock()
	delay := p.d.purgeDelay
	p.d.mu.Unlock()
	time.Sleep(delay)
	p.d.mu.Lock()
	p.d.purges = append(p.d.purges, which)
	p.d.mu.Unlock()
	p.d.poke()
	return nil
}

func randomBytes(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

var dev9600 = serialdev.Settings{BaudRate: 9600, DataBits: 8}

// startBridge runs Bridge until the test ends on a new pty that shows the
// device's settings, as attach opens it.
func startBridge(t *testing.T, d *device, cfg BridgeConfig) *Pty {
	t.Helper()
	p, err := open("", &d.initial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 5 * time.Millisecond
		cfg.MaxBackoff = 40 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Bridge(ctx, p, nil, d.dial, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Bridge: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Bridge did not return after cancel")
		}
	})
	// Connected, and the first settings sent: the tests count from here.
	d.wait(t, "connect", 2*time.Second, func() bool { return d.cur != nil && len(d.bytesAt) > 0 })
	return p
}

func setBaud(t *testing.T, prog *os.File, baud uint32) {
	t.Helper()
	programTermios(t, prog, func(tio *unix.Termios) {
		tio.Cflag &^= unix.CBAUD
		tio.Cflag |= unix.BOTHER
		tio.Ispeed, tio.Ospeed = baud, baud
	})
}

func TestBridgeData(t *testing.T) {
	d := newDevice(dev9600)
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	want := make([]byte, 16*1024)
	randomBytes(want, 1)
	want = append(want, 0xff, 0xff, 0x00, '\r', '\n')

	// program -> remote
	go prog.Write(want)
	d.wait(t, "program's data at the device", 5*time.Second, func() bool { return len(d.got) >= len(want) })
	d.mu.Lock()
	if !bytes.Equal(d.got, want) {
		t.Errorf("device got %d bytes, differing from the %d written", len(d.got), len(want))
	}
	d.mu.Unlock()

	// remote -> program
	for chunk := range slices.Chunk(want, 1000) {
		d.send(chunk)
	}
	if got := readFull(t, prog, len(want)); !bytes.Equal(got, want) {
		t.Fatal("device -> program: data differs")
	}
}

func TestBridgeSettings(t *testing.T) {
	d := newDevice(serialdev.Settings{BaudRate: 115200, DataBits: 7, Parity: serialdev.ParityEven})
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())

	tests := []struct {
		name string
		set  func(*unix.Termios)
		want serialdev.Settings
	}{
		// The pty cannot carry 7E: the remote keeps its own format.
		{"38400 keeps the remote's 7E", func(tio *unix.Termios) {
			tio.Cflag &^= unix.CBAUD
			tio.Cflag |= unix.B38400
		}, serialdev.Settings{BaudRate: 38400, DataBits: 7, Parity: serialdev.ParityEven}},
		{"250000 2 stop rtscts", func(tio *unix.Termios) {
			tio.Cflag &^= unix.CBAUD
			tio.Cflag |= unix.BOTHER | unix.CSTOPB | unix.CRTSCTS
			tio.Ispeed, tio.Ospeed = 250000, 250000
		}, serialdev.Settings{BaudRate: 250000, DataBits: 7, Parity: serialdev.ParityEven, StopBits: serialdev.Stop2,
			OutFlow: serialdev.FlowRTSCTS, InFlow: serialdev.FlowRTSCTS}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			programTermios(t, prog, tt.set)
			took := d.wait(t, "settings at the device", time.Second, func() bool { return d.settings == tt.want })
			if took > 50*time.Millisecond {
				t.Errorf("settings took %v to reach the device, want <= 50ms", took)
			}
		})
	}
}

func TestBridgeForcedFormat(t *testing.T) {
	d := newDevice(dev9600)
	odd := serialdev.ParityOdd
	p := startBridge(t, d, BridgeConfig{DataBits: 7, Parity: &odd})
	prog := openProgram(t, p.SlavePath())
	setBaud(t, prog, 57600)
	want := serialdev.Settings{BaudRate: 57600, DataBits: 7, Parity: serialdev.ParityOdd}
	d.wait(t, "forced 7O1", 2*time.Second, func() bool { return d.settings == want })
}

func TestBridgePurge(t *testing.T) {
	d := newDevice(dev9600)
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	for _, q := range []int{unix.TCIFLUSH, unix.TCOFLUSH} {
		if err := control(prog, func(fd int) error { return unix.IoctlSetInt(fd, unix.TCFLSH, q) }); err != nil {
			t.Fatal(err)
		}
	}
	d.wait(t, "purges", time.Second, func() bool {
		var all serialdev.Purge
		for _, p := range d.purges {
			all |= p
		}
		return all == serialdev.PurgeBoth
	})
}

// A program that flushes and writes at once (pyserial opens the port so,
// then sends a command): the purge must be done before the data goes out,
// or it drops the device's answer to the data.
func TestBridgePurgeBeforeData(t *testing.T) {
	d := newDevice(dev9600)
	d.purgeDelay = 30 * time.Millisecond
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	for i := range 3 {
		if err := control(prog, func(fd int) error { return unix.IoctlSetInt(fd, unix.TCFLSH, unix.TCIFLUSH) }); err != nil {
			t.Fatal(err)
		}
		if _, err := prog.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		d.wait(t, "data", time.Second, func() bool { return len(d.got) == 4*(i+1) })
		d.mu.Lock()
		for _, w := range d.writes {
			if w[0] == 4*i && w[1] < i+1 {
				t.Errorf("flush %d: data went out with %d purges done", i+1, w[1])
			}
		}
		d.mu.Unlock()
	}
}

func TestBridgeLines(t *testing.T) {
	tests := []struct {
		name     string
		dtr, rts LineMode
		// lines with a program open, after it closed
		open, closed [2]bool
	}{
		{"follow", LineFollow, LineFollow, [2]bool{true, true}, [2]bool{false, false}},
		{"on off", LineOn, LineOff, [2]bool{true, false}, [2]bool{true, false}},
		{"off follow", LineOff, LineFollow, [2]bool{false, true}, [2]bool{false, false}},
	}
	last := func(l []bool) (bool, bool) {
		if len(l) == 0 {
			return false, false
		}
		return l[len(l)-1], true
	}
	is := func(d *device, want [2]bool) func() bool {
		return func() bool {
			dtr, ok1 := last(d.dtr)
			rts, ok2 := last(d.rts)
			return ok1 && ok2 && dtr == want[0] && rts == want[1]
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDevice(dev9600)
			p := startBridge(t, d, BridgeConfig{DTR: tt.dtr, RTS: tt.rts})
			d.wait(t, "lines before a program", time.Second, is(d, tt.closed))
			prog := openProgram(t, p.SlavePath())
			d.wait(t, "lines with a program", time.Second, is(d, tt.open))
			prog.Close()
			d.wait(t, "lines after close", time.Second, is(d, tt.closed))
		})
	}
}

// A remote that never answers line commands (ser2net on a pty) must not
// hold up settings.
func TestBridgeSlowLines(t *testing.T) {
	d := newDevice(dev9600)
	d.lineDelay = 500 * time.Millisecond
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	setBaud(t, prog, 115200)
	took := d.wait(t, "115200", time.Second, func() bool { return d.settings.BaudRate == 115200 })
	if took > 50*time.Millisecond {
		t.Errorf("settings took %v behind slow line commands", took)
	}
}

// The remote drops while the program keeps writing: nothing is lost or
// duplicated, the settings come back, and the program's port stays open.
func TestBridgeReconnect(t *testing.T) {
	d := newDevice(dev9600)
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	setBaud(t, prog, 115200)
	d.wait(t, "115200", time.Second, func() bool { return d.settings.BaudRate == 115200 })

	want := make([]byte, 512*1024)
	randomBytes(want, 3)
	werr := make(chan error, 1)
	go func() {
		var err error
		for chunk := range slices.Chunk(want, 4096) {
			if _, err = prog.Write(chunk); err != nil {
				break
			}
		}
		werr <- err
	}()
	for i := range 3 {
		// On the connection of this round: data can be ahead of the
		// reconnects, and killing a dead connection again ends nothing.
		d.wait(t, "some data", 5*time.Second, func() bool { return d.dials >= 1+4*i && len(d.got) > (i+1)*len(want)/5 })
		d.mu.Lock()
		d.dialFail = 3
		d.mu.Unlock()
		d.kill()
	}
	d.wait(t, "all data", 10*time.Second, func() bool { return len(d.got) >= len(want) })
	if err := <-werr; err != nil {
		t.Fatalf("program's write: %v", err)
	}
	d.mu.Lock()
	got, settings, dials := bytes.Clone(d.got), d.settings, d.dials
	d.mu.Unlock()
	if !bytes.Equal(got, want) {
		t.Fatalf("device got %d bytes, want the %d written, unchanged", len(got), len(want))
	}
	if settings.BaudRate != 115200 {
		t.Errorf("device at %v after reconnect, want 115200 re-applied", settings)
	}
	if dials < 1+3*4 {
		t.Errorf("%d dials, want at least 13", dials)
	}
	// The way back works on the new connection.
	d.send([]byte{0xff, 0x00, '\n'})
	if got := readFull(t, prog, 3); !bytes.Equal(got, []byte{0xff, 0x00, '\n'}) {
		t.Fatalf("after reconnect got %x", got)
	}
}

// While disconnected the bridge does not read the pty: the program's data
// waits in the pty rather than being read and dropped.
func TestBridgeHoldsWhileDown(t *testing.T) {
	d := newDevice(dev9600)
	p := startBridge(t, d, BridgeConfig{MinBackoff: 300 * time.Millisecond, MaxBackoff: 300 * time.Millisecond})
	prog := openProgram(t, p.SlavePath())
	d.mu.Lock()
	d.dialFail = 1
	d.mu.Unlock()
	d.kill()
	time.Sleep(20 * time.Millisecond)
	prog.Write([]byte("while down"))
	d.wait(t, "data after reconnect", 3*time.Second, func() bool { return bytes.Equal(d.got, []byte("while down")) })
}

func TestParseLineMode(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want LineMode
		err  bool
	}{{"on", LineOn, false}, {"off", LineOff, false}, {"follow", LineFollow, false}, {"", LineFollow, false}, {"high", 0, true}} {
		got, err := ParseLineMode(tt.in)
		if (err != nil) != tt.err || (!tt.err && got != tt.want) {
			t.Errorf("ParseLineMode(%q) = %v, %v", tt.in, got, err)
		}
		if !tt.err && tt.in != "" && got.String() != tt.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
}

// Data written right after a speed change goes out at the new speed: the
// program that opens the port, sets its speed and writes at once, and the
// one that changes speed and writes at once.
func TestBridgeSettingsBeforeLaterData(t *testing.T) {
	d := newDevice(dev9600)
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	for round := range 40 {
		if round%3 == 0 {
			prog.Close()
			prog = openProgram(t, p.SlavePath())
		}
		baud := uint32(57600)
		if round%2 == 0 {
			baud = 115200
		}
		d.mu.Lock()
		before := len(d.got)
		d.mu.Unlock()
		setBaud(t, prog, baud)
		if _, err := prog.Write([]byte{byte(round)}); err != nil {
			t.Fatal(err)
		}
		d.wait(t, "the byte at the new speed", 2*time.Second, func() bool {
			return len(d.got) > before && d.settings.BaudRate == int(baud)
		})
		d.mu.Lock()
		at := d.bytesAt[len(d.bytesAt)-1]
		d.mu.Unlock()
		if at != before {
			t.Fatalf("round %d: speed %d reached the remote after %d bytes, want before the byte written after it (%d)", round, baud, at, before)
		}
	}
}

// Data the bridge has read before a speed change goes out at the old speed
// though the remote is slow to take it.
func TestBridgeSettingsAfterReadData(t *testing.T) {
	d := newDevice(dev9600)
	p := startBridge(t, d, BridgeConfig{})
	d.mu.Lock()
	d.slowWrite = 50 * time.Millisecond
	d.mu.Unlock()
	prog := openProgram(t, p.SlavePath())
	if _, err := prog.Write(bytes.Repeat([]byte{'A'}, 1000)); err != nil {
		t.Fatal(err)
	}
	// Read by the bridge, which is now held up by the remote.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		d.mu.Lock()
		n := d.entered
		d.mu.Unlock()
		if n > 0 {
			break
		}
	}
	setBaud(t, prog, 115200)
	prog.Write([]byte{'B'})
	d.wait(t, "115200 and the data", 2*time.Second, func() bool { return d.settings.BaudRate == 115200 && len(d.got) == 1001 })
	d.mu.Lock()
	defer d.mu.Unlock()
	if at := d.bytesAt[len(d.bytesAt)-1]; at != 1000 {
		t.Fatalf("speed changed after %d bytes, want after the 1000 read before it", at)
	}
}

// A program that never stops writing still gets its settings through
// within 50 ms.
func TestBridgeSettingsWhileWriting(t *testing.T) {
	d := newDevice(dev9600)
	p := startBridge(t, d, BridgeConfig{})
	d.wait(t, "the first settings", time.Second, func() bool { return len(d.bytesAt) > 0 })
	prog := openProgram(t, p.SlavePath())
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Microsecond):
				prog.Write(bytes.Repeat([]byte{'w'}, 64))
			}
		}
	}()
	defer func() { close(stop); <-done }()
	time.Sleep(20 * time.Millisecond)
	setBaud(t, prog, 115200)
	took := d.wait(t, "115200", time.Second, func() bool { return d.settings.BaudRate == 115200 })
	if took > 50*time.Millisecond {
		t.Errorf("settings took %v while the program kept writing", took)
	}
}

// While reconnecting, the reason the remote refuses is logged once at Info
// (a user sees why it takes long: another client holds the port), not at
// every attempt.
func TestBridgeReconnectLogsReason(t *testing.T) {
	d := newDevice(dev9600)
	var mu sync.Mutex
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(b)
	}), &slog.HandlerOptions{Level: slog.LevelInfo}))
	startBridge(t, d, BridgeConfig{Logger: log})
	d.mu.Lock()
	d.dialFail = 5
	d.mu.Unlock()
	d.kill()
	d.wait(t, "the reconnect", 5*time.Second, func() bool { return d.dials >= 7 && d.cur != nil })
	var out string
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		mu.Lock()
		out = logs.String()
		mu.Unlock()
		if strings.Contains(out, "reconnected") {
			break
		}
	}
	if n := strings.Count(out, "cannot connect yet"); n != 1 || !strings.Contains(out, "connection refused") {
		t.Errorf("want the reason logged once at Info, got %d lines:\n%s", n, out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Bridge ends, with an error, when its virtual port is closed under it.
func TestBridgeVirtualClosed(t *testing.T) {
	d := newDevice(dev9600)
	p := openPty(t, "")
	done := make(chan error, 1)
	go func() {
		done <- Bridge(context.Background(), p, nil, d.dial, BridgeConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	d.wait(t, "connect", 2*time.Second, func() bool { return d.cur != nil })
	p.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Bridge: %v, want an error wrapping os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Bridge kept going on a closed virtual port")
	}
}

// writerToPort is a fakePort that writes to the program itself, as the
// RFC 2217 client does: an io.WriterTo that offers each piece to TryWrite
// first, when w has it, and writes the rest with Write.
type writerToPort struct {
	*fakePort
	tried, written atomic.Int64 // bytes that went each way
	inWrite        atomic.Bool  // a Write is in progress
}

func (p *writerToPort) WriteTo(w io.Writer) (int64, error) {
	tw, _ := w.(interface{ TryWrite([]byte) int })
	var total int64
	for {
		var b []byte
		select {
		case b = <-p.inbox:
		case <-p.done:
			return total, io.EOF
		}
		if tw != nil {
			n := tw.TryWrite(b)
			p.tried.Add(int64(n))
			total += int64(n)
			b = b[n:]
		}
		if len(b) > 0 {
			p.inWrite.Store(true)
			n, err := w.Write(b)
			p.written.Add(int64(n))
			p.inWrite.Store(false)
			total += int64(n)
			if err != nil {
				return total, err
			}
		}
	}
}

// writerToDevice is a device whose connections are writerToPorts.
func writerToDevice() (*device, func() []*writerToPort) {
	d := newDevice(dev9600)
	var ports []*writerToPort // under d.mu
	d.wrap = func(fp *fakePort) serialdev.Port {
		p := &writerToPort{fakePort: fp}
		ports = append(ports, p)
		return p
	}
	return d, func() []*writerToPort {
		d.mu.Lock()
		defer d.mu.Unlock()
		return slices.Clone(ports)
	}
}

// A remote that writes to the program itself (io.WriterTo): the data
// arrives whole and in order, and the pty's TryWrite is offered to it.
func TestBridgeWriterToPort(t *testing.T) {
	d, ports := writerToDevice()
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	want := make([]byte, 256<<10)
	randomBytes(want, 5)
	want = append(want, 0xff, 0xff, 0x00, '\r', '\n')
	for chunk := range slices.Chunk(want, 1000) {
		d.send(chunk)
	}
	if got := readFull(t, prog, len(want)); !bytes.Equal(got, want) {
		t.Fatal("device -> program: data differs")
	}
	port := ports()[0]
	// The program can read the last piece before the port counts it.
	n := port.tried.Load() + port.written.Load()
	for deadline := time.Now().Add(time.Second); n < int64(len(want)) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		n = port.tried.Load() + port.written.Load()
	}
	t.Logf("TryWrite took %d bytes, Write %d", port.tried.Load(), port.written.Load())
	if port.tried.Load() == 0 {
		t.Error("the port was not offered TryWrite, or it took nothing")
	}
	if n != int64(len(want)) {
		t.Errorf("the port wrote %d bytes, want %d", n, len(want))
	}
}

// The session ends while a WriterTo remote is blocked writing to a program
// that does not read: what the program did not take waits in the bridge
// and reaches the program first on the next connection, nothing lost or
// repeated.
func TestBridgeWriterToCarriesOver(t *testing.T) {
	d, ports := writerToDevice()
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	data := make([]byte, 256<<10)
	randomBytes(data, 6)
	d.send(data)
	first := ports()[0]
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("a blocked Write to the program", first.inWrite.Load)
	// The remote goes; the program's next byte finds it gone and ends the
	// session.
	d.kill()
	if _, err := prog.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFor("a new connection", func() bool { return len(ports()) == 2 })
	waitFor("the first session's Write to end", func() bool { return !first.inWrite.Load() })
	took := first.tried.Load() + first.written.Load()
	t.Logf("first session: TryWrite %d, Write %d of %d", first.tried.Load(), first.written.Load(), len(data))
	if took >= int64(len(data)) {
		t.Fatalf("the program took all %d bytes in the first session: nothing carried over", took)
	}
	tail := []byte("after reconnect \xff")
	d.send(tail)
	want := append(bytes.Clone(data), tail...)
	if got := readFull(t, prog, len(want)); !bytes.Equal(got, want) {
		t.Fatal("program got other bytes than the device sent")
	}
	d.wait(t, "the program's byte at the device", 2*time.Second, func() bool { return string(d.got) == "x" })
}

// failFirstWrite is a connection whose first Write fails after the
// program's data was taken from the pty, as a server reset does; it notes
// the device's speed at each Write.
type failFirstWrite struct {
	*fakePort
	fail  *atomic.Bool
	bauds *[]int
}

func (p failFirstWrite) Write(b []byte) (int, error) {
	if p.fail.CompareAndSwap(true, false) {
		p.fakePort.Close()
		return 0, errors.New("connection reset by peer")
	}
	p.d.mu.Lock()
	*p.bauds = append(*p.bauds, p.d.settings.BaudRate)
	p.d.mu.Unlock()
	return p.fakePort.Write(b)
}

// Data carried over to the next connection goes out at the program's
// speed, not at the one the remote starts the connection with.
func TestBridgeCarriedDataAfterSettings(t *testing.T) {
	var fail atomic.Bool
	var bauds []int
	d := newDevice(dev9600)
	d.wrap = func(fp *fakePort) serialdev.Port { return failFirstWrite{fp, &fail, &bauds} }
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	setBaud(t, prog, 115200)
	d.wait(t, "115200", time.Second, func() bool { return d.settings.BaudRate == 115200 })
	fail.Store(true)
	if _, err := prog.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	d.wait(t, "the data, after a reconnect", 5*time.Second, func() bool { return len(d.got) >= 5 })
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dials < 2 || len(bauds) == 0 || bauds[0] != 115200 {
		t.Errorf("after %d dials the carried data went out at %v baud, want 115200", d.dials, bauds)
	}
}

// SetSettings does not overwrite what a quick program set before its change
// was reported.
func TestPtySetSettingsLeavesProgramsChange(t *testing.T) {
	p := openPty(t, "")
	prog := openProgram(t, p.SlavePath())
	setBaud(t, prog, 57600)
	if err := p.SetSettings(dev9600); err != nil {
		t.Fatal(err)
	}
	if s, err := p.Settings(); err != nil || s.BaudRate != 57600 {
		t.Fatalf("pty at %v (%v) after SetSettings, want the program's 57600", s, err)
	}
}

// The connection ends while the program is behind with its reading (and
// writes, so the bridge notices): what the port had received and not yet
// passed on reaches the program after the reconnect, in order.
func TestBridgeUnreadCarriesOver(t *testing.T) {
	d := newDevice(dev9600)
	p := startBridge(t, d, BridgeConfig{})
	prog := openProgram(t, p.SlavePath())
	want := make([]byte, 512<<10)
	randomBytes(want, 7)
	for b := want; len(b) > 0; b = b[4096:] {
		d.send(b[:4096])
	}
	time.Sleep(50 * time.Millisecond) // the pty fills; the rest waits in the port
	d.kill()
	if _, err := prog.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	d.wait(t, "the program's byte after a reconnect", 5*time.Second, func() bool { return string(d.got) == "x" })
	if got := readFull(t, prog, len(want)); !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("the program got other data (first difference at %d of %d)", i, len(want))
	}
}
