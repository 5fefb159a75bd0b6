package rfc2217

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sertun/sertun/serialdev"
)

const waitLong = 5 * time.Second

// pipeListener is a net.Listener fed by net.Pipe: the unbuffered transport
// that shows any write that would block.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func (l *pipeListener) dial() (net.Conn, error) {
	a, b := net.Pipe()
	select {
	case l.conns <- b:
		return a, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// logBuffer collects log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testServer is a Server on a loop:// device, with a way to reach it.
type testServer struct {
	*Server
	dial  func() (net.Conn, error)
	addr  string // the TCP listener's, for outside clients
	logs  *logBuffer
	mu    sync.Mutex
	ports []serialdev.Port // every device opened, newest last
	opens atomic.Int32
}

func (ts *testServer) port() serialdev.Port {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.ports[len(ts.ports)-1]
}

// transports are the ways tests reach a server.
var transports = []string{"pipe", "tcp"}

func startServer(t testing.TB, transport string, mode Mode, cfg Config) *testServer {
	t.Helper()
	ts := &testServer{logs: &logBuffer{}}
	cfg.Device = "loop://"
	if cfg.Open == nil {
		cfg.Open = func(context.Context) (serialdev.Port, error) {
			p := serialdev.NewLoop()
			ts.mu.Lock()
			ts.ports = append(ts.ports, p)
			ts.mu.Unlock()
			ts.opens.Add(1)
			return p, nil
		}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = s
	var ln net.Listener
	switch transport {
	case "pipe":
		pl := newPipeListener()
		ln, ts.dial = pl, pl.dial
	case "tcp":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, ts.addr = l, l.Addr().String()
		ts.dial = func() (net.Conn, error) { return net.Dial("tcp", l.Addr().String()) }
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln, mode) }()
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(waitLong):
			t.Errorf("Server.Close hangs")
		}
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs)
		}
	})
	return ts
}

// tclient is a test telnet client on the package's codec: it answers
// negotiation, collects data and COM-PORT answers.
type tclient struct {
	t    testing.TB
	conn net.Conn
	wmu  sync.Mutex
	tn   *Codec // owned by the read loop
	// pause, held, stops the read loop before its next read: the client
	// stalls and the server's socket fills.
	pause sync.Mutex

	mu     sync.Mutex
	cond   *sync.Cond
	data   []byte
	cmds   []Command // answers and notifications, in arrival order
	eof    error
	done   chan struct{}
	binOut atomic.Bool
}

// dialClient connects; comport says whether to propose COM-PORT-OPTION
// and BINARY as pyserial does (else the client refuses everything, as a
// plain telnet that knows no options).
func dialClient(t testing.TB, ts *testServer, comport bool) *tclient {
	t.Helper()
	conn, err := ts.dial()
	if err != nil {
		t.Fatal(err)
	}
	c := newTClient(t, conn)
	if comport {
		c.tn.Support(OptBinary, true, true, false)
		c.tn.Support(OptSGA, true, true, false)
		c.tn.Support(OptEcho, false, true, false)
		c.tn.Support(OptComPort, true, true, true)
		c.tn.Request(OptComPort, true, true)
		c.tn.Request(OptComPort, false, true)
		c.tn.Request(OptEcho, false, true)
		c.writeRaw(c.tn.AppendReplies(nil))
	}
	go c.readLoop()
	return c
}

func newTClient(t testing.TB, conn net.Conn) *tclient {
	c := &tclient{t: t, conn: conn, tn: &Codec{}, done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	t.Cleanup(func() {
		conn.Close()
		select {
		case <-c.done:
		case <-time.After(waitLong):
			t.Errorf("test client reader hangs")
		}
	})
	return c
}

func (c *tclient) readLoop() {
	defer close(c.done)
	buf := make([]byte, 8192)
	for {
		c.pause.Lock()
		c.pause.Unlock()
		n, err := c.conn.Read(buf)
		in := buf[:n]
		for len(in) > 0 {
			k, data, ev := c.tn.Decode(in)
			c.mu.Lock()
			c.data = append(c.data, data...)
			if ev.Kind == EventSubneg && ev.Opt == OptComPort {
				if cmd, answer, err := DecodeCommand(ev.Data); err == nil && answer {
					c.cmds = append(c.cmds, cmd)
				}
			}
			c.cond.Broadcast()
			c.mu.Unlock()
			if ev.Kind == EventOption && ev.Opt == OptBinary && ev.Local {
				c.binOut.Store(ev.On)
			}
			if c.tn.HasReplies() {
				c.writeRaw(c.tn.AppendReplies(nil))
			}
			in = in[k:]
		}
		if err != nil {
			c.mu.Lock()
			c.eof = err
			c.cond.Broadcast()
			c.mu.Unlock()
			return
		}
	}
}

func (c *tclient) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

func (c *tclient) send(cmds ...Command) {
	c.t.Helper()
	var b []byte
	for _, cmd := range cmds {
		b = AppendCommand(b, cmd, false)
	}
	if err := c.writeRaw(b); err != nil {
		c.t.Fatalf("sending %v: %v", cmds, err)
	}
}

func (c *tclient) write(p []byte) {
	c.t.Helper()
	if err := c.writeRaw(AppendData(nil, p, c.binOut.Load())); err != nil {
		c.t.Fatalf("writing data: %v", err)
	}
}

// waitFor waits until cond (run with c.mu held) is true.
func (c *tclient) waitFor(d time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s (data %d bytes, commands %v, eof %v)", what, len(c.data), c.cmds, c.eof)
		}
		c.cond.Wait()
	}
}

// expect waits for the next answer with want's code and checks its value.
func (c *tclient) expect(want Command) {
	c.t.Helper()
	var got Command
	c.waitFor(waitLong, fmt.Sprintf("answer %T", want), func() bool {
		for i, cmd := range c.cmds {
			if cmd.Code() == want.Code() {
				got = cmd
				c.cmds = append(c.cmds[:i], c.cmds[i+1:]...)
				return true
			}
		}
		return false
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		c.t.Errorf("answer %T%+v, want %+v", got, got, want)
	}
}

// noCommand checks that no answer with code arrives within d.
func (c *tclient) noCommand(code byte, d time.Duration) {
	c.t.Helper()
	time.Sleep(d)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range c.cmds {
		if cmd.Code() == code {
			c.t.Errorf("unexpected %T%+v", cmd, cmd)
		}
	}
}

// readData waits for n data bytes and takes them.
func (c *tclient) readData(n int) []byte {
	c.t.Helper()
	c.waitFor(waitLong, fmt.Sprintf("%d data bytes", n), func() bool { return len(c.data) >= n })
	c.mu.Lock()
	defer c.mu.Unlock()
	got := append([]byte(nil), c.data[:n]...)
	c.data = c.data[n:]
	return got
}

func (c *tclient) waitEOF() {
	c.t.Helper()
	c.waitFor(waitLong, "connection closed", func() bool { return c.eof != nil })
}

func (c *tclient) dataLen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.data)
}

