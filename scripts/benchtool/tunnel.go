//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type tunnelOpts struct {
	bauds  string
	bers   string
	extra  string
	window time.Duration
	warmup time.Duration
	rtts   int
	rttCap time.Duration
	cable  string // "sertun" or "socat" (no speed or noise: harness check only)
}

func addTunnelFlags(fs *flag.FlagSet) *tunnelOpts {
	o := &tunnelOpts{}
	fs.StringVar(&o.bauds, "tunnel-bauds", "115200,921600", "line rates for the tunnel section")
	fs.StringVar(&o.bers, "tunnel-bers", "0,1e-5,1e-4", "bit error rates for the tunnel section")
	fs.StringVar(&o.extra, "tunnel-extra", "460800:0", "more baud:BER points, comma-separated (issue 4's goodput target is at 460800 clean)")
	fs.DurationVar(&o.window, "tunnel-window", time.Second, "goodput window per run")
	fs.DurationVar(&o.warmup, "tunnel-warmup", time.Second, "bulk stream time before the first goodput window")
	fs.IntVar(&o.rtts, "tunnel-rtts", 100, "echo round trips per latency run")
	fs.DurationVar(&o.rttCap, "tunnel-rtt-cap", 2*time.Second, "stop a tunnel latency run after this long (at least 20 round trips, or 5 by 3x this)")
	fs.StringVar(&o.cable, "tunnel-cable", "sertun", "cable: sertun (sertun cable) or socat (plain pty pair, for checking the harness)")
	return o
}

// streamCheck follows the pattern stream (byte i is pattern[i mod len]) and
// counts bytes that differ from it: a bare relay over a noisy cable
// delivers them, the tunnel must not.
type streamCheck struct{ pos int }

func (c *streamCheck) check(b []byte) (bad int) {
	for _, x := range b {
		if x != pattern[c.pos] {
			bad++
		}
		if c.pos++; c.pos == len(pattern) {
			c.pos = 0
		}
	}
	return bad
}

// writeStream writes the pattern stream to w until stop is closed or a
// write fails.
func writeStream(w io.Writer, stop <-chan struct{}) error {
	pos := 0
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		n, err := w.Write(pattern[pos:min(pos+4096, len(pattern))])
		if pos += n; pos == len(pattern) {
			pos = 0
		}
		if err != nil {
			return err
		}
	}
}

// targets are the TCP services at the far end of the tunnel: echo, a sink
// that checks and counts the pattern stream, and a source that sends it.
type targets struct {
	echo, sink, source net.Listener
	good, bad          atomic.Int64
	wg                 sync.WaitGroup
	mu                 sync.Mutex
	conns              []net.Conn
}

func startTargets() (*targets, error) {
	t := &targets{}
	var err error
	for _, ln := range []*net.Listener{&t.echo, &t.sink, &t.source} {
		if *ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Close()
			return nil, err
		}
	}
	t.serve(t.echo, func(c net.Conn) { io.Copy(c, c) })
	t.serve(t.sink, func(c net.Conn) {
		var chk streamCheck
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			bad := chk.check(buf[:n])
			t.bad.Add(int64(bad))
			t.good.Add(int64(n - bad))
			if err != nil {
				return
			}
		}
	})
	t.serve(t.source, func(c net.Conn) { writeStream(c, nil) })
	return t, nil
}

func (t *targets) serve(ln net.Listener, h func(net.Conn)) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.mu.Lock()
			t.conns = append(t.conns, c)
			t.mu.Unlock()
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer c.Close()
				h(c)
			}()
		}
	}()
}

func (t *targets) dropConns() {
	t.mu.Lock()
	for _, c := range t.conns {
		c.Close()
	}
	t.conns = nil
	t.mu.Unlock()
}

