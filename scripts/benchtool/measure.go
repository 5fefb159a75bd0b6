//go:build linux

package main

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// end is one end of a path under test: a TCP client (raw or telnet), a pty
// master playing the device, or a program's end of a virtual port.
type end interface {
	io.ReadWriter
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// pattern is random data (every byte value, 0xFF included) that senders
// stream from at shifting offsets, so the stream has no short period.
var pattern = func() []byte {
	r := rand.New(rand.NewChaCha8([32]byte{'s', 'e', 'r', 't', 'u', 'n'}))
	b := make([]byte, 1<<20+64<<10)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}()

// echo plays a device that sends back what it receives, until stopped.
func echo(e end) (stop func() error) {
	var wg sync.WaitGroup
	var errv atomic.Value
	var quit atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 4096)
		for {
			n, err := e.Read(buf)
			if n > 0 {
				if _, werr := e.Write(buf[:n]); werr != nil {
					errv.Store(werr)
					return
				}
			}
			if err != nil {
				if !quit.Load() {
					errv.Store(err)
				}
				return
			}
		}
	}()
	return func() error {
		quit.Store(true)
		e.SetReadDeadline(time.Unix(1, 0))
		wg.Wait()
		e.SetReadDeadline(time.Time{})
		if v := errv.Load(); v != nil {
			return fmt.Errorf("device echo: %w", v.(error))
		}
		return nil
	}
}

// readSome reads at least one byte into buf before the deadline.
func readSome(e end, buf []byte, d time.Duration) (int, error) {
	e.SetReadDeadline(time.Now().Add(d))
	defer e.SetReadDeadline(time.Time{})
	return e.Read(buf)
}

// drainQuiet reads and discards until e has been quiet for q; it returns
// how many bytes it threw away.
func drainQuiet(e end, q time.Duration) int {
	buf := make([]byte, 64<<10)
	total := 0
	for {
		n, err := readSome(e, buf, q)
		total += n
		if err != nil {
			return total
		}
	}
}

// syncPath waits until a byte sent at client comes back through the echoing
// device at dev: the server has its device open and negotiation is done.
// It leaves both ends quiet.
func syncPath(client, dev end, d time.Duration) error {
	stop := echo(dev)
	deadline := time.Now().Add(d)
	buf := make([]byte, 4096)
	var err error
	for attempt := byte(0); time.Now().Before(deadline); attempt++ {
		mark := 'A' + attempt%26
		if _, err = client.Write([]byte{mark}); err != nil {
			break
		}
		got := false
		until := time.Now().Add(500 * time.Millisecond)
		for time.Now().Before(until) && !got {
			var n int
			n, err = readSome(client, buf, time.Until(until))
			if n > 0 && buf[n-1] == mark {
				got = true
			}
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			err = nil
		}
		if got {
			drainQuiet(client, 50*time.Millisecond)
			return stop()
		}
		if err != nil {
			break
		}
	}
	stop()
	if err == nil {
		err = fmt.Errorf("no echo through the path within %v", d)
	}
	return fmt.Errorf("sync: %w", err)
}