// opened connects a COM-PORT client and waits for the first modem state.
func opened(t testing.TB, ts *testServer) *tclient {
	t.Helper()
	c := dialClient(t, ts, true)
	c.expect(&NotifyModemState{State: ModemCTS | ModemDSR | ModemDCD})
	return c
}

func TestServerAnswersEveryCommand(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, tr, Telnet, Config{Signature: "sertun test loop://"})
			c := opened(t, ts)
			steps := []struct {
				send, want Command
			}{
				{&SetBaudRate{Baud: 0}, &SetBaudRate{Baud: 9600}},
				{&SetBaudRate{Baud: 57600}, &SetBaudRate{Baud: 57600}},
				{&SetBaudRate{Baud: 0}, &SetBaudRate{Baud: 57600}},
				{&SetBaudRate{Baud: 0xFFFFFFFF}, &SetBaudRate{Baud: 57600}}, // refused: the value kept
				{&SetBaudRate{Baud: 250000}, &SetBaudRate{Baud: 250000}},
				{&SetDataSize{Size: 7}, &SetDataSize{Size: 7}},
				{&SetDataSize{Size: 9}, &SetDataSize{Size: 7}},
				{&SetDataSize{Size: 0}, &SetDataSize{Size: 7}},
				{&SetParity{Parity: ParityEven}, &SetParity{Parity: ParityEven}},
				{&SetParity{Parity: ParityAsk}, &SetParity{Parity: ParityEven}},
				{&SetParity{Parity: 9}, &SetParity{Parity: ParityEven}},
				{&SetStopSize{Stop: Stop1Half}, &SetStopSize{Stop: Stop1Half}},
				{&SetStopSize{Stop: StopAsk}, &SetStopSize{Stop: Stop1Half}},
				{&SetStopSize{Stop: Stop2}, &SetStopSize{Stop: Stop2}},
				{&SetControl{Value: CtlFlowAsk}, &SetControl{Value: CtlFlowNone}},
				{&SetControl{Value: CtlFlowHardware}, &SetControl{Value: CtlFlowHardware}},
				{&SetControl{Value: CtlInFlowAsk}, &SetControl{Value: CtlInFlowHardware}},
				{&SetControl{Value: CtlInFlowNone}, &SetControl{Value: CtlInFlowNone}},
				{&SetControl{Value: CtlFlowAsk}, &SetControl{Value: CtlFlowHardware}},
				{&SetControl{Value: CtlFlowDSR}, &SetControl{Value: CtlFlowDSR}},
				{&SetControl{Value: CtlInFlowDTR}, &SetControl{Value: CtlInFlowDTR}},
				{&SetControl{Value: CtlFlowXonXoff}, &SetControl{Value: CtlFlowXonXoff}},
				{&SetControl{Value: CtlInFlowAsk}, &SetControl{Value: CtlInFlowXonXoff}},
				{&SetControl{Value: CtlFlowNone}, &SetControl{Value: CtlFlowNone}},
				{&SetControl{Value: CtlDTRAsk}, &SetControl{Value: CtlDTROn}},
				{&SetControl{Value: CtlDTROff}, &SetControl{Value: CtlDTROff}},
				{&SetControl{Value: CtlDTRAsk}, &SetControl{Value: CtlDTROff}},
				{&SetControl{Value: CtlRTSAsk}, &SetControl{Value: CtlRTSOn}},
				{&SetControl{Value: CtlRTSOff}, &SetControl{Value: CtlRTSOff}},
				{&SetControl{Value: CtlBreakAsk}, &SetControl{Value: CtlBreakOff}},
				{&SetControl{Value: CtlBreakOn}, &SetControl{Value: CtlBreakOn}},
				{&SetControl{Value: CtlBreakAsk}, &SetControl{Value: CtlBreakOn}},
				{&SetControl{Value: CtlBreakOff}, &SetControl{Value: CtlBreakOff}},
				{&SetLinestateMask{Mask: LineBreak}, &SetLinestateMask{Mask: LineBreak}},
				{&SetModemstateMask{Mask: 0xFF}, &SetModemstateMask{Mask: 0xFF}},
				{&PurgeData{Which: PurgeRx}, &PurgeData{Which: PurgeRx}},
				{&PurgeData{Which: PurgeTx}, &PurgeData{Which: PurgeTx}},
				{&PurgeData{Which: PurgeBoth}, &PurgeData{Which: PurgeBoth}},
				{&Signature{}, &Signature{Text: "sertun test loop://"}},
			}
			// One at a time, each answered before the next...
			for _, st := range steps {
				c.send(st.send)
				c.expect(st.want)
			}
			// ...and pipelined, all at once, answered in order.
			var sends []Command
			for _, st := range steps[:14] {
				sends = append(sends, st.send)
			}
			c.send(&SetBaudRate{Baud: 9600})
			c.expect(&SetBaudRate{Baud: 9600})
			c.send(&SetDataSize{Size: 8}, &SetParity{Parity: ParityNone}, &SetStopSize{Stop: Stop1})
			c.expect(&SetDataSize{Size: 8})
			c.expect(&SetParity{Parity: ParityNone})
			c.expect(&SetStopSize{Stop: Stop1})
			c.send(sends...)
			for _, st := range steps[:14] {
				c.expect(st.want)
			}
			got, err := ts.port().Settings()
			if err != nil {
				t.Fatal(err)
			}
			want := serialdev.Settings{BaudRate: 250000, DataBits: 7, Parity: serialdev.ParityEven, StopBits: serialdev.Stop2}
			if got != want {
				t.Errorf("device settings %v, want %v", got, want)
			}
		})
	}
}

// noLines is a loop without modem lines, as a pty: DTR, RTS and BREAK
// fail with ErrNoModemLines and Status reports none.
type noLines struct{ serialdev.Port }

func (noLines) SetDTR(bool) error   { return serialdev.ErrNoModemLines }
func (noLines) SetRTS(bool) error   { return serialdev.ErrNoModemLines }
func (noLines) SetBreak(bool) error { return serialdev.ErrNoModemLines }
func (noLines) Status() (serialdev.Status, error) {
	return serialdev.Status{}, serialdev.ErrNoModemLines
}

