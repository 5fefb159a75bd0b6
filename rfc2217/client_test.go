package rfc2217

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sertun/sertun/serialdev"
)

// fakeServer is a scripted RFC 2217 server for one client connection. By
// default it behaves as RFC 2217 says: it agrees to COM-PORT-OPTION,
// BINARY and SGA, keeps the settings and answers every command with the
// value in force. Its policy fields make it behave like the servers in the
// field (ser2net, hub4com) or worse.
type fakeServer struct {
	t    testing.TB
	conn net.Conn
	tn   Codec
	wmu  sync.Mutex
	pol  serverPolicy

	mu        sync.Mutex
	data      []byte    // data from the client
	cmds      []Command // COM-PORT commands from the client, in order
	settings  serialdev.Settings
	dtr, rts  bool
	suspended bool // the client sent FLOWCONTROL-SUSPEND
	changed   chan struct{}
	done      chan struct{}
}

type serverPolicy struct {
	raw     bool          // no telnet at all: a raw TCP port
	refuse  bool          // refuse COM-PORT-OPTION
	greet   []byte        // sent as soon as the client connects
	reverse bool          // answers to one batch of commands go out in reverse order
	delay   time.Duration // answers go out this late
	echo    bool          // data comes back as it came
	mirror  bool          // no server at all: every byte comes back (newMirror)
	// answer replaces the default answer to cmd; nil sends nothing.
	answer func(s *fakeServer, cmd Command, std []Command) []Command
}

// ser2netPolicy: SET-CONTROL for DTR and RTS unanswered (a pty has no modem
// lines), DTR/RTS queries answered with the query value, FLOWCONTROL-SUSPEND
// and -RESUME taken as "flow control none", and it opens by asking for
// COM-PORT itself and sending NOTIFY-MODEMSTATE.
var ser2netGreeting = []byte{IAC, WILL, OptSGA, IAC, DO, OptSGA, IAC, WILL, OptEcho, IAC, DONT, OptEcho,
	IAC, DO, OptBinary, IAC, WILL, OptBinary, IAC, DO, OptComPort,
	IAC, SB, OptComPort, 107, 0, IAC, SE}

func ser2netAnswer(s *fakeServer, cmd Command, std []Command) []Command {
	switch v := cmd.(type) {
	case *SetControl:
		switch v.Value {
		case CtlDTROn, CtlDTROff, CtlRTSOn, CtlRTSOff:
			return nil
		case CtlDTRAsk, CtlRTSAsk:
			return []Command{&SetControl{Value: v.Value}}
		}
	case *FlowControlSuspend, *FlowControlResume:
		s.mu.Lock()
		s.settings.OutFlow = serialdev.FlowNone
		s.suspended = false
		s.mu.Unlock()
		return []Command{&SetControl{Value: CtlFlowNone}}
	case *SetModemstateMask:
		return nil
	}
	return std
}

// hub4comAnswer: flow control always NONE, DTR/RTS unanswered.
func hub4comAnswer(s *fakeServer, cmd Command, std []Command) []Command {
	if v, ok := cmd.(*SetControl); ok {
		switch {
		case v.Value <= CtlFlowHardware || v.Value == CtlFlowDCD || v.Value == CtlFlowDSR:
			return []Command{&SetControl{Value: CtlFlowNone}}
		case v.Value >= CtlInFlowAsk && v.Value <= CtlInFlowHardware || v.Value == CtlInFlowDTR:
			return []Command{&SetControl{Value: CtlInFlowNone}}
		case v.Value >= CtlDTRAsk && v.Value <= CtlRTSOff:
			return nil
		}
	}
	return std
}

// pyserialAnswer: pyserial's PortManager answers neither inbound flow
// control nor the DTR, RTS and BREAK queries.
func pyserialAnswer(s *fakeServer, cmd Command, std []Command) []Command {
	if v, ok := cmd.(*SetControl); ok {
		switch {
		case v.Value == CtlDTRAsk, v.Value == CtlRTSAsk, v.Value == CtlBreakAsk,
			v.Value >= CtlInFlowAsk && v.Value <= CtlInFlowHardware, v.Value >= CtlFlowDCD:
			return nil
		}
	}
	return std
}

func ptr[T any](v T) *T { return &v }

func silentAnswer(*fakeServer, Command, []Command) []Command { return nil }

// newFake starts a fake server on one end of a connection and returns the
// other end for the client. transport is "pipe" or "tcp".
func newFake(t testing.TB, transport string, pol serverPolicy) (*fakeServer, net.Conn) {
	t.Helper()
	var cli, srv net.Conn
	switch transport {
	case "pipe":
		cli, srv = net.Pipe()
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cli, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		srv, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("transport %q", transport)
	}
	s := &fakeServer{t: t, conn: srv, pol: pol, settings: serialdev.DefaultSettings(),
		changed: make(chan struct{}, 1), done: make(chan struct{})}
	if !pol.refuse {
		s.tn.Support(OptComPort, false, true, true)
	}
	s.tn.Support(OptBinary, true, true, false)
	s.tn.Support(OptSGA, true, true, false)
	go s.run()
	t.Cleanup(func() {
		srv.Close()
		cli.Close()
		<-s.done
	})
	return s, cli
}

// newMirror returns a connection to a TCP echo: every byte comes back.
func newMirror(t testing.TB) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(srv, srv)
	}()
	t.Cleanup(func() {
		srv.Close()
		cli.Close()
		<-done
	})
	return cli
}

func (s *fakeServer) write(b []byte) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.conn.Write(b)
}

// send sends server messages (answers and notifications).
func (s *fakeServer) send(cmds ...Command) {
	var b []byte
	for _, c := range cmds {
		b = AppendCommand(b, c, true)
	}
	s.write(b)
}

func (s *fakeServer) sendData(p []byte) { s.write(AppendData(nil, p, true)) }

func (s *fakeServer) run() {
	defer close(s.done)
	if len(s.pol.greet) > 0 {
		// Before any answer, as the peers do: sent from another goroutine,
		// it could come after them and the client would miss the
		// NOTIFY-MODEMSTATE in it (a flaky test).
		s.write(s.pol.greet)
	}
	buf := make([]byte, 8192)
	for {
		n, err := s.conn.Read(buf)
		if err != nil {
			return
		}
		if s.pol.raw {
			s.mu.Lock()
			s.data = append(s.data, buf[:n]...)
			s.mu.Unlock()
			wake(s.changed)
			continue
		}
		in := buf[:n]
		var answers []Command
		for len(in) > 0 {
			k, data, ev := s.tn.Decode(in)
			if s.pol.echo {
				s.sendData(data)
			} else {
				s.mu.Lock()
				s.data = append(s.data, data...)
				s.mu.Unlock()
			}
			if ev.Kind == EventSubneg && ev.Opt == OptComPort {
				if cmd, _, err := DecodeCommand(ev.Data); err == nil {
					answers = append(answers, s.handle(cmd)...)
				}
			}
			in = in[k:]
		}
		out := s.tn.AppendReplies(nil)
		if len(out) > 0 {
			s.write(out)
		}
		if s.pol.reverse {
			for i, j := 0, len(answers)-1; i < j; i, j = i+1, j-1 {
				answers[i], answers[j] = answers[j], answers[i]
			}
		}
		if len(answers) > 0 {
			if s.pol.delay > 0 {
				go func() {
					time.Sleep(s.pol.delay)
					s.send(answers...)
				}()
			} else {
				s.send(answers...)
			}
		}
		wake(s.changed)
	}
}