// latency measures 1-byte round trips from client through the echoing
// device and back: n of them after a warm-up, or fewer if capAt passes.
func latency(client, dev end, n int, capAt time.Duration) ([]time.Duration, error) {
	stop := echo(dev)
	buf := make([]byte, 64)
	var rtts []time.Duration
	start := time.Now()
	const warm = 20
	var err error
	for i := 0; i < n+warm; i++ {
		if i >= warm+50 && time.Since(start) > capAt {
			break
		}
		b := []byte{byte('a' + i%26)}
		t0 := time.Now()
		if _, err = client.Write(b); err != nil {
			break
		}
		var m int
		m, err = readSome(client, buf, 3*time.Second)
		if err != nil {
			err = fmt.Errorf("round trip %d: %w", i, err)
			break
		}
		dt := time.Since(t0)
		if m != 1 || buf[0] != b[0] {
			err = fmt.Errorf("round trip %d: sent %q, got %q", i, b, buf[:m])
			break
		}
		if i >= warm {
			rtts = append(rtts, dt)
		}
	}
	if serr := stop(); err == nil {
		err = serr
	}
	return rtts, err
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(p*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// xfer is one verified bulk transfer.
type xfer struct {
	Bytes   int64
	Elapsed time.Duration // first write to last byte received
	CPU     int64         // ticks the measured processes used meanwhile
	RSSMax  int64         // KiB, largest sampled summed VmRSS
}

func (x xfer) MBps() float64 { return float64(x.Bytes) / x.Elapsed.Seconds() / 1e6 }

// CPUPerMiB is CPU seconds per MiB moved.
func (x xfer) CPUPerMiB() float64 {
	return float64(x.CPU) / ticksPerSecond / (float64(x.Bytes) / (1 << 20))
}

// transfer streams pattern data from src to dst for window, then waits
// until every byte arrived and checks count and CRC-32C: a lost, extra or
// changed byte is an error, so the rate counts only delivered bytes.
func transfer(src, dst end, window time.Duration, pids []int) (xfer, error) {
	var x xfer
	cpu0, err := cpuSum(pids)
	if err != nil {
		return x, err
	}
	sampler := sampleRSS(pids, 100*time.Millisecond)

	var total atomic.Int64
	total.Store(-1)
	type rres struct {
		n    int64
		crc  uint32
		last time.Time
		err  error
	}
	rc := make(chan rres, 1)
	var quit atomic.Bool
	go func() {
		var r rres
		buf := make([]byte, 64<<10)
		for {
			dst.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := dst.Read(buf)
			if n > 0 {
				r.n += int64(n)
				r.crc = crc32.Update(r.crc, castagnoli, buf[:n])
				r.last = time.Now()
			}
			if t := total.Load(); t >= 0 && r.n >= t {
				break
			}
			if quit.Load() {
				r.err = errors.New("timed out")
				break
			}
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				r.err = err
				break
			}
		}
		dst.SetReadDeadline(time.Time{})
		rc <- r
	}()

	start := time.Now()
	src.SetWriteDeadline(start.Add(window + 10*time.Second))
	defer src.SetWriteDeadline(time.Time{})
	var sent int64
	var scrc uint32
	off := 0
	const chunk = 32 << 10
	var werr error
	for time.Since(start) < window {
		b := pattern[off : off+chunk]
		n, err := src.Write(b)
		sent += int64(n)
		scrc = crc32.Update(scrc, castagnoli, b[:n])
		if err != nil {
			werr = err
			break
		}
		off = (off + chunk + 4093) % (len(pattern) - chunk)
	}
	total.Store(sent)
	var r rres
	select {
	case r = <-rc:
	case <-time.After(15 * time.Second):
		quit.Store(true)
		r = <-rc
	}
	cpu1, cerr := cpuSum(pids)
	x.RSSMax = sampler.Stop()
	if werr != nil {
		return x, fmt.Errorf("write: %w", werr)
	}
	if r.err != nil {
		return x, fmt.Errorf("received %d of %d bytes: %w", r.n, sent, r.err)
	}
	if cerr != nil {
		return x, cerr
	}
	if r.n != sent {
		return x, fmt.Errorf("received %d bytes, sent %d", r.n, sent)
	}
	if r.crc != scrc {
		return x, fmt.Errorf("data corrupted: CRC-32C %08x received, %08x sent (%d bytes)", r.crc, scrc, sent)
	}
	if extra := drainQuiet(dst, 30*time.Millisecond); extra > 0 {
		return x, fmt.Errorf("%d bytes more than the %d sent", extra, sent)
	}
	x.Bytes, x.Elapsed, x.CPU = sent, r.last.Sub(start), cpu1-cpu0
	return x, nil
}

// measurePath measures the path between the far end (a client or a
// program) and the device: 1-byte round trips, then bulk each way, and
// checks that every process under test survived. farName names the far
// end in errors.
func measurePath(e *env, far, dev end, pids []int, ps []*proc, farName string) (rtts []time.Duration, toFar, toDev xfer, err error) {
	if rtts, err = latency(far, dev, e.rtts, e.rttCap); err != nil {
		return nil, xfer{}, xfer{}, fmt.Errorf("latency: %w", err)
	}
	if toFar, err = transfer(dev, far, e.window, pids); err != nil {
		return nil, xfer{}, xfer{}, fmt.Errorf("device->%s: %w", farName, err)
	}
	if toDev, err = transfer(far, dev, e.window, pids); err != nil {
		return nil, xfer{}, xfer{}, fmt.Errorf("%s->device: %w", farName, err)
	}
	for _, p := range ps {
		if !p.alive() {
			return nil, xfer{}, xfer{}, p.failure()
		}
	}
	return rtts, toFar, toDev, nil
}