func TestServerNoModemLines(t *testing.T) {
	ts := startServer(t, "pipe", Telnet, Config{Open: func(context.Context) (serialdev.Port, error) {
		return noLines{serialdev.NewLoop()}, nil
	}})
	c := dialClient(t, ts, true)
	c.expect(&NotifyModemState{State: 0})
	for _, st := range []struct{ send, want byte }{
		{CtlDTROn, CtlDTROn}, {CtlDTRAsk, CtlDTROn}, {CtlDTROff, CtlDTROff}, {CtlDTRAsk, CtlDTROff},
		{CtlRTSOff, CtlRTSOff}, {CtlRTSAsk, CtlRTSOff}, {CtlRTSOn, CtlRTSOn},
		{CtlBreakOn, CtlBreakOn}, {CtlBreakAsk, CtlBreakOn}, {CtlBreakOff, CtlBreakOff},
	} {
		c.send(&SetControl{Value: st.send})
		c.expect(&SetControl{Value: st.want})
	}
}

func TestServerModemNotify(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, tr, Telnet, Config{})
			c := opened(t, ts)
			c.send(&SetControl{Value: CtlDTROff})
			c.expect(&SetControl{Value: CtlDTROff})
			c.expect(&NotifyModemState{State: ModemCTS | ModemDeltaDSR | ModemDeltaDCD})
			c.send(&SetControl{Value: CtlRTSOff})
			c.expect(&SetControl{Value: CtlRTSOff})
			c.expect(&NotifyModemState{State: ModemDeltaCTS})
			c.send(&SetControl{Value: CtlDTROn})
			c.expect(&SetControl{Value: CtlDTROn})
			c.expect(&NotifyModemState{State: ModemDSR | ModemDCD | ModemDeltaDSR | ModemDeltaDCD})
			// Only CTS is of interest now: DTR changes go unnoticed.
			c.send(&SetModemstateMask{Mask: ModemCTS})
			c.expect(&SetModemstateMask{Mask: ModemCTS})
			c.send(&SetControl{Value: CtlDTROff})
			c.expect(&SetControl{Value: CtlDTROff})
			c.noCommand(CmdNotifyModemState, 100*time.Millisecond)
			c.send(&SetControl{Value: CtlRTSOn})
			c.expect(&SetControl{Value: CtlRTSOn})
			c.expect(&NotifyModemState{State: ModemCTS})
			c.send(&NotifyModemState{})
			c.expect(&NotifyModemState{State: ModemCTS})

			// Line state: masked off by default, then breaks reported.
			c.send(&SetControl{Value: CtlBreakOn}, &SetControl{Value: CtlBreakOff})
			c.expect(&SetControl{Value: CtlBreakOn})
			c.expect(&SetControl{Value: CtlBreakOff})
			c.noCommand(CmdNotifyLineState, 100*time.Millisecond)
			c.send(&SetLinestateMask{Mask: LineBreak | LineFraming})
			c.expect(&SetLinestateMask{Mask: LineBreak | LineFraming})
			c.send(&SetControl{Value: CtlBreakOn})
			c.expect(&SetControl{Value: CtlBreakOn})
			c.expect(&NotifyLineState{State: LineBreak})
		})
	}
}

func TestModemChange(t *testing.T) {
	cases := []struct {
		prev, cur     serialdev.Status
		lines, deltas byte
	}{
		{serialdev.Status{}, serialdev.Status{}, 0, 0},
		{serialdev.Status{}, serialdev.Status{Lines: serialdev.CTS}, ModemCTS, ModemDeltaCTS},
		{serialdev.Status{Lines: serialdev.DSR | serialdev.DCD}, serialdev.Status{}, 0, ModemDeltaDSR | ModemDeltaDCD},
		{serialdev.Status{Lines: serialdev.RI}, serialdev.Status{}, 0, ModemRIEdge},
		{serialdev.Status{}, serialdev.Status{Lines: serialdev.RI}, ModemRI, 0},
		{serialdev.Status{Rings: 3}, serialdev.Status{Rings: 4}, 0, ModemRIEdge},
	}
	for _, c := range cases {
		lines, deltas := modemChange(c.prev, c.cur)
		if lines != c.lines || deltas != c.deltas {
			t.Errorf("%+v -> %+v: %#x %#x, want %#x %#x", c.prev, c.cur, lines, deltas, c.lines, c.deltas)
		}
	}
	if got := lineEvents(serialdev.Status{Breaks: 1, Overruns: 2}, serialdev.Status{Breaks: 2, Overruns: 2, ParityErrors: 1, FramingErrors: 5}); got != LineBreak|LineParity|LineFraming {
		t.Errorf("line events %#x", got)
	}
}

func randomData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

func TestServerDataBothWays(t *testing.T) {
	payload := append(randomData(32<<10, 1), bytes.Repeat([]byte{0xFF}, 512)...)
	payload = append(payload, "\r\n\r\x00\r"...)
	for _, tr := range transports {
		t.Run(tr+"/telnet", func(t *testing.T) {
			ts := startServer(t, tr, Telnet, Config{})
			c := opened(t, ts)
			// Write in pieces in the background; the loop echoes.
			go func() {
				for p := payload; len(p) > 0; {
					n := min(len(p), 3000)
					c.write(p[:n])
					p = p[n:]
				}
			}()
			got := c.readData(len(payload))
			if !bytes.Equal(got, payload) {
				t.Fatalf("echo differs (first difference at %d)", firstDiff(got, payload))
			}
			time.Sleep(20 * time.Millisecond)
			if n := c.dataLen(); n != 0 {
				t.Errorf("%d bytes more than sent", n)
			}
		})
		t.Run(tr+"/raw", func(t *testing.T) {
			ts := startServer(t, tr, Raw, Config{})
			conn, err := ts.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go conn.Write(payload)
			conn.SetReadDeadline(time.Now().Add(waitLong))
			got := make([]byte, len(payload)+1)
			if _, err := io.ReadFull(conn, got[:len(payload)]); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:len(payload)], payload) {
				t.Fatalf("echo differs (first difference at %d)", firstDiff(got, payload))
			}
			conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if n, _ := conn.Read(got); n != 0 {
				t.Errorf("%d bytes more than sent", n)
			}
		})
	}
}

// connHeld gives the bytes written to the server's clients so far and
// the device data it holds for them (queued, or in a write now).
func connHeld(ts *testServer) (sent int64, held int) {
	ts.Server.mu.Lock()
	defer ts.Server.mu.Unlock()
	for cl := range ts.conns {
		cl.mu.Lock()
		sent += cl.sent
		held += len(cl.data) + cl.inflight
		cl.mu.Unlock()
	}
	return sent, held
}