// handle applies a client command and returns the answers.
func (s *fakeServer) handle(cmd Command) []Command {
	s.mu.Lock()
	s.cmds = append(s.cmds, cmd)
	var std []Command
	switch v := cmd.(type) {
	case *SetBaudRate:
		if v.Baud != 0 {
			s.settings.BaudRate = int(v.Baud)
		}
		std = []Command{&SetBaudRate{Baud: uint32(s.settings.BaudRate)}}
	case *SetDataSize:
		if v.Size != 0 {
			s.settings.DataBits = int(v.Size)
		}
		std = []Command{&SetDataSize{Size: byte(s.settings.DataBits)}}
	case *SetParity:
		if p, ok := ParityFromWire(v.Parity); ok {
			s.settings.Parity = p
		}
		std = []Command{&SetParity{Parity: ParityToWire(s.settings.Parity)}}
	case *SetStopSize:
		if st, ok := StopFromWire(v.Stop); ok {
			s.settings.StopBits = st
		}
		std = []Command{&SetStopSize{Stop: StopToWire(s.settings.StopBits)}}
	case *SetControl:
		a := v.Value
		if f, in, ok := FlowFromWire(v.Value); ok && in {
			s.settings.InFlow = f
		} else if ok {
			s.settings.OutFlow = f
		}
		switch v.Value {
		case CtlFlowAsk:
			a = OutFlowToWire(s.settings.OutFlow)
		case CtlInFlowAsk:
			a = InFlowToWire(s.settings.InFlow)
		case CtlDTROn, CtlDTROff:
			s.dtr = v.Value == CtlDTROn
		case CtlRTSOn, CtlRTSOff:
			s.rts = v.Value == CtlRTSOn
		case CtlDTRAsk:
			a = CtlDTROff
			if s.dtr {
				a = CtlDTROn
			}
		case CtlRTSAsk:
			a = CtlRTSOff
			if s.rts {
				a = CtlRTSOn
			}
		case CtlBreakAsk:
			a = CtlBreakOff
		}
		std = []Command{&SetControl{Value: a}}
	case *FlowControlSuspend:
		s.suspended = true
	case *FlowControlResume:
		s.suspended = false
	case *SetLinestateMask:
		std = []Command{&SetLinestateMask{Mask: v.Mask}}
	case *SetModemstateMask:
		std = []Command{&SetModemstateMask{Mask: v.Mask}}
	case *PurgeData:
		std = []Command{&PurgeData{Which: v.Which}}
	case *Signature:
		std = []Command{&Signature{Text: "fake"}}
	}
	s.mu.Unlock()
	if s.pol.answer != nil {
		return s.pol.answer(s, cmd, std)
	}
	return std
}

// waitFor polls cond (under s.mu) until it holds or d passes.
func (s *fakeServer) waitFor(d time.Duration, what string, cond func() bool) {
	s.t.Helper()
	deadline := time.After(d)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.changed:
		case <-deadline:
			s.t.Fatalf("fake server: timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (s *fakeServer) received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.data...)
}

// commands returns the client's commands since index from.
func (s *fakeServer) commands(from int) []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	if from > len(s.cmds) {
		return nil
	}
	return append([]Command(nil), s.cmds[from:]...)
}

func (s *fakeServer) ncmds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.cmds)
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

const testWait = 300 * time.Millisecond

