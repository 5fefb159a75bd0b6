package tunnel

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer collects log lines for checks.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tcpServer runs a TCP server on 127.0.0.1 for the test; serve has each
// connection, and closes it.
func tcpServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

// tcpEcho runs a TCP echo server on 127.0.0.1 for the test.
func tcpEcho(t *testing.T) string {
	return tcpServer(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runEnds runs Run for both ends over a memCable until the test ends.
func runEnds(t *testing.T, ca, cb Config) (logA, logB *logBuffer) {
	t.Helper()
	c := newMemCable(linkParams{}, linkParams{})
	t.Cleanup(c.Close)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	logs := []*logBuffer{{}, {}}
	for i, cfg := range []Config{ca, cb} {
		cfg.Open = func(context.Context) (Line, error) { return c.attach(i), nil }
		cfg.Baud = 4_000_000
		cfg.Logger = slog.New(slog.NewTextHandler(logs[i], nil))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Run(ctx, cfg); err != nil {
				t.Errorf("Run side %d: %v", i, err)
			}
		}()
	}
	return logs[0], logs[1]
}

func dialRetry(t *testing.T, addr string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func echoCheck(t *testing.T, c net.Conn, n int) {
	t.Helper()
	defer c.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), n/16)
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("echo: %d of %d bytes, %v", len(got), len(data), err)
	}
}

func TestForwardLocal(t *testing.T) {
	t.Parallel()
	target := tcpEcho(t)
	l1, l2 := freeAddr(t), freeAddr(t)
	fw, _ := ParseForward(l1+":"+target, false)
	short, _ := ParseForward(l2, true)
	runEnds(t, Config{Local: []Forward{fw, short}}, Config{Permit: []string{target}})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := l1
			if i%2 == 1 {
				addr = l2 // -L port: the far side's only target
			}
			echoCheck(t, dialRetry(t, addr), 100_000)
		}()
	}
	wg.Wait()
}

func TestForwardRefused(t *testing.T) {
	t.Parallel()
	target := tcpEcho(t)
	l := freeAddr(t)
	fw, _ := ParseForward(l+":"+target, false)
	logA, _ := runEnds(t, Config{Local: []Forward{fw}}, Config{})
	c := dialRetry(t, l)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("read from a refused forward: %d bytes, no error", n)
	}
	want := fmt.Sprintf("far side does not permit %s; start it with --permit %s", target, target)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logA.String(), want); {
		if time.Now().After(deadline) {
			t.Fatalf("no hint %q in the log:\n%s", want, logA)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A target that answers and closes while the client still sends: the
// client's writes fail soon, as they would on a direct connection, instead
// of the tunnel carrying them for ever to be dropped.
func TestForwardTargetClosed(t *testing.T) {
	t.Parallel()
	target := tcpServer(t, func(c net.Conn) {
		c.Write([]byte("hi"))
		c.Close()
	})
	l := freeAddr(t)
	fw, _ := ParseForward(l+":"+target, false)
	runEnds(t, Config{Local: []Forward{fw}}, Config{Permit: []string{target}})
	c := dialRetry(t, l)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if got, err := io.ReadAll(c); string(got) != "hi" || err != nil {
		t.Fatalf("read %q, %v; want the target's hi, then EOF", got, err)
	}
	chunk := make([]byte, 16<<10)
	for i := range 200 {
		if _, err := c.Write(chunk); err != nil {
			t.Logf("write %d failed: %v", i, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("3 MiB written after the target closed, and no error")
}

// -L PORT with no single target on the far side says what to do.
func TestForwardShorthandNoTarget(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		permits []string
		want    string
	}{
		{nil, "has none; start it with --permit HOST:PORT"},
		{[]string{PermitAny}, "permits any target; give -L [bind:]port:host:hostport"},
		{[]string{"127.0.0.1:1", "127.0.0.1:2"}, "has 2 (127.0.0.1:1, 127.0.0.1:2)"},
	} {
		l := freeAddr(t)
		short, _ := ParseForward(l, true)
		logA, _ := runEnds(t, Config{Local: []Forward{short}}, Config{Permit: tt.permits})
		c := dialRetry(t, l)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("permits %v: read %d bytes, want the connection reset", tt.permits, n)
		}
		c.Close()
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logA.String(), tt.want); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("permits %v: no %q in the log:\n%s", tt.permits, tt.want, logA)
			}
		}
	}
}

func TestForwardRemote(t *testing.T) {
	t.Parallel()
	target := tcpEcho(t)
	l := freeAddr(t)
	fw, _ := ParseForward(l+":"+target, false)
	_, logB := runEnds(t, Config{Remote: []Forward{fw}}, Config{})
	echoCheck(t, dialRetry(t, l), 50_000)
	if !strings.Contains(logB.String(), "listening for the far side's -R") {
		t.Errorf("far side did not log its -R listener:\n%s", logB)
	}
}

func TestSOCKS(t *testing.T) {
	t.Parallel()
	target := tcpEcho(t)
	l := freeAddr(t)
	runEnds(t, Config{SOCKS: []string{l}}, Config{Permit: []string{target}})
	connect := func(target string) (net.Conn, byte) {
		c := dialRetry(t, l)
		host, port, _ := net.SplitHostPort(target)
		req := []byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}
		req = append(req, host...)
		p, _ := net.LookupPort("tcp", port)
		req = binary.BigEndian.AppendUint16(req, uint16(p))
		c.Write(req)
		var resp [12]byte
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, resp[:]); err != nil {
			t.Fatalf("SOCKS reply: %v", err)
		}
		c.SetReadDeadline(time.Time{})
		if resp[0] != 5 || resp[1] != 0 || resp[2] != 5 {
			t.Fatalf("SOCKS reply % x", resp)
		}
		return c, resp[3]
	}
	c, code := connect(target)
	if code != socksOK {
		t.Fatalf("CONNECT to a permitted target: reply %d", code)
	}
	echoCheck(t, c, 20_000)
	c, code = connect("127.0.0.1:1")
	c.Close()
	if code != socksNotAllowed {
		t.Errorf("CONNECT to a target not permitted: reply %d, want %d", code, socksNotAllowed)
	}
}

func TestParseForward(t *testing.T) {
	tests := []struct {
		spec     string
		optional bool
		want     Forward
		err      bool
	}{
		{"8080:example.org:80", false, Forward{"127.0.0.1:8080", "example.org:80"}, false},
		{"0.0.0.0:8080:10.0.0.5:22", false, Forward{"0.0.0.0:8080", "10.0.0.5:22"}, false},
		{"[::1]:8080:[fe80::1]:22", false, Forward{"[::1]:8080", "[fe80::1]:22"}, false},
		{"1234", true, Forward{"127.0.0.1:1234", ""}, false},
		{"1234", false, Forward{}, true},
		{"localhost:1234", true, Forward{"localhost:1234", ""}, false},
		{"x:y:z:w:v", false, Forward{}, true},
		{"99999:a:1", false, Forward{}, true},
		{"80:host:", false, Forward{}, true},
		{"80:host:0", false, Forward{}, true},
	}
	for _, tt := range tests {
		got, err := ParseForward(tt.spec, tt.optional)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseForward(%q) = %+v, %v", tt.spec, got, err)
		}
	}
}