// TestServerStalledClient: a TCP client that stops reading fills its
// socket, so the device reader's direct writes fall short and the rest
// goes to the queue; nothing is lost, duplicated or reordered, and an
// answer asked for meanwhile arrives once the client reads again.
func TestServerStalledClient(t *testing.T) {
	// Past what the loopback sockets hold for a client that does not
	// read, with IACs to double and CRs.
	payload := append(randomData(6<<20, 4), bytes.Repeat([]byte{0xFF, '\r'}, 4096)...)
	stall := func(t *testing.T, ts *testServer) {
		t.Helper()
		// Stalled: data held, and none of it going out.
		deadline := time.Now().Add(waitLong)
		for {
			sent, _ := connHeld(ts)
			time.Sleep(50 * time.Millisecond)
			if again, held := connHeld(ts); again == sent && held > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the server never held data back for the stalled client")
			}
		}
	}
	t.Run("telnet", func(t *testing.T) {
		ts := startServer(t, "tcp", Telnet, Config{ClientBuffer: 32 << 10})
		c := opened(t, ts)
		c.pause.Lock()
		paused := true
		defer func() {
			if paused {
				c.pause.Unlock()
			}
		}()
		go func() {
			for p := payload; len(p) > 0; {
				n := min(len(p), 16<<10)
				if c.writeRaw(AppendData(nil, p[:n], c.binOut.Load())) != nil {
					return
				}
				p = p[n:]
			}
		}()
		stall(t, ts)
		c.send(&SetBaudRate{Baud: 57600})
		time.Sleep(20 * time.Millisecond)
		c.pause.Unlock()
		paused = false
		c.expect(&SetBaudRate{Baud: 57600})
		got := c.readData(len(payload))
		if !bytes.Equal(got, payload) {
			t.Fatalf("echo differs (first difference at %d)", firstDiff(got, payload))
		}
		time.Sleep(20 * time.Millisecond)
		if n := c.dataLen(); n != 0 {
			t.Errorf("%d bytes more than sent", n)
		}
	})
	t.Run("raw", func(t *testing.T) {
		ts := startServer(t, "tcp", Raw, Config{ClientBuffer: 32 << 10})
		conn, err := ts.dial()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go conn.Write(payload)
		stall(t, ts)
		conn.SetReadDeadline(time.Now().Add(waitLong))
		got := make([]byte, len(payload)+1)
		if _, err := io.ReadFull(conn, got[:len(payload)]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(payload)], payload) {
			t.Fatalf("echo differs (first difference at %d)", firstDiff(got, payload))
		}
		conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if n, _ := conn.Read(got); n != 0 {
			t.Errorf("%d bytes more than sent", n)
		}
	})
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestServerPlainTelnet: a client that refuses every option, COM-PORT and
// BINARY included, still gets the data stream, CRs and IACs intact.
func TestServerPlainTelnet(t *testing.T) {
	ts := startServer(t, "pipe", Telnet, Config{})
	c := dialClient(t, ts, false)
	// Data that crosses the negotiation is taken as binary (see
	// Codec.Binary): first an echo that the CR rule does not touch, which
	// comes after the server's requests, so the refusals are on their way.
	c.write([]byte("x"))
	if got := c.readData(1); string(got) != "x" {
		t.Fatalf("got %q, want x", got)
	}
	msg := []byte("hello\r\nworld\r\x00\xff\xfe\r")
	c.write(msg) // not binary: CR goes as CR NUL
	if got := c.readData(len(msg)); !bytes.Equal(got, msg) {
		t.Errorf("got %q, want %q", got, msg)
	}
	if c.tn.Enabled(OptBinary, true) || c.tn.Enabled(OptComPort, true) {
		t.Error("options on that the client refused")
	}
}

func TestServerSuspendResume(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, tr, Telnet, Config{ClientBuffer: 32 << 10})
			c := opened(t, ts)
			c.send(&FlowControlSuspend{})
			// More than the client buffer, less than what the loop, the
			// queue and the read buffers hold together (more would close
			// the loop: the echo waits for us, we wait for the echo): the
			// server must hold the device back, not drop.
			payload := randomData(100<<10, 2)
			written := make(chan struct{})
			go func() {
				defer close(written)
				for p := payload; len(p) > 0; {
					n := min(len(p), 8192)
					c.write(p[:n])
					p = p[n:]
				}
			}()
			select {
			case <-written:
			case <-time.After(waitLong):
				t.Fatal("writes blocked while suspended")
			}
			// Answers are not data: they still come.
			c.send(&SetBaudRate{Baud: 57600})
			c.expect(&SetBaudRate{Baud: 57600})
			time.Sleep(100 * time.Millisecond)
			if n := c.dataLen(); n != 0 {
				t.Fatalf("%d bytes arrived while suspended", n)
			}
			c.send(&FlowControlResume{})
			got := c.readData(len(payload))
			if !bytes.Equal(got, payload) {
				t.Fatalf("data differs at %d", firstDiff(got, payload))
			}
		})
	}
}

func TestServerPurge(t *testing.T) {
	ts := startServer(t, "pipe", Telnet, Config{})
	c := opened(t, ts)
	c.send(&FlowControlSuspend{})
	c.write([]byte("stale data"))
	// The echo is held in the server; purging the receive buffer drops it.
	deadline := time.Now().Add(waitLong)
	for {
		ts.Server.mu.Lock()
		n := 0
		for cl := range ts.conns {
			cl.mu.Lock()
			n += len(cl.data)
			cl.mu.Unlock()
		}
		ts.Server.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("echo never queued")
		}
		time.Sleep(time.Millisecond)
	}
	c.write([]byte("in device"))
	time.Sleep(20 * time.Millisecond)
	c.send(&PurgeData{Which: PurgeRx})
	c.send(&FlowControlResume{})
	c.expect(&PurgeData{Which: PurgeRx})
	c.write([]byte("M"))
	if got := c.readData(1); string(got) != "M" {
		t.Errorf("after purge got %q, want M", got)
	}
}

func TestServerExclusive(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, tr, Telnet, Config{})
			a := opened(t, ts)
			conn, err := ts.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(waitLong))
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				t.Fatalf("reading busy line: %v", err)
			}
			if !strings.HasPrefix(line, "port busy: in use by ") || !strings.Contains(line, " since ") || !strings.HasSuffix(line, "\r\n") {
				t.Errorf("busy line %q", line)
			}
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Error("busy connection not closed")
			}
			// The first client is unharmed.
			a.write([]byte("still mine"))
			if got := a.readData(10); string(got) != "still mine" {
				t.Errorf("got %q", got)
			}
			// After it leaves, the next one gets the port.
			a.conn.Close()
			a.waitEOF()
			var b *tclient
			for i := 0; ; i++ {
				b = dialClient(t, ts, true)
				b.waitFor(waitLong, "answer or close", func() bool { return len(b.cmds) > 0 || b.eof != nil })
				if b.eof == nil {
					break
				}
				if i > 50 {
					t.Fatal("port stays busy after its client left")
				}
				time.Sleep(10 * time.Millisecond)
			}
			b.write([]byte("next"))
			if got := b.readData(4); string(got) != "next" {
				t.Errorf("got %q", got)
			}
		})
	}
}