func dialFake(t testing.TB, transport string, pol serverPolicy) (*fakeServer, *Client) {
	t.Helper()
	s, conn := newFake(t, transport, pol)
	c, err := newClient(context.Background(), conn, "fake:1", ClientConfig{Timeout: testWait, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("newClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c
}

func TestClientDialPeers(t *testing.T) {
	fast := serialdev.Settings{BaudRate: 115200, DataBits: 8}
	tests := []struct {
		name    string
		pol     serverPolicy
		initial serialdev.Settings
		want    serialdev.Settings
		max     time.Duration    // Dial must not take longer
		lines   *serialdev.Lines // from a NOTIFY-MODEMSTATE sent unasked; nil: none sent
	}{
		{"rfc2217", serverPolicy{}, fast, fast, testWait, nil},
		{"ser2net", serverPolicy{greet: ser2netGreeting, answer: ser2netAnswer}, fast, fast, testWait, new(serialdev.Lines)},
		// hub4com: NOTIFY-MODEMSTATE before negotiation completes,
		// answers out of order, flow control NONE.
		{"hub4com", serverPolicy{greet: AppendCommand(nil, &NotifyModemState{State: ModemCTS | ModemDCD}, true),
			answer: hub4comAnswer, reverse: true},
			serialdev.Settings{BaudRate: 19200, DataBits: 7, Parity: serialdev.ParityEven, OutFlow: serialdev.FlowRTSCTS},
			serialdev.Settings{BaudRate: 19200, DataBits: 7, Parity: serialdev.ParityEven}, testWait,
			ptr(serialdev.CTS | serialdev.DCD)},
		// A server that answers no COM-PORT command: Dial still works,
		// after one timeout, with the defaults.
		{"silent", serverPolicy{answer: silentAnswer}, fast, serialdev.DefaultSettings(), 2 * testWait, nil},
		{"late", serverPolicy{delay: testWait / 3}, fast, fast, testWait, nil},
		// pyserial: no answer to the inbound flow-control query, which
		// is given up soon after the others are in.
		{"pyserial", serverPolicy{answer: pyserialAnswer}, fast, fast, testWait / 2, nil},
	}
	for _, tt := range tests {
		for _, tr := range []string{"pipe", "tcp"} {
			t.Run(tt.name+"/"+tr, func(t *testing.T) {
				s, conn := newFake(t, tr, tt.pol)
				s.mu.Lock()
				s.settings = tt.initial
				s.mu.Unlock()
				start := time.Now()
				c, err := newClient(context.Background(), conn, "fake:1", ClientConfig{Timeout: testWait, Logger: quietLogger()})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if d := time.Since(start); d > tt.max+100*time.Millisecond {
					t.Errorf("Dial took %v", d)
				}
				got, err := c.Settings()
				if err != nil || got != tt.want {
					t.Errorf("Settings() = %v, %v; want %v", got, err, tt.want)
				}
				if !c.binaryOut.Load() {
					t.Error("BINARY not on")
				}
				st, err := c.Status()
				if tt.lines == nil && !errors.Is(err, serialdev.ErrNoModemLines) {
					t.Errorf("Status() without NOTIFY-MODEMSTATE: %v, %v", st, err)
				}
				if tt.lines != nil && (err != nil || st.Lines != *tt.lines) {
					t.Errorf("Status() = %v, %v; want lines %v", st, err, *tt.lines)
				}
				// The masks were asked for.
				var lm, mm bool
				for _, cmd := range s.commands(0) {
					switch v := cmd.(type) {
					case *SetLinestateMask:
						lm = v.Mask == LineBreak|LineFraming|LineParity|LineOverrun
					case *SetModemstateMask:
						mm = v.Mask == 255
					}
				}
				if !lm || !mm {
					t.Errorf("masks not sent: linestate %v modemstate %v", lm, mm)
				}
			})
		}
	}
}

func TestClientDialNotRFC2217(t *testing.T) {
	tests := []struct {
		name    string
		pol     serverPolicy
		closeIt bool
		notRFC  bool
		want    string
	}{
		{"raw tcp", serverPolicy{raw: true}, false, true,
			"rfc2217: fake:1 does not speak RFC 2217 (no answer to WILL COM-PORT-OPTION in 300ms)"},
		{"refuses", serverPolicy{refuse: true}, false, true,
			"rfc2217: fake:1 does not speak RFC 2217 (it refused COM-PORT-OPTION)"},
		{"busy", serverPolicy{raw: true, greet: []byte("port busy: in use by 10.0.0.1:5000\r\n")}, true, false,
			`rfc2217: fake:1 closed the connection during negotiation, saying "port busy: in use by 10.0.0.1:5000": EOF`},
		// A TCP echo (or a raw port to a looped-back device) mirrors our
		// WILL COM-PORT and so seems to agree to it.
		{"echo", serverPolicy{mirror: true}, false, true,
			"rfc2217: fake:1 does not speak RFC 2217 (it sent our own commands back and answered none: an echo server, or a raw port to a looped-back device?)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.pol.mirror {
				conn := newMirror(t)
				start := time.Now()
				c, err := newClient(context.Background(), conn, "fake:1", ClientConfig{Timeout: testWait, Logger: quietLogger()})
				if err == nil {
					c.Close()
				}
				if err == nil || !errors.Is(err, ErrNotRFC2217) || err.Error() != tt.want {
					t.Errorf("error:\n got %v\nwant %s", err, tt.want)
				}
				if d := time.Since(start); d > testWait+200*time.Millisecond {
					t.Errorf("took %v", d)
				}
				return
			}
			s, conn := newFake(t, "tcp", tt.pol)
			if tt.closeIt {
				go func() {
					s.waitFor(time.Second, "hello", func() bool { return len(s.data) > 0 })
					time.Sleep(20 * time.Millisecond)
					s.conn.Close()
				}()
			}
			start := time.Now()
			c, err := newClient(context.Background(), conn, "fake:1", ClientConfig{Timeout: testWait, Logger: quietLogger()})
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if errors.Is(err, ErrNotRFC2217) != tt.notRFC {
				t.Errorf("errors.Is(err, ErrNotRFC2217) = %v", !tt.notRFC)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
			if d := time.Since(start); d > testWait+200*time.Millisecond {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestClientDialErrors(t *testing.T) {
	// A port nobody listens on: a free port, closed again.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Dial(context.Background(), addr, ClientConfig{})
	if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), addr+" refused the connection") {
		t.Errorf("refused: %v", err)
	}
	_, err = Dial(context.Background(), "localhost", ClientConfig{})
	if err == nil || !strings.Contains(err.Error(), "want host:port") {
		t.Errorf("no port: %v", err)
	}
	// A cancelled context stops the negotiation at once.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, ln.Addr().String(), ClientConfig{Timeout: 10 * time.Second})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Errorf("cancelled: %v after %v", err, time.Since(start))
	}
}

// settingsCmds picks the settings commands out of what the server got.
func settingsCmds(cmds []Command) []Command {
	var out []Command
	for _, c := range cmds {
		switch c.(type) {
		case *SetBaudRate, *SetDataSize, *SetParity, *SetStopSize, *SetControl:
			out = append(out, c)
		}
	}
	return out
}

// cmdString writes commands as "baud 0,0,150,0;size 7;".
func cmdString(cmds []Command) string {
	var b strings.Builder
	for _, c := range cmds {
		name := "other"
		switch c.(type) {
		case *SetBaudRate:
			name = "baud"
		case *SetDataSize:
			name = "size"
		case *SetParity:
			name = "parity"
		case *SetStopSize:
			name = "stop"
		case *SetControl:
			name = "control"
		}
		b.WriteString(name)
		for i, x := range c.marshal(nil) {
			if i == 0 {
				b.WriteByte(' ')
			} else {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(int(x)))
		}
		b.WriteByte(';')
	}
	return b.String()
}

func TestClientSetSettings(t *testing.T) {
	base := serialdev.DefaultSettings()
	rtscts := base
	rtscts.OutFlow, rtscts.InFlow = serialdev.FlowRTSCTS, serialdev.FlowRTSCTS
	tests := []struct {
		name     string
		pol      serverPolicy
		set      serialdev.Settings
		wantSent string // commands the client sends
		want     serialdev.Settings
		maxWait  time.Duration
	}{
		{"only baud", serverPolicy{}, serialdev.Settings{BaudRate: 38400, DataBits: 8},
			"baud 0,0,150,0;", serialdev.Settings{BaudRate: 38400, DataBits: 8}, testWait},
		{"format", serverPolicy{}, serialdev.Settings{BaudRate: 9600, DataBits: 7, Parity: serialdev.ParityEven, StopBits: serialdev.Stop1Half},
			"size 7;parity 3;stop 3;", serialdev.Settings{BaudRate: 9600, DataBits: 7, Parity: serialdev.ParityEven, StopBits: serialdev.Stop1Half}, testWait},
		{"flow both", serverPolicy{}, rtscts, "control 3;control 16;", rtscts, testWait},
		{"inbound only", serverPolicy{}, serialdev.Settings{BaudRate: 9600, DataBits: 8, InFlow: serialdev.FlowXonXoff},
			"control 15;", serialdev.Settings{BaudRate: 9600, DataBits: 8, InFlow: serialdev.FlowXonXoff}, testWait},
		{"nothing changed", serverPolicy{}, base, "", base, 50 * time.Millisecond},
		// hub4com answers every flow-control request with NONE: believed.
		{"hub4com", serverPolicy{answer: hub4comAnswer}, rtscts, "control 3;control 16;", base, testWait},
		// pyserial leaves inbound flow control unanswered; Dial found
		// that out, so it is assumed in force without a wait.
		{"pyserial", serverPolicy{answer: pyserialAnswer}, rtscts, "control 3;control 16;", rtscts, testWait / 2},
		// A server that never answers: assumed in force after the timeout.
		{"never answers", serverPolicy{answer: func(s *fakeServer, cmd Command, std []Command) []Command {
			if _, ok := cmd.(*SetBaudRate); ok {
				return nil
			}
			return std
		}}, serialdev.Settings{BaudRate: 57600, DataBits: 8, StopBits: serialdev.Stop2},
			"baud 0,0,225,0;stop 2;", serialdev.Settings{BaudRate: 57600, DataBits: 8, StopBits: serialdev.Stop2}, testWait + 150*time.Millisecond},
		// Another value: the server's is in force.
		{"other value", serverPolicy{answer: func(s *fakeServer, cmd Command, std []Command) []Command {
			if _, ok := cmd.(*SetBaudRate); ok {
				return []Command{&SetBaudRate{Baud: 115200}}
			}
			return std
		}}, serialdev.Settings{BaudRate: 250000, DataBits: 8},
			"baud 0,3,208,144;", serialdev.Settings{BaudRate: 115200, DataBits: 8}, testWait},
		{"out of order", serverPolicy{reverse: true}, serialdev.Settings{BaudRate: 1200, DataBits: 5, Parity: serialdev.ParityMark, StopBits: serialdev.Stop2},
			"baud 0,0,4,176;size 5;parity 4;stop 2;", serialdev.Settings{BaudRate: 1200, DataBits: 5, Parity: serialdev.ParityMark, StopBits: serialdev.Stop2}, testWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := dialFake(t, "pipe", tt.pol)
			from := s.ncmds()
			start := time.Now()
			if err := c.SetSettings(tt.set); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > tt.maxWait+50*time.Millisecond {
				t.Errorf("SetSettings took %v", d)
			}
			// The server has seen everything once SetSettings returns,
			// unless it does not answer: wait a little then.
			time.Sleep(10 * time.Millisecond)
			if got := cmdString(settingsCmds(s.commands(from))); got != tt.wantSent {
				t.Errorf("sent %q, want %q", got, tt.wantSent)
			}
			if got, _ := c.Settings(); got != tt.want {
				t.Errorf("Settings() = %v, want %v", got, tt.want)
			}
		})
	}
	if err := (&Client{}).SetSettings(serialdev.Settings{BaudRate: 9600, DataBits: 9}); !errors.Is(err, serialdev.ErrInvalidSettings) {
		t.Errorf("invalid settings: %v", err)
	}
}

// A kind the server never answers is waited for once, not every time, and
// is waited for again once the server answers one; DTR and RTS count as
// one (the first SetRTS after an unanswered SetDTR does not wait). ser2net
// tells at Dial that it will not answer: it sends the DTR and RTS queries
// back as they came.
func TestClientSilentKindNotWaitedAgain(t *testing.T) {
	tests := []struct {
		name  string
		pol   serverPolicy
		waits []time.Duration // for SetDTR, SetRTS, SetDTR, ...
	}{
		{"hub4com", serverPolicy{answer: hub4comAnswer}, []time.Duration{testWait, 0, 0, 0, 0, 0}},
		{"ser2net", serverPolicy{answer: ser2netAnswer}, []time.Duration{0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c := dialFake(t, "pipe", tt.pol)
			if tt.waits[0] == 0 {
				// Dial does not wait for the echoed queries; they follow
				// it closely. Timing starts once they are in.
				waitUntil(t, time.Second, "queries echoed", func() bool {
					c.mu.Lock()
					defer c.mu.Unlock()
					return c.silent[ansDTR] && c.silent[ansRTS]
				})
			}
			for i, want := range tt.waits {
				set, name := c.SetDTR, "SetDTR"
				if i%2 == 1 {
					set, name = c.SetRTS, "SetRTS"
				}
				start := time.Now()
				if err := set(i%4 < 2); err != nil {
					t.Fatal(err)
				}
				d := time.Since(start)
				if d < want || d > want+100*time.Millisecond {
					t.Errorf("%s (call %d) took %v, want about %v", name, i, d, want)
				}
			}
			c.mu.Lock()
			silent := c.silent[ansDTR] && c.silent[ansRTS]
			c.mu.Unlock()
			if !silent {
				t.Error("DTR and RTS not marked silent")
			}
		})
	}
}

func TestClientLateAndUnsolicitedAnswers(t *testing.T) {
	late := 2 * testWait
	s, c := dialFake(t, "pipe", serverPolicy{answer: func(s *fakeServer, cmd Command, std []Command) []Command {
		if b, ok := cmd.(*SetBaudRate); ok && b.Baud != 0 {
			go func() {
				time.Sleep(late)
				s.send(std...)
			}()
			return nil
		}
		return std
	}})
	start := time.Now()
	if err := c.SetSettings(serialdev.Settings{BaudRate: 4800, DataBits: 8}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < testWait || d > late {
		t.Errorf("SetSettings took %v", d)
	}
	// Another client's change on a ser2net: answers nobody asked for.
	s.send(&SetBaudRate{Baud: 2400}, &SetControl{Value: CtlFlowXonXoff}, &SetDataSize{Size: 6})
	want := serialdev.Settings{BaudRate: 2400, DataBits: 6, OutFlow: serialdev.FlowXonXoff}
	waitUntil(t, time.Second, "unsolicited answers applied", func() bool { got, _ := c.Settings(); return got == want })
	// Then the late answer to ours.
	waitUntil(t, 2*late, "late answer applied", func() bool { got, _ := c.Settings(); return got.BaudRate == 4800 })
}

func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestClientControlLines(t *testing.T) {
	s, c := dialFake(t, "pipe", serverPolicy{})
	tests := []struct {
		name string
		do   func() error
		want byte
	}{
		{"dtr on", func() error { return c.SetDTR(true) }, CtlDTROn},
		{"dtr off", func() error { return c.SetDTR(false) }, CtlDTROff},
		{"rts on", func() error { return c.SetRTS(true) }, CtlRTSOn},
		{"rts off", func() error { return c.SetRTS(false) }, CtlRTSOff},
		{"break on", func() error { return c.SetBreak(true) }, CtlBreakOn},
		{"break off", func() error { return c.SetBreak(false) }, CtlBreakOff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := s.ncmds()
			start := time.Now()
			if err := tt.do(); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > testWait/2 {
				t.Errorf("took %v: answer not seen", d)
			}
			cmds := s.commands(from)
			if len(cmds) != 1 {
				t.Fatalf("sent %d commands", len(cmds))
			}
			if sc, ok := cmds[0].(*SetControl); !ok || sc.Value != tt.want {
				t.Errorf("sent %#v, want SET-CONTROL %d", cmds[0], tt.want)
			}
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dtr || s.rts {
		t.Errorf("server has DTR %v, RTS %v; want both off as set last", s.dtr, s.rts)
	}
}

func TestClientStatus(t *testing.T) {
	s, c := dialFake(t, "pipe", serverPolicy{})
	if _, err := c.Status(); !errors.Is(err, serialdev.ErrNoModemLines) {
		t.Errorf("Status before any NOTIFY-MODEMSTATE: %v", err)
	}
	steps := []struct {
		send []Command
		want serialdev.Status
	}{
		{[]Command{&NotifyModemState{State: ModemCTS | ModemDSR | ModemDeltaCTS}},
			serialdev.Status{Lines: serialdev.CTS | serialdev.DSR}},
		{[]Command{&NotifyModemState{State: ModemDCD | ModemRI}},
			serialdev.Status{Lines: serialdev.DCD | serialdev.RI}},
		{[]Command{&NotifyModemState{State: ModemDCD | ModemRIEdge}},
			serialdev.Status{Lines: serialdev.DCD, Rings: 1}},
		{[]Command{&NotifyLineState{State: LineBreak | LineFraming}, &NotifyLineState{State: LineParity | LineOverrun | LineDataReady}},
			serialdev.Status{Lines: serialdev.DCD, Rings: 1, Breaks: 1, FramingErrors: 1, ParityErrors: 1, Overruns: 1}},
		{[]Command{&NotifyLineState{State: LineOverrun}},
			serialdev.Status{Lines: serialdev.DCD, Rings: 1, Breaks: 1, FramingErrors: 1, ParityErrors: 1, Overruns: 2}},
	}
	for i, st := range steps {
		// Drain a stale signal so that the next one is this step's.
		select {
		case <-c.StatusChanged():
		default:
		}
		s.send(st.send...)
		select {
		case <-c.StatusChanged():
		case <-time.After(time.Second):
			t.Fatalf("step %d: no StatusChanged", i)
		}
		waitUntil(t, time.Second, "status", func() bool { got, _ := c.Status(); return got == st.want })
	}
	s.conn.Close()
	select {
	case _, ok := <-c.StatusChanged():
		for ok {
			_, ok = <-c.StatusChanged()
		}
	case <-time.After(time.Second):
		t.Fatal("StatusChanged not closed when the connection went")
	}
}

// allBytes is every byte value, then runs of 0xFF and CR LF and NUL.
func allBytes() []byte {
	var b []byte
	for i := range 256 {
		b = append(b, byte(i))
	}
	b = append(b, bytes.Repeat([]byte{0xFF}, 1000)...)
	b = append(b, '\r', 0, '\r', '\n', 0xFF, 0xFF, 0, '\r')
	for i := range 256 {
		b = append(b, byte(255-i), 0xFF)
	}
	return b
}

func randBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func TestClientDataBothWays(t *testing.T) {
	payload := allBytes()
	big := randBytes(3<<20, 1)
	for _, tr := range []string{"pipe", "tcp"} {
		for _, p := range []struct {
			name string
			data []byte
		}{{"all bytes", payload}, {"3MiB random", big}} {
			t.Run(tr+"/"+p.name, func(t *testing.T) {
				s, c := dialFake(t, tr, serverPolicy{})
				// client -> server
				go func() {
					c.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err := c.Write(p.data); err != nil {
						t.Errorf("Write: %v", err)
					}
				}()
				s.waitFor(10*time.Second, "data", func() bool { return len(s.data) >= len(p.data) })
				if got := s.received(); !bytes.Equal(got, p.data) {
					t.Fatalf("server got %d bytes, differ from the %d sent", len(got), len(p.data))
				}
				// server -> client
				go s.sendData(p.data)
				got := make([]byte, 0, len(p.data))
				buf := make([]byte, 100_000)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				for len(got) < len(p.data) {
					n, err := c.Read(buf)
					if err != nil {
						t.Fatalf("Read after %d bytes: %v", len(got), err)
					}
					got = append(got, buf[:n]...)
				}
				if !bytes.Equal(got, p.data) {
					t.Fatal("client got other bytes than sent")
				}
			})
		}
	}
}

// Without BINARY the client sends CR as CR NUL.
func TestClientNotBinary(t *testing.T) {
	s, conn := newFake(t, "pipe", serverPolicy{})
	s.tn.Support(OptBinary, false, false, false)
	c, err := newClient(context.Background(), conn, "fake:1", ClientConfig{Timeout: testWait, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("a\r\nb\r\xff"))
	want := "a\r\nb\r\xff" // the server's decoder drops the NUL again
	s.waitFor(time.Second, "data", func() bool { return len(s.data) >= len(want) })
	if got := string(s.received()); got != want {
		t.Errorf("server got %q", got)
	}
}

// The server suspends the client: Write blocks (honouring the deadline),
// and after RESUME everything arrives once.
func TestClientObeysServerSuspend(t *testing.T) {
	s, c := dialFake(t, "pipe", serverPolicy{})
	s.send(&FlowControlSuspend{})
	waitUntil(t, time.Second, "suspended", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.suspended != nil })
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := c.Write([]byte("held"))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write while suspended: %d, %v", n, err)
	}
	c.SetWriteDeadline(time.Time{})
	// Control requests still go while data is held.
	if err := c.SetDTR(true); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("after resume"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		t.Fatalf("Write returned while suspended: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if len(s.received()) != 0 {
		t.Fatalf("server got data while it had suspended the client: %q", s.received())
	}
	s.send(&FlowControlResume{})
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	s.waitFor(time.Second, "data", func() bool { return len(s.data) >= len("after resume") })
	if got := string(s.received()); got != "after resume" {
		t.Errorf("server got %q", got)
	}
}

// The client suspends a server when its reader falls behind, resumes it
// once the reader catches up, and nothing is lost.
func TestClientSuspends(t *testing.T) {
	for _, tt := range []struct {
		name   string
		obey   bool // the server stops sending while suspended
		misuse bool // the server misreads SUSPEND (ser2net 4)
	}{{"obeys", true, false}, {"ignores", false, false}, {"ser2net", false, true}} {
		t.Run(tt.name, func(t *testing.T) {
			pol := serverPolicy{}
			if tt.misuse {
				pol.answer = ser2netAnswer
			}
			s, c := dialFake(t, "tcp", pol)
			if err := c.SetSettings(serialdev.Settings{BaudRate: 9600, DataBits: 8, OutFlow: serialdev.FlowRTSCTS}); err != nil {
				t.Fatal(err)
			}
			total := 4 << 20
			src := randBytes(total, 2)
			sent := make(chan int, 1)
			go func() {
				n := 0
				for n < total {
					s.mu.Lock()
					susp := s.suspended
					s.mu.Unlock()
					if susp && tt.obey {
						time.Sleep(time.Millisecond)
						continue
					}
					m := min(16<<10, total-n)
					s.sendData(src[n : n+m])
					n += m
				}
				sent <- n
			}()
			// Let the client's buffer fill: nobody reads. The SUSPEND
			// goes out (once, to a server that misreads it).
			s.waitFor(5*time.Second, "SUSPEND", func() bool {
				for _, cmd := range s.cmds {
					if _, ok := cmd.(*FlowControlSuspend); ok {
						return true
					}
				}
				return false
			})
			if !tt.misuse {
				s.waitFor(time.Second, "server suspended", func() bool { return s.suspended })
			}
			time.Sleep(100 * time.Millisecond) // the server goes on, if it ignores SUSPEND
			c.mu.Lock()
			buffered := len(c.rx) - c.rxOff
			c.mu.Unlock()
			if buffered > rxHardCap+clientReadSize {
				t.Errorf("buffered %d bytes, over the hard cap", buffered)
			}
			if buffered < rxHighWater {
				t.Errorf("buffered only %d bytes", buffered)
			}
			got := make([]byte, 0, total)
			buf := make([]byte, 32<<10)
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			for len(got) < total {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("Read after %d: %v", len(got), err)
				}
				got = append(got, buf[:n]...)
			}
			<-sent
			if !bytes.Equal(got, src) {
				t.Fatal("data differs")
			}
			s.waitFor(time.Second, "RESUME", func() bool { return !s.suspended })
			var nsusp int
			for _, cmd := range s.commands(0) {
				if _, ok := cmd.(*FlowControlSuspend); ok {
					nsusp++
				}
			}
			if tt.misuse {
				if nsusp != 1 {
					t.Errorf("sent SUSPEND %d times to a server that misreads it", nsusp)
				}
				// The client put the flow control back.
				waitUntil(t, time.Second, "flow control restored", func() bool {
					s.mu.Lock()
					defer s.mu.Unlock()
					return s.settings.OutFlow == serialdev.FlowRTSCTS
				})
				waitUntil(t, time.Second, "client back at rtscts", func() bool {
					got, _ := c.Settings()
					return got.OutFlow == serialdev.FlowRTSCTS
				})
			} else if nsusp == 0 {
				t.Error("no SUSPEND sent")
			}
		})
	}
}

func TestClientPurge(t *testing.T) {
	s, c := dialFake(t, "pipe", serverPolicy{})
	s.sendData([]byte("old data"))
	waitUntil(t, time.Second, "data", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.rx) > 0 })
	for _, tt := range []struct {
		which serialdev.Purge
		want  byte
	}{{serialdev.PurgeReceive, PurgeRx}, {serialdev.PurgeTransmit, PurgeTx}, {serialdev.PurgeBoth, PurgeBoth}} {
		from := s.ncmds()
		if err := c.Purge(tt.which); err != nil {
			t.Fatal(err)
		}
		cmds := s.commands(from)
		if len(cmds) != 1 || cmds[0].(*PurgeData).Which != tt.want {
			t.Errorf("Purge(%d) sent %#v", tt.which, cmds)
		}
	}
	s.sendData([]byte("new"))
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "new" {
		t.Errorf("after purge read %q, %v", buf[:n], err)
	}
	if err := c.Purge(0); err == nil {
		t.Error("Purge(0) accepted")
	}
}

func TestClientCloseAndDeadlines(t *testing.T) {
	s, c := dialFake(t, "pipe", serverPolicy{})
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	if _, err := c.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read past deadline: %v", err)
	}
	if d := time.Since(start); d < 25*time.Millisecond || d > 500*time.Millisecond {
		t.Errorf("deadline after %v", d)
	}
	c.SetReadDeadline(time.Time{})
	s.send(&FlowControlSuspend{})
	waitUntil(t, time.Second, "suspended", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.suspended != nil })

	errs := make(chan error, 2)
	go func() { _, err := c.Read(make([]byte, 10)); errs <- err }()
	go func() { _, err := c.Write([]byte("x")); errs <- err }()
	time.Sleep(30 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, net.ErrClosed) || !errors.Is(err, os.ErrClosed) {
				t.Errorf("after Close: %v", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Close did not unblock")
		}
	}
	for name, f := range map[string]func() error{
		"Close":       c.Close,
		"SetDTR":      func() error { return c.SetDTR(true) },
		"SetSettings": func() error { return c.SetSettings(serialdev.Settings{BaudRate: 1, DataBits: 8}) },
		"Drain":       c.Drain,
		"Purge":       func() error { return c.Purge(serialdev.PurgeBoth) },
	} {
		if err := f(); !errors.Is(err, os.ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
}

// When the server goes away Read returns what was buffered, then an error
// wrapping io.EOF, promptly.
func TestClientServerGone(t *testing.T) {
	s, c := dialFake(t, "tcp", serverPolicy{})
	s.sendData([]byte("last words"))
	time.Sleep(20 * time.Millisecond)
	s.conn.Close()
	c.SetReadDeadline(time.Now().Add(time.Second))
	got, err := io.ReadAll(c)
	if string(got) != "last words" || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAll = %q, %v", got, err)
	}
	if err := c.SetRTS(true); err == nil {
		t.Error("SetRTS on a dropped connection succeeded")
	}
}

// FuzzClient feeds the client random server bytes after an agreed
// COM-PORT-OPTION: no panic, no hang, and the calls all return.
func FuzzClient(f *testing.F) {
	f.Add(ser2netGreeting)
	f.Add(AppendCommand(AppendCommand(nil, &SetBaudRate{Baud: 9600}, true), &SetControl{Value: CtlDTRAsk}, true))
	f.Add(append(AppendCommand(nil, &FlowControlSuspend{}, true), 'a', IAC, IAC, 'b'))
	f.Add([]byte{IAC, SB, OptComPort, 101, 0, IAC, IAC, 0, IAC, SE, IAC, WONT, OptBinary, IAC, DONT, OptComPort, '\r', 0})
	f.Add([]byte{IAC, WILL, OptEcho, IAC, SB, OptComPort, 107, IAC, SB, IAC, SE, 0xFF})
	f.Fuzz(func(t *testing.T, in []byte) {
		cli, srv := net.Pipe()
		defer srv.Close()
		go io.Copy(io.Discard, srv) // the server reads whatever the client says
		go func() {
			srv.Write([]byte{IAC, DO, OptComPort})
			srv.Write(in)
		}()
		c, err := newClient(context.Background(), cli, "fuzz:1", ClientConfig{Timeout: 5 * time.Millisecond, Logger: quietLogger()})
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Millisecond))
		c.Read(make([]byte, 100))
		c.SetWriteDeadline(time.Now().Add(5 * time.Millisecond))
		c.Write([]byte{1, IAC, 2})
		c.SetSettings(serialdev.Settings{BaudRate: 300, DataBits: 7})
		c.Status()
		c.Settings()
	})
}