func (t *targets) Close() {
	for _, ln := range []net.Listener{t.echo, t.sink, t.source} {
		if ln != nil {
			ln.Close()
		}
	}
	t.dropConns()
	t.wg.Wait()
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// lineSetup is one cable with a relay over it: the tunnel or bare socat.
type lineSetup struct {
	procs           []*proc
	echo, sink, src string // local addresses that reach the targets; "" = not offered
	pidsForCPU      []int
}

func startCable(e *env, o *tunnelOpts, baud int, ber float64) (a, b string, p *proc, err error) {
	dir, err := os.MkdirTemp(e.tmp, "cable-")
	if err != nil {
		return "", "", nil, err
	}
	a, b = filepath.Join(dir, "A"), filepath.Join(dir, "B")
	if o.cable == "socat" {
		p, err = e.start("socat cable", "socat", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	} else {
		args := []string{e.sertun, "cable", "--baud", strconv.Itoa(baud)}
		if ber > 0 {
			args = append(args, "--ber", strconv.FormatFloat(ber, 'g', -1, 64))
		}
		p, err = e.start("sertun cable", append(args, a, b)...)
	}
	if err != nil {
		return "", "", nil, err
	}
	if err := waitPath(a, 5*time.Second, p); err != nil {
		p.stop()
		return "", "", nil, err
	}
	if err := waitPath(b, 5*time.Second, p); err != nil {
		p.stop()
		return "", "", nil, err
	}
	return a, b, p, nil
}

func startTunnelSetup(e *env, o *tunnelOpts, baud int, ber float64, t *targets) (*lineSetup, error) {
	a, b, cable, err := startCable(e, o, baud, ber)
	if err != nil {
		return nil, err
	}
	s := &lineSetup{procs: []*proc{cable}}
	near := []string{e.sertun, "tunnel", "--baud", strconv.Itoa(baud)}
	far := []string{e.sertun, "tunnel", "--baud", strconv.Itoa(baud)}
	if e.verbose {
		near = append(near, "--stats", "1s")
		far = append(far, "--stats", "1s")
	}
	addrs := []*string{&s.echo, &s.sink, &s.src}
	for i, ln := range []net.Listener{t.echo, t.sink, t.source} {
		lp, err := freePort()
		if err != nil {
			stopAll(s.procs)
			return nil, err
		}
		*addrs[i] = fmt.Sprintf("127.0.0.1:%d", lp)
		target := fmt.Sprintf("127.0.0.1:%d", port(ln))
		near = append(near, "-L", fmt.Sprintf("127.0.0.1:%d:%s", lp, target))
		far = append(far, "--permit", target)
	}
	for _, argv := range [][]string{append(near, a), append(far, b)} {
		p, err := e.start("sertun tunnel", argv...)
		if err != nil {
			stopAll(s.procs)
			return nil, err
		}
		s.procs = append(s.procs, p)
	}
	s.pidsForCPU = []int{s.procs[1].Pid(), s.procs[2].Pid()}
	// Ready when a byte makes it to the echo target and back.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := echoRTTs(s.echo, 1, time.Minute, 3*time.Second); err == nil {
			return s, nil
		} else if time.Now().After(deadline) {
			stopAll(s.procs)
			return nil, fmt.Errorf("tunnel not passing data within 20 s: %w", err)
		}
		for _, p := range s.procs {
			if !p.alive() {
				stopAll(s.procs)
				return nil, p.failure()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func startSocatSetup(e *env, o *tunnelOpts, baud int, ber float64, t *targets) (*lineSetup, error) {
	a, b, cable, err := startCable(e, o, baud, ber)
	if err != nil {
		return nil, err
	}
	s := &lineSetup{procs: []*proc{cable}}
	lp, err := freePort()
	if err != nil {
		stopAll(s.procs)
		return nil, err
	}
	s.sink = fmt.Sprintf("127.0.0.1:%d", lp)
	near, err := e.start("socat relay", "socat", fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr", lp), "FILE:"+a+",raw,echo=0")
	if err != nil {
		stopAll(s.procs)
		return nil, err
	}
	s.procs = append(s.procs, near)
	far, err := e.start("socat relay", "socat", "FILE:"+b+",raw,echo=0", fmt.Sprintf("TCP:127.0.0.1:%d", port(t.sink)))
	if err != nil {
		stopAll(s.procs)
		return nil, err
	}
	s.procs = append(s.procs, far)
	if err := waitListen(lp, 5*time.Second, s.procs...); err != nil {
		stopAll(s.procs)
		return nil, err
	}
	return s, nil
}

// echoRTTs measures 1-byte round trips to the echo target through addr.
func echoRTTs(addr string, n int, capAt, timeout time.Duration) ([]time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var rtts []time.Duration
	buf := make([]byte, 16)
	start := time.Now()
	// Round trip -1 is not timed: its byte also opens the stream through
	// the tunnel (OPEN, the far side's dial, OPEN_OK: one more round trip
	// on the loaded line). That is connection setup, not an interactive
	// echo, and with the 40-60 samples a loaded run takes, p99 is the
	// largest sample: it would be the setup every time.
	for i := -1; i < n; i++ {
		// At least 20 samples, unless the path is so slow that 5 take
		// three times the cap: the bench must end in bounded time.
		if el := time.Since(start); i >= 20 && el > capAt || i >= 5 && el > 3*capAt {
			break
		}
		b := byte('a' + (i+26)%26)
		t0 := time.Now()
		c.SetDeadline(t0.Add(timeout))
		if _, err := c.Write([]byte{b}); err != nil {
			return rtts, err
		}
		m, err := c.Read(buf)
		if err != nil {
			return rtts, fmt.Errorf("echo %d: %w", i, err)
		}
		if m != 1 || buf[0] != b {
			return rtts, fmt.Errorf("echo %d: sent %q, got %q", i, b, buf[:m])
		}
		if i >= 0 {
			rtts = append(rtts, time.Since(t0))
		}
	}
	return rtts, nil
}

// bulk is running bulk streams through a setup: an upload to the sink and
// optionally a download from the source.
type bulk struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	conns   []net.Conn
	errs    chan error
	downBad atomic.Int64
}

func startBulk(sink, src string) (*bulk, error) {
	b := &bulk{stop: make(chan struct{}), errs: make(chan error, 2)}
	up, err := net.Dial("tcp", sink)
	if err != nil {
		return nil, err
	}
	b.conns = append(b.conns, up)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := writeStream(up, b.stop); err != nil {
			b.errs <- fmt.Errorf("upload: %w", err)
		}
	}()
	if src != "" {
		if err := b.addDownload(src); err != nil {
			b.Stop()
			return nil, err
		}
	}
	return b, nil
}

// addDownload starts a stream from the source target, checked as it comes.
func (b *bulk) addDownload(src string) error {
	dc, err := net.Dial("tcp", src)
	if err != nil {
		return err
	}
	b.conns = append(b.conns, dc)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		var chk streamCheck
		buf := make([]byte, 32<<10)
		for {
			n, err := dc.Read(buf)
			b.downBad.Add(int64(chk.check(buf[:n])))
			if err != nil {
				select {
				case <-b.stop:
				default:
					b.errs <- fmt.Errorf("download: %w", err)
				}
				return
			}
		}
	}()
	return nil
}

func (b *bulk) Stop() error {
	close(b.stop)
	for _, c := range b.conns {
		c.Close()
	}
	b.wg.Wait()
	select {
	case err := <-b.errs:
		if !errors.Is(err, net.ErrClosed) {
			return err
		}
	default:
	}
	if n := b.downBad.Load(); n > 0 {
		return fmt.Errorf("download: %d bytes corrupted", n)
	}
	return nil
}

// goodput runs windows of the upload stream and records good bytes per
// second at the sink for each.
func goodput(o *tunnelOpts, t *targets, runs int, rec func(goodBps, badFrac float64)) {
	time.Sleep(o.warmup)
	for i := 0; i < runs; i++ {
		g0, b0, t0 := t.good.Load(), t.bad.Load(), time.Now()
		time.Sleep(o.window)
		g1, b1, t1 := t.good.Load(), t.bad.Load(), time.Now()
		frac := 0.0
		if g1-g0+b1-b0 > 0 {
			frac = float64(b1-b0) / float64(g1-g0+b1-b0)
		}
		rec(float64(g1-g0)/t1.Sub(t0).Seconds(), frac)
	}
}

func berName(ber float64) string {
	if ber == 0 {
		return "clean"
	}
	return "BER " + strconv.FormatFloat(ber, 'g', -1, 64)
}

func tunnelReady(e *env, o *tunnelOpts) (bool, string) {
	if e.sertun == "" {
		return false, e.why
	}
	for _, sub := range []string{"tunnel", "cable"} {
		if o.cable == "socat" && sub == "cable" {
			continue
		}
		p, err := startProc("sertun "+sub+" --help", e.sertun, sub, "--help")
		if err != nil {
			return false, err.Error()
		}
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.stop()
			return false, "sertun " + sub + " --help hangs"
		}
		if p.err != nil {
			return false, fmt.Sprintf("sertun %s --help: %v", sub, p.err)
		}
	}
	return true, ""
}

// tunnelBench collects the tunnel section's rows.
type tunnelBench struct {
	e       *env
	o       *tunnelOpts
	t       *targets
	goodput map[string]*metric // by point key
	rows    []*metric          // goodput and corruption, in point order
	latRows []*metric
	notes   map[string]string
}

const colTunnel, colRelay = "sertun tunnel", "socat bare relay"

type point struct {
	baud    int
	ber     float64
	latency bool // measure echo latency here too (clean points of the grid)
}

func (p point) key() string { return fmt.Sprintf("%d %s", p.baud, berName(p.ber)) }

func (tb *tunnelBench) fail(col string, err error) {
	tb.notes[col] += err.Error() + "; "
	tb.e.logf("  %s: %v", col, err)
}

func (tb *tunnelBench) echoRuns(addr string, p50, p99 *metric, timeout time.Duration) error {
	for i := 0; i < tb.e.runs; i++ {
		r, err := echoRTTs(addr, tb.o.rtts, tb.o.rttCap, timeout)
		if err != nil {
			return err
		}
		p50.add(colTunnel, ms(percentile(r, 0.5)))
		p99.add(colTunnel, ms(percentile(r, 0.99)))
	}
	return nil
}

// runTunnel measures goodput at p through the tunnel and, at clean grid
// points, echo latency idle and under bulk both ways.
func (tb *tunnelBench) runTunnel(p point, gp *metric) error {
	s, err := startTunnelSetup(tb.e, tb.o, p.baud, p.ber, tb.t)
	if err != nil {
		return err
	}
	defer tb.t.dropConns()
	defer stopAll(s.procs)
	if tb.e.verbose {
		defer func() {
			for _, pr := range s.procs[1:] {
				out := pr.out.String()
				if len(out) > 3000 {
					out = "..." + out[len(out)-3000:]
				}
				tb.e.logf("  --- %s output:\n%s", pr.name, out)
			}
		}()
	}
	var idle50, idle99 *metric
	if p.latency {
		idle50 = newMetric(fmt.Sprintf("echo p50 %d idle", p.baud), "ms", "%.2f", true)
		idle99 = newMetric(fmt.Sprintf("echo p99 %d idle", p.baud), "ms", "%.2f", true)
		tb.latRows = append(tb.latRows, idle50, idle99)
		if err := tb.echoRuns(s.echo, idle50, idle99, 10*time.Second); err != nil {
			return fmt.Errorf("idle echo: %w", err)
		}
	}
	bad0 := tb.t.bad.Load()
	b, err := startBulk(s.sink, "")
	if err != nil {
		return err
	}
	line := float64(p.baud) / 10
	goodput(tb.o, tb.t, tb.e.runs, func(g, _ float64) { gp.add(colTunnel, 100*g/line) })
	var lerr error
	if p.latency {
		if err := b.addDownload(s.src); err != nil {
			b.Stop()
			return err
		}
		time.Sleep(tb.o.warmup)
		l50 := newMetric(fmt.Sprintf("echo p50 %d, bulk both ways", p.baud), "ms", "%.2f", true)
		l99 := newMetric(fmt.Sprintf("echo p99 %d, bulk both ways", p.baud), "ms", "%.2f", true)
		tb.latRows = append(tb.latRows, l50, l99)
		if err := tb.echoRuns(s.echo, l50, l99, 20*time.Second); err != nil {
			lerr = fmt.Errorf("echo under bulk: %w", err)
		}
	}
	if err := b.Stop(); err != nil {
		return err
	}
	if n := tb.t.bad.Load() - bad0; n > 0 {
		return fmt.Errorf("%d bytes arrived corrupted through the tunnel", n)
	}
	for _, pr := range s.procs {
		if !pr.alive() {
			return pr.failure()
		}
	}
	return lerr
}

// runRelay measures the physical reference at p: a bare socat relay of the
// same cable, counting the bytes it delivers corrupted.
func (tb *tunnelBench) runRelay(p point, gp *metric) error {
	s, err := startSocatSetup(tb.e, tb.o, p.baud, p.ber, tb.t)
	if err != nil {
		return err
	}
	defer tb.t.dropConns()
	defer stopAll(s.procs)
	b, err := startBulk(s.sink, "")
	if err != nil {
		return err
	}
	var corrupt *metric
	if p.ber > 0 {
		corrupt = newMetric("  bytes delivered corrupted "+p.key(), "%", "%.3f", true)
		tb.rows = append(tb.rows, corrupt)
	}
	line := float64(p.baud) / 10
	goodput(tb.o, tb.t, tb.e.runs, func(g, bad float64) {
		gp.add(colRelay, 100*g/line)
		if corrupt != nil {
			corrupt.add(colRelay, 100*bad)
		}
	})
	return b.Stop()
}

func parsePoints(o *tunnelOpts) ([]point, error) {
	var points []point
	for _, f := range strings.Split(o.bauds, ",") {
		baud, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || baud <= 0 {
			return nil, fmt.Errorf("bad -tunnel-bauds %q", o.bauds)
		}
		for _, f := range strings.Split(o.bers, ",") {
			ber, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || ber < 0 {
				return nil, fmt.Errorf("bad -tunnel-bers %q", o.bers)
			}
			points = append(points, point{baud, ber, ber == 0})
		}
	}
	for _, f := range strings.Split(o.extra, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		b, r, ok := strings.Cut(f, ":")
		baud, err1 := strconv.Atoi(b)
		ber, err2 := strconv.ParseFloat(r, 64)
		if !ok || err1 != nil || err2 != nil || baud <= 0 || ber < 0 {
			return nil, fmt.Errorf("bad -tunnel-extra %q (want baud:BER,...)", o.extra)
		}
		points = append(points, point{baud, ber, false})
	}
	return points, nil
}

func benchTunnel(e *env, o *tunnelOpts) error {
	points, err := parsePoints(o)
	if err != nil {
		return err
	}
	if e.quick {
		o.window, o.warmup, o.rtts, o.rttCap = 500*time.Millisecond, 500*time.Millisecond, 30, 500*time.Millisecond
	}
	fmt.Printf("\n== tunnel: one TCP stream over sertun tunnel over sertun cable, vs a bare socat relay of the same cable (%d runs; median [min..max]) ==\n", e.runs)
	if ready, why := tunnelReady(e, o); !ready {
		fmt.Printf("tunnel: not available (%s)\n", why)
		return nil
	}
	fmt.Printf("   goodput: bytes the sink received intact per second, %v windows after %v of streaming, as %% of the line rate (baud/10 bytes/s)\n", o.window, o.warmup)
	fmt.Printf("   echo: 1-byte round trips through -L to an echo server, up to %d per run (stops after %v); bulk both ways = one upload and one download stream running\n", o.rtts, o.rttCap)
	if o.cable == "socat" {
		fmt.Println("   CABLE: socat pty pair (no speed limit, no noise): a check of the harness, not figures for the line rates")
	}
	t, err := startTargets()
	if err != nil {
		return err
	}
	defer t.Close()
	tb := &tunnelBench{e: e, o: o, t: t, goodput: map[string]*metric{}, notes: map[string]string{}}
	for _, p := range points {
		e.logf("tunnel: %s", p.key())
		gp := newMetric("goodput "+p.key(), "% of line", "%.1f", false)
		tb.goodput[p.key()] = gp
		tb.rows = append(tb.rows, gp)
		if err := tb.runTunnel(p, gp); err != nil {
			tb.fail(colTunnel, fmt.Errorf("%s: %w", p.key(), err))
		}
		if err := tb.runRelay(p, gp); err != nil {
			tb.fail(colRelay, fmt.Errorf("%s: %w", p.key(), err))
		}
	}
	rows := append(tb.rows, tb.latRows...)
	printTable(os.Stdout, []string{colTunnel, colRelay}, []ratio{{colTunnel, colRelay, "tunnel/socat"}}, rows, tb.notes)
	fmt.Println("\n   must-show (issue 4):")
	if m := tb.goodput["460800 clean"]; m != nil && len(m.vals[colTunnel]) > 0 {
		v := "FAIL"
		if m.median(colTunnel) >= 90 {
			v = "ok  "
		}
		fmt.Printf("   %s goodput at 460800 clean >= 90%% of line rate (aim 93%%): %.1f%%\n", v, m.median(colTunnel))
	}
	for _, r := range rows {
		if strings.HasPrefix(r.name, "echo p99 115200, bulk") && len(r.vals[colTunnel]) > 0 {
			v := "FAIL"
			if r.median(colTunnel) < 60 {
				v = "ok  "
			}
			fmt.Printf("   %s echo p99 under bulk at 115200 < 60 ms: %.1f ms\n", v, r.median(colTunnel))
		}
	}
	return nil
}