func TestServerKickOld(t *testing.T) {
	ts := startServer(t, "tcp", Telnet, Config{Policy: KickOld})
	a := opened(t, ts)
	a.send(&SetBaudRate{Baud: 57600})
	a.expect(&SetBaudRate{Baud: 57600})
	a.send(&SetControl{Value: CtlDTROff})
	a.expect(&SetControl{Value: CtlDTROff})
	b := opened(t, ts)
	a.waitEOF()
	a.mu.Lock()
	told := string(a.data)
	a.mu.Unlock()
	if !strings.HasPrefix(told, "sertun: port taken over by 127.0.0.1:") {
		t.Errorf("the old client was told %q", told)
	}
	// The newer client's session starts afresh: the configured settings,
	// DTR on, whatever the old client left.
	b.send(&SetBaudRate{Baud: 0})
	b.expect(&SetBaudRate{Baud: 9600})
	b.send(&SetControl{Value: CtlDTRAsk})
	b.expect(&SetControl{Value: CtlDTROn})
	b.write([]byte("mine now"))
	if got := b.readData(8); string(got) != "mine now" {
		t.Errorf("got %q", got)
	}
	if !strings.Contains(ts.logs.String(), "taken over") {
		t.Error("take-over not logged")
	}
	if ts.opens.Load() != 1 {
		t.Errorf("device opened %d times, want 1", ts.opens.Load())
	}
}

// gatedPort holds the first Write until the test lets it go.
type gatedPort struct {
	serialdev.Port
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (g *gatedPort) Write(p []byte) (int, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Port.Write(p)
}

// TestServerKickedStops: what a kicked client sent but the server had not
// yet passed on (its write under way, the rest of what the server had read)
// never reaches the device once the newer client has it.
func TestServerKickedStops(t *testing.T) {
	gate := &gatedPort{Port: serialdev.NewLoop(), entered: make(chan struct{}), release: make(chan struct{})}
	ts := startServer(t, "pipe", Telnet, Config{Policy: KickOld, Open: func(context.Context) (serialdev.Port, error) {
		return gate, nil
	}})
	a := opened(t, ts)
	// One read for the server: data, a command, more data.
	if err := a.writeRaw([]byte("old1\xff\xf1old2")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.entered:
	case <-time.After(waitLong):
		t.Fatal("first write never reached the device")
	}
	b := opened(t, ts) // kicks a while its write is under way
	a.waitEOF()
	close(gate.release)
	b.write([]byte("new"))
	// The write under way when a was kicked is cut short too.
	if got := string(b.readData(3)); got != "new" {
		t.Errorf("device echoed %q, want %q: the kicked client's data was written", got, "new")
	}
	time.Sleep(20 * time.Millisecond)
	if n := b.dataLen(); n != 0 {
		t.Errorf("%d more bytes echoed: the kicked client's rest was written", n)
	}
}

// stuckPort is a device that takes no data while stuck (flow control
// holding it back), until a write deadline passes.
type stuckPort struct {
	serialdev.Port
	stuck   atomic.Bool
	entered chan struct{} // closed when a write first waits
	once    sync.Once
	mu      sync.Mutex
	wdl     time.Time
}

func newStuckPort() *stuckPort {
	p := &stuckPort{Port: serialdev.NewLoop(), entered: make(chan struct{})}
	p.stuck.Store(true)
	return p
}

func (p *stuckPort) Write(b []byte) (int, error) {
	for p.stuck.Load() {
		p.once.Do(func() { close(p.entered) })
		p.mu.Lock()
		dl := p.wdl
		p.mu.Unlock()
		if !dl.IsZero() && time.Now().After(dl) {
			return 0, os.ErrDeadlineExceeded
		}
		time.Sleep(time.Millisecond)
	}
	return p.Port.Write(b)
}

func (p *stuckPort) SetWriteDeadline(t time.Time) error {
	p.mu.Lock()
	p.wdl = t
	p.mu.Unlock()
	return p.Port.SetWriteDeadline(t)
}

// TestServerStuckDeviceWrite: a client's write that the device does not
// take holds up neither the server's Close nor a take-over, and what the
// old client sent is not written once the new one has the port.
func TestServerStuckDeviceWrite(t *testing.T) {
	for _, policy := range []Policy{Exclusive, KickOld} {
		t.Run(policy.String(), func(t *testing.T) {
			dev := newStuckPort()
			ts := startServer(t, "pipe", Telnet, Config{Policy: policy, Open: func(context.Context) (serialdev.Port, error) {
				return dev, nil
			}})
			a := opened(t, ts)
			a.write([]byte("old"))
			select {
			case <-dev.entered:
			case <-time.After(waitLong):
				t.Fatal("write never reached the device")
			}
			if policy == Exclusive {
				closed := make(chan struct{})
				go func() { ts.Close(); close(closed) }()
				select {
				case <-closed:
				case <-time.After(2 * time.Second):
					t.Fatal("Close waits for a device write that does not end")
				}
				return
			}
			b := opened(t, ts)
			a.waitEOF()
			dev.stuck.Store(false)
			b.write([]byte("new"))
			if got := string(b.readData(3)); got != "new" {
				t.Errorf("device echoed %q, want %q: the old client's write went on", got, "new")
			}
		})
	}
}

// TestServerHalfClose: a client that half-closes after sending (echo AT |
// socat - TCP:...) still gets what the device answers, then EOF.
func TestServerHalfClose(t *testing.T) {
	ts := startServer(t, "tcp", Raw, Config{})
	conn, err := ts.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("AT\r")); err != nil {
		t.Fatal(err)
	}
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(waitLong))
	got, err := io.ReadAll(conn)
	if string(got) != "AT\r" || err != nil {
		t.Errorf("got %q, %v; want the echo, then EOF", got, err)
	}
}

