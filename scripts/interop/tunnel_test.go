//go:build linux

package interop

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tunEcho runs a TCP echo server on 127.0.0.1 and returns its address.
func tunEcho(t *testing.T) string {
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
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// tunCable starts a null-modem pair and returns its two ends: a plain
// socat pty pair, or `sertun cable` with extra arguments.
func tunCable(t *testing.T, socat bool, args ...string) (a, b string) {
	t.Helper()
	dir := t.TempDir()
	a, b = filepath.Join(dir, "ttyA"), filepath.Join(dir, "ttyB")
	if socat {
		requirePeer(t, "socat")
		start(t, "socat", "-d", "-d", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	} else {
		p := start(t, sertun(t), append([]string{"cable", a, b}, args...)...)
		p.WaitOutput(t, "cable: linked", 10*time.Second)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, errA := os.Stat(a)
		_, errB := os.Stat(b)
		if errA == nil && errB == nil {
			return a, b
		}
		if time.Now().After(deadline) {
			t.Fatalf("null-modem links %s, %s not there: %v, %v", a, b, errA, errB)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tunEnd starts `sertun tunnel DEVICE args...`.
func tunEnd(t *testing.T, device string, args ...string) *Proc {
	t.Helper()
	return start(t, sertun(t), append([]string{"tunnel", device}, args...)...)
}

// tunTransfer sends n random bytes through addr (an echo behind a tunnel)
// and checks the sha256 of what comes back.
func tunTransfer(addr string, n int, seed uint64, d time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	want := sha256.Sum256(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	h := sha256.New()
	got, err := io.Copy(h, c)
	if err != nil {
		return fmt.Errorf("after %d of %d bytes: %w", got, n, err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("%d bytes sent, %d came back, sha256 differs", n, got)
	}
	return nil
}

// tunParallel runs count transfers at once and reports every failure.
func tunParallel(t *testing.T, addr string, count, size int, d time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, count)
	for i := range count {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = tunTransfer(addr, size, uint64(i), d)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("connection %d: %v", i, err)
		}
	}
}

// TestTunnelPtyNullModem: 16 connections x 256 KiB through -L over a plain
// pty null-modem (socat), all echoed intact.
func TestTunnelPtyNullModem(t *testing.T) {
	t.Parallel()
	a, b := tunCable(t, true)
	echo := tunEcho(t)
	port := freePort(t)
	// No --baud, as a user would run it: a pty whose rate nobody set is
	// taken as a line without a speed limit.
	far := tunEnd(t, b, "--permit", echo)
	near := tunEnd(t, a, "-L", fmt.Sprintf("%d:%s", port, echo), "--stats", "2s")
	near.WaitOutput(t, "link up", 10*time.Second)
	near.WaitOutput(t, "baud=4000000", time.Second)
	start := time.Now()
	tunParallel(t, fmt.Sprintf("127.0.0.1:%d", port), 16, 256<<10, 90*time.Second)
	t.Logf("16 x 256 KiB echoed in %v", time.Since(start).Round(time.Millisecond))
	_ = far
}

// TestTunnelOverRFC2217: each end of the cable is shared by sertun share and
// each tunnel end reaches its line as rfc2217://HOST:PORT, the way a tunnel
// runs over a serial port on another machine; 4 connections x 64 KiB are
// echoed intact.
func TestTunnelOverRFC2217(t *testing.T) {
	t.Parallel()
	a, b := tunCable(t, false)
	portA, portB := freePort(t), freePort(t)
	startShare(t, a, fmt.Sprintf("127.0.0.1:%d", portA))
	startShare(t, b, fmt.Sprintf("127.0.0.1:%d", portB))
	echo := tunEcho(t)
	port := freePort(t)
	tunEnd(t, fmt.Sprintf("rfc2217://127.0.0.1:%d", portB), "--permit", echo, "--baud", "921600")
	near := tunEnd(t, fmt.Sprintf("rfc2217://127.0.0.1:%d", portA), "-L", fmt.Sprintf("%d", port), "--baud", "921600")
	near.WaitOutput(t, "link up", 15*time.Second)
	start := time.Now()
	tunParallel(t, fmt.Sprintf("127.0.0.1:%d", port), 4, 64<<10, 60*time.Second)
	t.Logf("4 x 64 KiB echoed through two RFC 2217 servers in %v", time.Since(start).Round(time.Millisecond))
}

// TestTunnelNoisyCable: over sertun cable with bit errors, 4 connections x
// 64 KiB, all intact: 115200 baud at BER 1e-5 (the must-show) and 460800 at
// 1e-4.
func TestTunnelNoisyCable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ baud, ber string }{{"115200", "1e-5"}, {"460800", "1e-4"}} {
		t.Run(tt.baud+"_"+tt.ber, func(t *testing.T) {
			t.Parallel()
			a, b := tunCable(t, false, "--baud", tt.baud, "--ber", tt.ber)
			echo := tunEcho(t)
			port := freePort(t)
			// The far side has no --baud: it takes the cable's rate from
			// the pty.
			far := tunEnd(t, b, "--permit", echo)
			far.WaitOutput(t, "baud="+tt.baud, 5*time.Second)
			near := tunEnd(t, a, "-L", fmt.Sprintf("%d", port), "--stats", "5s", "--baud", tt.baud)
			near.WaitOutput(t, "link up", 10*time.Second)
			start := time.Now()
			tunParallel(t, fmt.Sprintf("127.0.0.1:%d", port), 4, 64<<10, 100*time.Second)
			t.Logf("4 x 64 KiB echoed at %s baud, BER %s, in %v; near side:\n%s", tt.baud, tt.ber,
				time.Since(start).Round(time.Millisecond), tunStatsLines(near.Output()))
		})
	}
}

// TestTunnelCablePause: the cable stops carrying anything for 5 s (its
// process is stopped) in the middle of transfers; the link goes down,
// the connections wait and then finish intact.
func TestTunnelCablePause(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "ttyA"), filepath.Join(dir, "ttyB")
	cable := start(t, sertun(t), "cable", a, b, "--baud", "460800")
	cable.WaitOutput(t, "cable: linked", 10*time.Second)
	echo := tunEcho(t)
	port := freePort(t)
	tunEnd(t, b, "--permit", echo, "--baud", "460800")
	near := tunEnd(t, a, "-L", fmt.Sprintf("%d", port), "--baud", "460800")
	near.WaitOutput(t, "link up", 10*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tunParallel(t, fmt.Sprintf("127.0.0.1:%d", port), 4, 128<<10, 60*time.Second)
	}()
	time.Sleep(2 * time.Second)
	cable.kill(syscall.SIGSTOP)
	time.Sleep(5 * time.Second)
	cable.kill(syscall.SIGCONT)
	<-done
	near.WaitOutput(t, "link down", time.Second)
	if !strings.Contains(near.Output(), "outage=") {
		t.Errorf("near side did not log the link coming back:\n%s", near.Output())
	}
}

func tunStatsLines(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "tunnel: stats") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestTunnelFarRestart: the far side is stopped and started again; the
// near side keeps running and new connections work within 20 s. A refused
// target resets the connection and the near side logs the hint.
func TestTunnelFarRestart(t *testing.T) {
	t.Parallel()
	a, b := tunCable(t, false)
	echo := tunEcho(t)
	port, refused := freePort(t), freePort(t)
	far := tunEnd(t, b, "--permit", echo)
	near := tunEnd(t, a, "-L", fmt.Sprintf("%d:%s", port, echo), "-L", fmt.Sprintf("%d:10.0.0.5:22", refused))
	near.WaitOutput(t, "link up", 10*time.Second)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := tunTransfer(addr, 64<<10, 1, 20*time.Second); err != nil {
		t.Fatalf("before the restart: %v", err)
	}

	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", refused))
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("a refused target gave %d bytes and no error", n)
	}
	c.Close()
	near.WaitOutput(t, "far side does not permit 10.0.0.5:22; start it with --permit 10.0.0.5:22", 10*time.Second)

	far.Stop(t)
	time.Sleep(time.Second)
	tunEnd(t, b, "--permit", echo)
	restarted := time.Now()
	var lastErr error
	for time.Since(restarted) < 20*time.Second {
		if lastErr = tunTransfer(addr, 16<<10, 2, 10*time.Second); lastErr == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("no working connection within 20 s of the far side's restart: %v", lastErr)
	}
	t.Logf("a new connection worked %v after the far side restarted", time.Since(restarted).Round(time.Millisecond))
	if !strings.Contains(near.Output(), "far side restarted") {
		t.Errorf("near side did not log the far side's restart:\n%s", near.Output())
	}
	select {
	case <-near.done:
		t.Fatalf("near side exited: %v", near.err)
	default:
	}
}

// TestTunnelStartedApart: the near side runs alone (10 s; 30 s with
// SERTUN_SLOW=1) before the far side starts; then connections work.
func TestTunnelStartedApart(t *testing.T) {
	t.Parallel()
	apart := 10 * time.Second
	if os.Getenv("SERTUN_SLOW") != "" {
		apart = 30 * time.Second
	}
	a, b := tunCable(t, false)
	echo := tunEcho(t)
	port := freePort(t)
	near := tunEnd(t, a, "-L", fmt.Sprintf("%d", port))
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitTCP(t, addr, 10*time.Second)
	// A connection made before the far side exists waits for it.
	early := make(chan error, 1)
	go func() { early <- tunTransfer(addr, 8<<10, 3, apart+30*time.Second) }()
	time.Sleep(apart)
	tunEnd(t, b, "--permit", echo)
	near.WaitOutput(t, "link up", 10*time.Second)
	if err := <-early; err != nil {
		t.Errorf("connection made before the far side started: %v", err)
	}
	if err := tunTransfer(addr, 32<<10, 4, 20*time.Second); err != nil {
		t.Errorf("after the far side started: %v", err)
	}
}

// TestTunnelBench measures goodput and interactive latency over sertun
// cable. It runs only with SERTUN_TUNNEL_BENCH=1 (scripts/bench.sh):
//
//	SERTUN_TUNNEL_BENCH=1 go test ./scripts/interop -run TestTunnelBench -v
//
// SERTUN_TUNNEL_BENCH_CASES narrows the cases ("460800/0,115200/1e-5");
// SERTUN_TUNNEL_BENCH_SECONDS sets the bulk duration (default 15).
func TestTunnelBench(t *testing.T) {
	if os.Getenv("SERTUN_TUNNEL_BENCH") == "" {
		t.Skip("set SERTUN_TUNNEL_BENCH=1 to measure")
	}
	secs := 15
	if s, err := strconv.Atoi(os.Getenv("SERTUN_TUNNEL_BENCH_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	cases := "460800/0,115200/0,115200/1e-5,115200/1e-4,921600/0,921600/1e-5,921600/1e-4"
	if c := os.Getenv("SERTUN_TUNNEL_BENCH_CASES"); c != "" {
		cases = c
	}
	for _, cs := range strings.Split(cases, ",") {
		baud, ber, _ := strings.Cut(cs, "/")
		t.Run(strings.ReplaceAll(cs, "/", "_"), func(t *testing.T) {
			a, b := tunCable(t, false, "--baud", baud, "--ber", ber)
			sink, src := tunSink(t), tunEcho(t)
			bulkPort, echoPort := freePort(t), freePort(t)
			tunEnd(t, b, "--permit", sink.addr, "--permit", src, "--baud", baud)
			near := tunEnd(t, a, "--baud", baud,
				"-L", fmt.Sprintf("%d:%s", bulkPort, sink.addr),
				"-L", fmt.Sprintf("%d:%s", echoPort, src))
			near.WaitOutput(t, "link up", 10*time.Second)
			rate, _ := strconv.Atoi(baud)
			line := float64(rate) / 10

			// Idle echo latency.
			idle := tunEchoLatency(t, fmt.Sprintf("127.0.0.1:%d", echoPort), 200)
			// One bulk stream.
			n := tunBulk(t, fmt.Sprintf("127.0.0.1:%d", bulkPort), sink, time.Duration(secs)*time.Second)
			good := float64(n) / float64(secs)
			fmt.Printf("TUNNELBENCH baud=%s ber=%s goodput_Bps=%.0f share=%.3f idle_echo_p50_ms=%.2f idle_echo_p99_ms=%.2f\n",
				baud, ber, good, good/line, idle[0], idle[1])
			if ber == "0" {
				// The physical reference: the same bulk transfer
				// over bare socat relays of a cable like this one.
				requirePeer(t, "socat")
				ra, rb := tunCable(t, false, "--baud", baud)
				rsink := tunSink(t)
				rport := freePort(t)
				_, rsinkPort, _ := net.SplitHostPort(rsink.addr)
				start(t, "socat", "-u", "FILE:"+rb+",raw,echo=0", "TCP:127.0.0.1:"+rsinkPort)
				start(t, "socat", "-u", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr", rport), "FILE:"+ra+",raw,echo=0")
				waitTCPNoConn(t, rport)
				rn := tunBulk(t, fmt.Sprintf("127.0.0.1:%d", rport), rsink, time.Duration(secs)*time.Second)
				fmt.Printf("TUNNELBENCH baud=%s ber=%s socat_reference_Bps=%.0f socat_share=%.3f\n",
					baud, ber, float64(rn)/float64(secs), float64(rn)/float64(secs)/line)
				// Echo under bulk both ways.
				stop := make(chan struct{})
				var wg sync.WaitGroup
				for range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						tunBulkEcho(fmt.Sprintf("127.0.0.1:%d", echoPort), stop)
					}()
				}
				time.Sleep(2 * time.Second)
				busy := tunEchoLatency(t, fmt.Sprintf("127.0.0.1:%d", echoPort), 300)
				close(stop)
				wg.Wait()
				fmt.Printf("TUNNELBENCH baud=%s ber=%s busy_echo_p50_ms=%.2f busy_echo_p99_ms=%.2f\n", baud, ber, busy[0], busy[1])
			}
		})
	}
}

// tunSinkServer counts what it receives.
type tunSinkServer struct {
	addr string
	mu   sync.Mutex
	n    int64
}

func tunSink(t *testing.T) *tunSinkServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &tunSinkServer{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					s.mu.Lock()
					s.n += int64(n)
					s.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return s
}

func (s *tunSinkServer) count() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// tunBulk pushes data through addr for d (after a 2 s warm-up) and returns
// what the sink received during d.
func tunBulk(t *testing.T, addr string, sink *tunSinkServer, d time.Duration) int64 {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	time.Sleep(2 * time.Second)
	n0 := sink.count()
	time.Sleep(d)
	return sink.count() - n0
}

// tunBulkEcho keeps a bulk stream going both ways through an echo until
// stop.
func tunBulkEcho(addr string, stop chan struct{}) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	go func() {
		<-stop
		c.Close()
	}()
	go io.Copy(io.Discard, c)
	buf := make([]byte, 32<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// tunEchoLatency measures 1-byte round trips, returning p50 and p99 in ms.
func tunEchoLatency(t *testing.T, addr string, n int) [2]float64 {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	var rtts []float64
	b := make([]byte, 1)
	for i := range n {
		b[0] = byte(i)
		t0 := time.Now()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatal(err)
		}
		rtts = append(rtts, float64(time.Since(t0).Microseconds())/1000)
		time.Sleep(time.Duration(5+i%7) * time.Millisecond)
	}
	sort.Float64s(rtts)
	return [2]float64{rtts[len(rtts)/2], rtts[len(rtts)*99/100]}
}

// waitTCPNoConn waits until a port is listened on, without connecting
// (a socat listener serves one connection only).
func waitTCPNoConn(t *testing.T, port int) {
	t.Helper()
	hex := fmt.Sprintf(":%04X ", port)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile("/proc/net/tcp")
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) > 3 && strings.HasSuffix(f[1], hex[:len(hex)-1]) && f[3] == "0A" {
				return
			}
		}
	}
	t.Fatalf("nothing listens on port %d", port)
}