// BenchmarkClientRead measures the server -> client path over TCP.
func BenchmarkClientRead(b *testing.B) {
	s, c := dialFake(b, "tcp", serverPolicy{})
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = byte(i % 255)
	}
	wire := AppendData(nil, chunk, true)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	go func() {
		for range b.N {
			s.write(wire)
		}
	}()
	buf := make([]byte, 64<<10)
	total := b.N * len(chunk)
	for got := 0; got < total; {
		n, err := c.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		got += n
	}
}

// BenchmarkClientRoundTrip measures one byte out and back through an
// echoing server over TCP (the client's share of attach's latency).
func BenchmarkClientRoundTrip(b *testing.B) {
	_, c := dialFake(b, "tcp", serverPolicy{echo: true})
	out, in := []byte{0xFF}, make([]byte, 16)
	b.ReportAllocs()
	for range b.N {
		if _, err := c.Write(out); err != nil {
			b.Fatal(err)
		}
		if n, err := c.Read(in); err != nil || n != 1 || in[0] != 0xFF {
			b.Fatalf("Read: %d %v", n, err)
		}
	}
}

// BenchmarkClientWrite measures the client -> server path over TCP.
func BenchmarkClientWrite(b *testing.B) {
	_, conn := newFakeSink(b)
	c := conn
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// newFakeSink is a client on a TCP server that agrees and then only reads.
func newFakeSink(b testing.TB) (net.Listener, *Client) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write([]byte{IAC, DO, OptComPort, IAC, DO, OptBinary})
		io.Copy(io.Discard, conn)
	}()
	c, err := Dial(context.Background(), ln.Addr().String(), ClientConfig{Timeout: 50 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return ln, c
}

// startLoopServer runs this package's Server on loop:// at 127.0.0.1.
func startLoopServer(t testing.TB, policy Policy) string {
	t.Helper()
	srv, err := NewServer(Config{
		Device: "loop://",
		Open:   func(context.Context) (serialdev.Port, error) { return serialdev.NewLoop(), nil },
		Policy: policy,
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln, Telnet)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestClientWithServer: the client against sertun's own server on loop://.
func TestClientWithServer(t *testing.T) {
	addr := startLoopServer(t, Exclusive)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, ClientConfig{Timeout: time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Every answer arrives at once: nothing may wait for the timeout.
	quick := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Errorf("%s took %v", what, d)
		}
	}
	if got, _ := c.Settings(); got != serialdev.DefaultSettings() {
		t.Errorf("initial settings %v", got)
	}
	for _, s := range []serialdev.Settings{
		{BaudRate: 19200, DataBits: 7, Parity: serialdev.ParityEven, StopBits: serialdev.Stop1},
		{BaudRate: 250000, DataBits: 5, Parity: serialdev.ParitySpace, StopBits: serialdev.Stop1Half, OutFlow: serialdev.FlowRTSCTS, InFlow: serialdev.FlowRTSCTS},
		{BaudRate: 9600, DataBits: 8, StopBits: serialdev.Stop2, OutFlow: serialdev.FlowXonXoff, InFlow: serialdev.FlowNone},
	} {
		quick("SetSettings "+s.String(), func() error { return c.SetSettings(s) })
		if got, _ := c.Settings(); got != s {
			t.Errorf("Settings() = %v, want %v", got, s)
		}
	}

	// loop://: DTR drives DSR and DCD, RTS drives CTS.
	lines := func(want serialdev.Lines) {
		t.Helper()
		waitUntil(t, 2*time.Second, "modem lines "+strconv.Itoa(int(want)), func() bool {
			st, err := c.Status()
			return err == nil && st.Lines == want
		})
	}
	// The server may raise DTR and RTS on open, as a port does: start low.
	quick("DTR off", func() error { return c.SetDTR(false) })
	quick("RTS off", func() error { return c.SetRTS(false) })
	lines(0)
	quick("DTR on", func() error { return c.SetDTR(true) })
	lines(serialdev.DSR | serialdev.DCD)
	quick("RTS on", func() error { return c.SetRTS(true) })
	lines(serialdev.DSR | serialdev.DCD | serialdev.CTS)
	quick("DTR off", func() error { return c.SetDTR(false) })
	quick("RTS off", func() error { return c.SetRTS(false) })
	lines(0)
	quick("break on", func() error { return c.SetBreak(true) })
	quick("break off", func() error { return c.SetBreak(false) })
	quick("purge", func() error { return c.Purge(serialdev.PurgeBoth) })

	for _, data := range [][]byte{allBytes(), randBytes(1<<20, 9)} {
		go func() {
			if _, err := c.Write(data); err != nil {
				t.Errorf("Write: %v", err)
			}
		}()
		got := make([]byte, len(data))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("echo: read %d of %d: %v", n, len(data), err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("echo of %d bytes differs", len(data))
		}
	}
}

// BenchmarkClientServer measures the round trip of one byte and bulk
// echo through the client, this package's server and loop://.
func BenchmarkClientServer(b *testing.B) {
	addr := startLoopServer(b, Exclusive)
	c, err := Dial(context.Background(), addr, ClientConfig{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.Run("roundtrip", func(b *testing.B) {
		out, in := []byte{0xFF}, make([]byte, 16)
		b.ReportAllocs()
		for range b.N {
			if _, err := c.Write(out); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, in[:1]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("echo64k", func(b *testing.B) {
		chunk := randBytes(64<<10, 10)
		buf := make([]byte, 64<<10)
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		go func() {
			for range b.N {
				if _, err := c.Write(chunk); err != nil {
					return
				}
			}
		}()
		for got := 0; got < b.N*len(chunk); {
			n, err := c.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	})
}

// An echoing device with traffic both ways and a reader that falls behind
// now and then: the client's flow control must neither deadlock the link
// (suspended server, full device, our RESUME stuck behind our data) nor
// lose a byte.
func TestClientServerEchoFlow(t *testing.T) {
	addr := startLoopServer(t, Exclusive)
	c, err := Dial(context.Background(), addr, ClientConfig{Timeout: time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := randBytes(24<<20, 11)
	go func() {
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Write(src); err != nil {
			t.Errorf("Write: %v", err)
		}
	}()
	got := make([]byte, 0, len(src))
	buf := make([]byte, 64<<10)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	next := 2 << 20
	for len(got) < len(src) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("Read after %d of %d: %v", len(got), len(src), err)
		}
		got = append(got, buf[:n]...)
		if len(got) >= next { // fall behind: the receive buffer fills
			next += 4 << 20
			time.Sleep(150 * time.Millisecond)
		}
	}
	if !bytes.Equal(got, src) {
		t.Fatal("echo differs")
	}
	// The other half: data only from the server, reader slow. The client
	// suspends the server (it sends nothing itself) and resumes it.
	c.Write(randBytes(3<<20, 12)) // into the loop; read it back slowly
	time.Sleep(300 * time.Millisecond)
	c.mu.Lock()
	sent := c.sentSusp
	c.mu.Unlock()
	if !sent {
		t.Error("no SUSPEND while the reader lags and nothing is written")
	}
	if _, err := io.ReadFull(c, make([]byte, 3<<20)); err != nil {
		t.Fatal(err)
	}
}

// While its consumer holds rxRest bytes back, the reader rests: the
// server's data waits in the socket, not in the client. Taking the buffer
// below half wakes the reader at once; after restMax it reads anyway, so
// that a notification behind the data gets in while nobody reads.
func TestClientReaderRests(t *testing.T) {
	tests := []struct {
		name    string
		restMax time.Duration
	}{
		{"consumer takes", time.Hour},
		{"rest runs out", 30 * time.Millisecond},
	}
	want := serialdev.Status{Lines: serialdev.CTS | serialdev.DCD}
	notified := func(c *Client) func() bool {
		return func() bool { st, err := c.Status(); return err == nil && st == want }
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := dialFake(t, "tcp", serverPolicy{})
			c.mu.Lock()
			c.restMax = tt.restMax
			c.mu.Unlock()
			src := randBytes(rxRest*4, 7)
			s.sendData(src)
			s.send(&NotifyModemState{State: ModemCTS | ModemDCD})
			waitUntil(t, 5*time.Second, "buffered data", func() bool { return buffered(c) >= rxRest })
			if tt.restMax == time.Hour {
				time.Sleep(100 * time.Millisecond)
				if n := buffered(c); n >= rxRest+clientReadSize {
					t.Fatalf("buffered %d bytes: the reader read on past %d", n, rxRest)
				}
				if notified(c)() {
					t.Fatal("the notification behind the data got in while the reader rested")
				}
			} else {
				waitUntil(t, 5*time.Second, "notification while nobody reads", notified(c))
			}
			got := make([]byte, 0, len(src))
			buf := make([]byte, 16<<10)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for len(got) < len(src) {
				n, err := c.Read(buf)
				if err != nil {
					t.Fatalf("Read after %d bytes: %v", len(got), err)
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, src) {
				t.Fatal("data differs")
			}
			waitUntil(t, 5*time.Second, "notification", notified(c))
		})
	}
}

// A Write cut short by its deadline says exactly how much went out, even
// inside an escape, so that writing the rest (as a relay's session does)
// neither loses nor repeats a byte.
func TestClientWriteDeadlineCount(t *testing.T) {
	s, c := dialFake(t, "tcp", serverPolicy{})
	data := make([]byte, 16<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32()) // one byte in 256 an IAC
	}
	s.mu.Lock() // the server stops taking data
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	n, err := c.Write(data)
	s.mu.Unlock()
	if !errors.Is(err, os.ErrDeadlineExceeded) || n <= 0 || n >= len(data) {
		t.Fatalf("Write = %d, %v; want part of %d and a deadline error", n, err, len(data))
	}
	c.SetWriteDeadline(time.Time{})
	m, err := c.Write(data[n:])
	if err != nil || m != len(data)-n {
		t.Fatalf("writing the rest: %d, %v", m, err)
	}
	s.waitFor(10*time.Second, "all data", func() bool { return len(s.data) >= len(data) })
	time.Sleep(50 * time.Millisecond) // anything repeated would follow
	s.mu.Lock()
	got := s.data
	s.mu.Unlock()
	if !bytes.Equal(got, data) {
		t.Fatalf("server got %d bytes, want %d; first difference at %d", len(got), len(data), firstDiff(got, data))
	}
}

// A write deadline that has passed (the tunnel sets one before each write
// and leaves it) holds back what the client owes the server, not for ever:
// once the deadline moves, the RESUME and the negotiation reply go out.
func TestClientPastDeadlineKeepsControl(t *testing.T) {
	s, c := dialFake(t, "tcp", serverPolicy{})
	go func() {
		for i := 0; i < 64; i++ {
			s.mu.Lock()
			susp := s.suspended
			s.mu.Unlock()
			if susp {
				return
			}
			s.sendData(make([]byte, 16<<10))
		}
	}()
	s.waitFor(5*time.Second, "server suspended", func() bool { return s.suspended })
	c.SetWriteDeadline(time.Now().Add(-time.Second))
	buf := make([]byte, 64<<10)
	for {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	s.write([]byte{IAC, DO, 99}) // the client owes WONT 99
	time.Sleep(100 * time.Millisecond)
	c.SetWriteDeadline(time.Time{})
	s.waitFor(2*time.Second, "server resumed", func() bool { return !s.suspended })
	waitUntil(t, 2*time.Second, "reply sent", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.replies) == 0 && !c.owing.Load()
	})
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	s.waitFor(2*time.Second, "data after", func() bool { return bytes.HasSuffix(s.data, []byte("x")) })
}

func TestCutData(t *testing.T) {
	head := []byte{IAC, SB, OptComPort, 112, IAC, SE} // a RESUME
	tests := []struct {
		name   string
		chunk  string
		binary bool
		w      int
		sent   int
		rest   string
	}{
		{"inside the command", "ab", true, 2, 0, string(head[2:])},
		{"after the command", "ab", true, 6, 0, ""},
		{"plain", "abc", true, 8, 2, ""},
		{"half an IAC", "a\xffb", true, 8, 2, "\xff"},
		{"whole IAC", "a\xffb", true, 9, 2, ""},
		{"half a CR NUL", "a\rb", false, 8, 2, "\x00"},
		{"CR in binary", "a\rb", true, 8, 2, ""},
		{"all", "a\xff", true, 9, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wbuf := AppendData(append([]byte(nil), head...), []byte(tt.chunk), tt.binary)
			sent, rest := cutData(wbuf, len(head), tt.w, []byte(tt.chunk), tt.binary)
			if sent != tt.sent || string(rest) != tt.rest {
				t.Errorf("cutData(w=%d) = %d, %q; want %d, %q", tt.w, sent, rest, tt.sent, tt.rest)
			}
		})
	}
}

// What came in and was not read is handed over by Unread, once.
func TestClientUnread(t *testing.T) {
	s, c := dialFake(t, "pipe", serverPolicy{})
	s.sendData([]byte("abc\xffdef"))
	waitUntil(t, time.Second, "data in", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.rx)-c.rxOff == 7
	})
	b := make([]byte, 2)
	if n, err := c.Read(b); n != 2 || err != nil {
		t.Fatalf("Read = %d, %v", n, err)
	}
	c.Close()
	if got := string(c.Unread()); got != "c\xffdef" {
		t.Errorf("Unread = %q, want %q", got, "c\xffdef")
	}
	if got := c.Unread(); len(got) != 0 {
		t.Errorf("second Unread = %q", got)
	}
}