// TestServerLeavingClient: a client that has sent EOF does not make the
// port busy for the next one, which gets a session of its own.
func TestServerLeavingClient(t *testing.T) {
	ts := startServer(t, "tcp", Telnet, Config{})
	a := opened(t, ts)
	a.send(&SetBaudRate{Baud: 57600})
	a.expect(&SetBaudRate{Baud: 57600})
	a.conn.(*net.TCPConn).CloseWrite()
	b := opened(t, ts) // at once, while a lingers
	b.send(&SetBaudRate{})
	b.expect(&SetBaudRate{Baud: 9600})
	a.waitEOF()
	if n := ts.opens.Load(); n != 2 {
		t.Errorf("device opened %d times, want 2", n)
	}
}

// TestServerReconnectAtOnce: a client that closes and connects again at
// once is not told the port is busy by its own old connection.
func TestServerReconnectAtOnce(t *testing.T) {
	ts := startServer(t, "tcp", Telnet, Config{})
	for i := 0; i < 20; i++ {
		a := opened(t, ts)
		a.conn.Close()
	}
	if n := ts.opens.Load(); n != 20 {
		t.Errorf("device opened %d times, want 20", n)
	}
}

func TestServerShared(t *testing.T) {
	ts := startServer(t, "tcp", Telnet, Config{Policy: Shared})
	a := opened(t, ts)
	b := opened(t, ts)
	a.write([]byte("from a "))
	b.readData(7)
	a.readData(7)
	b.write([]byte("from b"))
	if got := a.readData(6); string(got) != "from b" {
		t.Errorf("a got %q", got)
	}
	if got := b.readData(6); string(got) != "from b" {
		t.Errorf("b got %q", got)
	}
	// A change by one reaches the other; a query does not.
	a.send(&SetBaudRate{Baud: 19200})
	a.expect(&SetBaudRate{Baud: 19200})
	b.expect(&SetBaudRate{Baud: 19200})
	a.send(&SetBaudRate{})
	a.expect(&SetBaudRate{Baud: 19200})
	b.noCommand(CmdSetBaudRate, 50*time.Millisecond)
	// Modem changes reach both.
	b.send(&SetControl{Value: CtlRTSOff})
	b.expect(&SetControl{Value: CtlRTSOff})
	a.expect(&SetControl{Value: CtlRTSOff})
	a.expect(&NotifyModemState{State: ModemDSR | ModemDCD | ModemDeltaCTS})
	b.expect(&NotifyModemState{State: ModemDSR | ModemDCD | ModemDeltaCTS})
	// The device stays open until the last one leaves.
	a.conn.Close()
	b.write([]byte("x"))
	b.readData(1)
	if ts.opens.Load() != 1 {
		t.Errorf("device opened %d times", ts.opens.Load())
	}
}

// TestServerSlowClientShared: a client that never reads is dropped with
// the counts logged; the other one gets everything, unstalled.
func TestServerSlowClientShared(t *testing.T) {
	const limit = 64 << 10
	ts := startServer(t, "pipe", Telnet, Config{Policy: Shared, ClientBuffer: limit})
	fast := opened(t, ts)
	conn, err := ts.dial() // the slow one: negotiates, then never reads
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte{IAC, WILL, OptComPort})
	// In lock step, so that the fast client is never far behind: it is
	// the slow one that must go, and the fast one must not wait for it.
	payload := randomData(1<<20, 3)
	start := time.Now()
	for p := payload; len(p) > 0; {
		n := min(len(p), 16<<10)
		fast.write(p[:n])
		if got := fast.readData(n); !bytes.Equal(got, p[:n]) {
			t.Fatalf("fast client data differs at %d", len(payload)-len(p)+firstDiff(got, p[:n]))
		}
		p = p[n:]
	}
	t.Logf("1 MiB through in lock step in %v beside a stalled client", time.Since(start))
	logs := ts.logs.String()
	if !strings.Contains(logs, "client too slow") || !strings.Contains(logs, "queued=") || !strings.Contains(logs, fmt.Sprintf("limit=%d", limit)) {
		t.Errorf("no drop line with counts in log:\n%s", logs)
	}
}

// TestServerStalledClientExclusive: with one client at a time the device
// waits for its client, so a pause shorter than ClientStall, or one the
// client asked for (FLOWCONTROL-SUSPEND), loses nothing; a client that
// takes nothing for ClientStall is disconnected with the counts logged,
// and the port is free for the next one.
func TestServerStalledClientExclusive(t *testing.T) {
	const limit = 64 << 10
	for _, tt := range []struct {
		name    string
		pause   time.Duration
		suspend bool
		dropped bool
	}{
		{"pause", 150 * time.Millisecond, false, false},
		{"suspended", 1500 * time.Millisecond, true, false},
		{"stalled", 2 * time.Second, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, "pipe", Telnet, Config{ClientBuffer: limit, ClientStall: 400 * time.Millisecond})
			c := opened(t, ts)
			if tt.suspend {
				c.send(&FlowControlSuspend{})
			} else {
				c.pause.Lock() // the client stops reading; the loop device echoes what it writes
			}
			size := 512 << 10
			if tt.suspend {
				// No more than the queue and the loop device hold: the
				// server must still read RESUME from this client.
				size = 100 << 10
			}
			payload := randomData(size, 5)
			go c.writeRaw(AppendData(nil, payload, c.binOut.Load()))
			time.Sleep(tt.pause)
			if tt.suspend {
				c.send(&FlowControlResume{})
			} else {
				c.pause.Unlock()
			}
			if !tt.dropped {
				if got := c.readData(len(payload)); !bytes.Equal(got, payload) {
					t.Fatalf("data differs at %d after a pause", firstDiff(got, payload))
				}
				if logs := ts.logs.String(); strings.Contains(logs, "disconnecting") {
					t.Errorf("dropped after a pause shorter than ClientStall:\n%s", logs)
				}
				return
			}
			c.waitEOF()
			logs := ts.logs.String()
			if !strings.Contains(logs, "client takes nothing while the device waits for it") || !strings.Contains(logs, fmt.Sprintf("limit=%d", limit)) || !strings.Contains(logs, "queued=") {
				t.Errorf("no drop line with counts in log:\n%s", logs)
			}
			next := opened(t, ts)
			next.write([]byte("next"))
			if got := next.readData(4); string(got) != "next" {
				t.Fatalf("next client got %q", got)
			}
		})
	}
}

// TestServerDeviceGone: the device fails; clients are dropped, the server
// goes on, and the next client opens the device again.
func TestServerDeviceGone(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, tr, Telnet, Config{})
			a := opened(t, ts)
			a.write([]byte("before"))
			a.readData(6)
			ts.port().Close() // as if unplugged
			a.waitEOF()
			if got := string(a.readData(a.dataLen())); !strings.Contains(got, "sertun: loop:// gone") {
				t.Errorf("client was not told: data %q", got)
			}
			if !strings.Contains(ts.logs.String(), "device gone") {
				t.Error("device loss not logged")
			}
			b := opened(t, ts)
			b.write([]byte("after"))
			if got := b.readData(5); string(got) != "after" {
				t.Errorf("got %q", got)
			}
			if ts.opens.Load() != 2 {
				t.Errorf("device opened %d times, want 2", ts.opens.Load())
			}
		})
	}
}

// TestDescribe: the reason logged for a client's end; a device that hangs
// up (io.EOF from the device) is not the client closing.
func TestDescribe(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, "closed by client"},
		{io.EOF, "closed by client"},
		{fmt.Errorf("%w: %w", errDeviceGone, fmt.Errorf("reading: %w", io.EOF)), "device gone: reading: EOF"},
		{fmt.Errorf("x: %w", net.ErrClosed), "closed"},
		{errKicked, errKicked.Error()},
	}
	for _, tt := range tests {
		if got := describe(tt.err); got != tt.want {
			t.Errorf("describe(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// A device that does not open: the client gets one line in its own terms,
// the operator's log has the whole error.
func TestServerOpenFails(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("/dev/ttyUSB9: %w (run \"sertun list\" to see the ports)", serialdev.ErrNotFound), "sertun: cannot open loop://: not found (unplugged?)\r\n"},
		{fmt.Errorf("/dev/ttyUSB9: %w (another program has it open)", serialdev.ErrBusy), "sertun: cannot open loop://: busy (another program on the server has it open)\r\n"},
		{errors.New("odd"), "sertun: cannot open loop://: see the server's log\r\n"},
	} {
		ts := startServer(t, "pipe", Telnet, Config{Open: func(context.Context) (serialdev.Port, error) { return nil, tt.err }})
		conn, err := ts.dial()
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line != tt.want {
			t.Errorf("line %q, want %q", line, tt.want)
		}
		if logs := ts.logs.String(); !strings.Contains(logs, "/dev/ttyUSB9") && tt.err.Error() != "odd" {
			t.Errorf("the log lacks the error:\n%s", logs)
		}
	}
}

func TestServerDeviceClosedAfterLastClient(t *testing.T) {
	ts := startServer(t, "pipe", Telnet, Config{})
	a := opened(t, ts)
	p := ts.port()
	a.conn.Close()
	deadline := time.Now().Add(waitLong)
	for {
		if _, err := p.Settings(); err != nil {
			break // closed
		}
		if time.Now().After(deadline) {
			t.Fatal("device still open after its last client left")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b := opened(t, ts)
	b.send(&SetBaudRate{})
	b.expect(&SetBaudRate{Baud: 9600}) // a new session starts from Initial
}

func TestNewServerConfig(t *testing.T) {
	open := func(context.Context) (serialdev.Port, error) { return serialdev.NewLoop(), nil }
	for _, cfg := range []Config{
		{},
		{Open: open, Policy: 7},
		{Open: open, ClientBuffer: -1},
		{Open: open, Initial: serialdev.Settings{BaudRate: 9600, DataBits: 9}},
	} {
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	s, err := NewServer(Config{Open: open, Device: "/dev/x"})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Signature != "sertun /dev/x" || s.cfg.ClientBuffer != 1<<20 || s.cfg.Initial != serialdev.DefaultSettings() {
		t.Errorf("defaults %+v", s.cfg)
	}
	s.Close()
	if err := s.Serve(newPipeListener(), Telnet); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Close: %v", err)
	}
}

// TestServerClientOpenings: the ways real clients open a session all get
// the first modem state and answers, pipelined commands included.
func TestServerClientOpenings(t *testing.T) {
	settings := func() []byte {
		var b []byte
		for _, c := range []Command{&SetBaudRate{Baud: 115200}, &SetDataSize{Size: 8}, &SetParity{Parity: ParityNone},
			&SetStopSize{Stop: Stop1}, &SetControl{Value: CtlDTROn}, &SetControl{Value: CtlRTSOn}, &SetControl{Value: CtlBreakOff}} {
			b = AppendCommand(b, c, false)
		}
		return b
	}
	cases := []struct {
		name  string
		hello []byte
	}{
		// pyserial: DO ECHO, WILL SGA, DO SGA, DO COM-PORT, WILL COM-PORT;
		// settings only once the options are agreed.
		{"pyserial", []byte{IAC, DO, OptEcho, IAC, WILL, OptSGA, IAC, DO, OptSGA, IAC, DO, OptComPort, IAC, WILL, OptComPort}},
		// gensio: WILL COM-PORT only.
		{"gensio", []byte{IAC, WILL, OptComPort}},
		// hub4com: WILL COM-PORT and every setting at once, then BINARY,
		// SGA and DO ECHO.
		{"hub4com", append(append([]byte{IAC, WILL, OptComPort}, settings()...),
			IAC, WILL, OptBinary, IAC, DO, OptBinary, IAC, WILL, OptSGA, IAC, DO, OptSGA, IAC, DO, OptEcho)},
		// A client that only asks the server to do COM-PORT.
		{"do only", []byte{IAC, DO, OptComPort}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, "pipe", Telnet, Config{})
			conn, err := ts.dial()
			if err != nil {
				t.Fatal(err)
			}
			c := newTClient(t, conn)
			for _, o := range []byte{OptBinary, OptSGA, OptComPort} {
				c.tn.Support(o, true, true, o == OptComPort)
			}
			c.tn.Support(OptEcho, false, true, false)
			go c.writeRaw(tc.hello)
			go c.readLoop()
			c.expect(&NotifyModemState{State: ModemCTS | ModemDSR | ModemDCD})
			if tc.name != "hub4com" {
				c.writeRaw(settings())
			}
			for _, want := range []Command{&SetBaudRate{Baud: 115200}, &SetDataSize{Size: 8}, &SetParity{Parity: ParityNone},
				&SetStopSize{Stop: Stop1}, &SetControl{Value: CtlDTROn}, &SetControl{Value: CtlRTSOn}, &SetControl{Value: CtlBreakOff}} {
				c.expect(want)
			}
			c.write([]byte("data\xff"))
			if got := c.readData(5); string(got) != "data\xff" {
				t.Errorf("got %q", got)
			}
		})
	}
}

// TestServerCloseWithStuckClient: Close returns though a client has
// stopped reading with a full socket.
func TestServerCloseWithStuckClient(t *testing.T) {
	ts := startServer(t, "pipe", Telnet, Config{Policy: KickOld})
	conn, err := ts.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("fill the pipe: the server's writer blocks"))
	time.Sleep(50 * time.Millisecond)
	// A newer client kicks the stuck one; that must not hang either.
	b := opened(t, ts)
	b.write([]byte("ok"))
	if got := b.readData(2); string(got) != "ok" {
		t.Errorf("got %q", got)
	}
	// And Close is not held up by the stuck one (conn is still open and
	// unread here).
	start := time.Now()
	ts.Close()
	if d := time.Since(start); d > 3*flushTimeout {
		t.Errorf("Close took %v", d)
	}
}

// TestServerTelnetBreak: telnet's BRK puts a break on the line.
func TestServerTelnetBreak(t *testing.T) {
	ts := startServer(t, "pipe", Telnet, Config{})
	c := opened(t, ts)
	c.writeRaw([]byte{IAC, BRK})
	c.send(&SetControl{Value: CtlBreakAsk}) // answered after the pulse
	c.expect(&SetControl{Value: CtlBreakOff})
	st, err := ts.port().Status()
	if err != nil || st.Breaks != 1 {
		t.Errorf("breaks %d (%v), want 1", st.Breaks, err)
	}
}

// onlyConn is the server's one connection.
func onlyConn(t *testing.T, ts *testServer) *srvConn {
	t.Helper()
	ts.Server.mu.Lock()
	defer ts.Server.mu.Unlock()
	if len(ts.Server.conns) != 1 {
		t.Fatalf("%d connections, want 1", len(ts.Server.conns))
	}
	for c := range ts.Server.conns {
		return c
	}
	return nil
}

// An answer that comes while the device reader's write to the client has
// stopped short goes after the rest of that write, which may begin with
// the second half of an escaped 0xFF. Before, it went between them, and
// the client read the answer as data.
func TestServerAnswerAfterDirectRest(t *testing.T) {
	for trial := range 6 {
		ts := startServer(t, "tcp", Telnet, Config{ClientBuffer: 64 << 20})
		c := opened(t, ts)
		sc := onlyConn(t, ts)
		c.pause.Lock()
		// One or two plain bytes first: the write stops inside an escape
		// whatever the parity of the socket's room.
		chunk := append(bytes.Repeat([]byte{'A'}, 1+trial%2), bytes.Repeat([]byte{IAC}, 4000)...)
		split := false
		sc.afterTryWrite = func() { // the device is silent: only this goroutine sends
			split = true
			sc.sendCommand(&SetBaudRate{Baud: 9600})
		}
		sent := 0
		for !split && sent < 32<<20 {
			sc.sendData(chunk) // as the device reader does
			sent += len(chunk)
		}
		c.pause.Unlock()
		if !split {
			t.Fatal("the socket never filled")
		}
		c.waitFor(waitLong, "all the data", func() bool { return len(c.data) >= sent })
		c.expect(&SetBaudRate{Baud: 9600})
		c.mu.Lock()
		got := c.data
		c.mu.Unlock()
		if want := bytes.Repeat(chunk, sent/len(chunk)); !bytes.Equal(got, want) {
			i := firstDiff(got, want)
			t.Fatalf("trial %d: data differs at %d of %d: %x", trial, i, len(want), got[i:min(len(got), i+12)])
		}
	}
}

// PURGE-DATA (receive) also drops the device data the device reader holds
// while the client's queue is full, not only the queue.
func TestServerPurgeDropsHeldRead(t *testing.T) {
	ts := startServer(t, "tcp", Telnet, Config{ClientBuffer: 4096})
	c := opened(t, ts)
	sc := onlyConn(t, ts)
	c.send(&FlowControlSuspend{})
	waitUntil(t, waitLong, "suspended", func() bool { sc.mu.Lock(); defer sc.mu.Unlock(); return sc.suspend })
	port := ts.port()
	port.Write(bytes.Repeat([]byte{'x'}, 4096)) // fills the queue
	waitUntil(t, waitLong, "queue full", func() bool { sc.mu.Lock(); defer sc.mu.Unlock(); return len(sc.data) >= 4096 })
	port.Write(bytes.Repeat([]byte{'y'}, 100)) // read and held: no room
	time.Sleep(50 * time.Millisecond)          // (if not read yet, the purge takes it anyway)
	c.send(&PurgeData{Which: PurgeRx})
	c.expect(&PurgeData{Which: PurgeRx})
	c.send(&FlowControlResume{})
	c.write([]byte("M")) // echoed by the loopback after the purge
	c.waitFor(waitLong, "the echo", func() bool { return bytes.Contains(c.data, []byte("M")) })
	c.mu.Lock()
	got := string(c.data)
	c.mu.Unlock()
	if got != "M" {
		t.Errorf("after the purge the client got %d bytes: %.20q, want only the echo", len(got), got)
	}
}

// A client that goes away while the device does not take its data (flow
// control holding it back) does not keep the port taken: the next client
// gets it.
func TestServerGoneWhileDeviceStuck(t *testing.T) {
	dev := newStuckPort()
	var opens atomic.Int32
	ts := startServer(t, "tcp", Telnet, Config{Policy: Exclusive, Open: func(context.Context) (serialdev.Port, error) {
		if opens.Add(1) == 1 {
			return dev, nil
		}
		return serialdev.NewLoop(), nil
	}})
	a := opened(t, ts)
	a.write([]byte("ATZ\r"))
	<-dev.entered
	a.conn.Close() // the user gives up
	waitUntil(t, 4*stuckCheck, "the gone client's session to end", func() bool {
		ts.Server.mu.Lock()
		defer ts.Server.mu.Unlock()
		return len(ts.Server.conns) == 0
	})
	b := opened(t, ts)
	b.write([]byte("x"))
	b.waitFor(waitLong, "the new client's echo", func() bool { return bytes.Contains(b.data, []byte("x")) })
	if !strings.Contains(ts.logs.String(), "client gone while its data waits for the device") {
		t.Errorf("not logged; server log:\n%s", ts.logs)
	}
}

// A client that only shut its sending side (nc -N) while its data waits
// for the device is not taken for gone: it gets the device's answer.
func TestServerHalfClosedWhileDeviceStuck(t *testing.T) {
	dev := newStuckPort()
	ts := startServer(t, "tcp", Telnet, Config{Policy: Exclusive, Open: func(context.Context) (serialdev.Port, error) {
		return dev, nil
	}})
	a := opened(t, ts)
	a.write([]byte("ATZ\r"))
	<-dev.entered
	if err := a.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * stuckCheck)
	dev.stuck.Store(false)
	a.waitFor(waitLong, "the echo", func() bool { return bytes.Contains(a.data, []byte("ATZ\r")) })
	if strings.Contains(ts.logs.String(), "client gone") {
		t.Errorf("a half-closed client taken for gone; server log:\n%s", ts.logs)
	}
}
