package pty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"sync"
	"time"
)

// CableConfig configures a virtual null-modem cable.
type CableConfig struct {
	// Baud, when positive, limits each direction to Baud/10 bytes per
	// second (8N1), delivered smoothly in small chunks as a UART would.
	// 0: as fast as the ptys go.
	Baud int
	// BER is the bit error rate: each bit that crosses is flipped with
	// this probability.
	BER float64
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// cableStuck is how long a direction waits for a program to read its end
// before it drops bytes, as a real line does when nobody listens.
const cableStuck = time.Second

// cableCatchUp is how far behind its schedule a paced direction may fall
// (a late timer, a busy CPU) and still make up for it.
const cableCatchUp = 10 * time.Millisecond

// cableIdle is how long a read must wait for bytes before the line counts
// as having been idle. Shorter, a read that was merely descheduled (a busy
// CPU) would drop the schedule's lead, and the line would run slow by that
// much: 0.1% slow is a queue that grows by 1 ms every second in front of
// a program that paces itself at the line rate, such as sertun tunnel.
const cableIdle = 2 * time.Millisecond

// RunCable links two new ptys, at linkA and linkB, like a null-modem cable:
// what a program writes to one the program on the other reads, both
// directions independent. It runs until ctx is done.
func RunCable(ctx context.Context, linkA, linkB string, cfg CableConfig) error {
	if cfg.Baud < 0 {
		return fmt.Errorf("pty: cable: baud rate %d is negative", cfg.Baud)
	}
	if cfg.BER < 0 || cfg.BER >= 1 || math.IsNaN(cfg.BER) {
		return fmt.Errorf("pty: cable: bit error rate %g out of range (0 to 1)", cfg.BER)
	}
	if linkA == "" || linkB == "" || linkA == linkB {
		return errors.New("pty: cable: want two different link paths")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	a, err := Open(linkA)
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := Open(linkB)
	if err != nil {
		return err
	}
	defer b.Close()
	if cfg.Baud > 0 {
		// Both ends show the cable's rate, so that a program that asks
		// the port its rate (sertun tunnel without --baud) learns it.
		for _, p := range []*Pty{a, b} {
			s, err := p.Settings()
			if err == nil {
				s.BaudRate = cfg.Baud
				err = p.SetSettings(s)
			}
			if err != nil {
				return fmt.Errorf("pty: cable: %w", err)
			}
		}
	}
	args := []any{"a", a.String(), "b", b.String()}
	if cfg.Baud > 0 {
		args = append(args, "baud", cfg.Baud)
	}
	if cfg.BER > 0 {
		args = append(args, "ber", cfg.BER)
	}
	log.Info("cable: linked", args...)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for _, d := range []*cableDir{
		newCableDir("a->b", a, b, cfg, 1, log),
		newCableDir("b->a", b, a, cfg, 2, log),
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.run(ctx); err != nil && ctx.Err() == nil {
				errc <- err
				cancel()
			}
		}()
	}
	<-ctx.Done()
	a.Close()
	b.Close()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// cableDir moves one direction of the cable.
type cableDir struct {
	name     string
	src, dst *Pty
	log      *slog.Logger
	byteTime time.Duration // 0: unpaced
	chunk    int
	ber      float64
	rng      *rand.Rand
	skip     float64 // bits until the next flip
	flips    uint64
	dropped  uint64
}

func newCableDir(name string, src, dst *Pty, cfg CableConfig, seed uint64, log *slog.Logger) *cableDir {
	d := &cableDir{name: name, src: src, dst: dst, log: log, ber: cfg.BER, chunk: 32 << 10,
		rng: rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))}
	if cfg.Baud > 0 {
		d.byteTime = time.Second * 10 / time.Duration(cfg.Baud)
		// About 1 ms of line time per chunk: smooth, like a UART.
		d.chunk = min(max(cfg.Baud/10/1000, 1), 4096)
	}
	d.skip = d.nextSkip()
	return d
}

// nextSkip draws the number of good bits before the next flip
// (geometric), so noise costs one random number per error, not per bit.
func (d *cableDir) nextSkip() float64 {
	if d.ber <= 0 {
		return math.Inf(1)
	}
	return math.Floor(math.Log(1-d.rng.Float64()) / math.Log(1-d.ber))
}

func (d *cableDir) noise(b []byte) {
	for i := range b {
		for d.skip < 8 {
			b[i] ^= 1 << int(d.skip)
			d.flips++
			d.skip += 1 + d.nextSkip()
		}
		d.skip -= 8
	}
}

func (d *cableDir) run(ctx context.Context) error {
	buf := make([]byte, d.chunk)
	var lineFree time.Time // when the bytes already sent have crossed
	for {
		readStart := time.Now()
		n, err := d.src.Read(buf)
		readEnd := time.Now()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			if errors.Is(err, io.EOF) {
				continue
			}
			return fmt.Errorf("pty: cable %s: %w", d.name, err)
		}
		data := buf[:n]
		d.noise(data)
		if d.byteTime > 0 {
			lineFree = d.schedule(lineFree, readStart, readEnd, n)
			if w := time.Until(lineFree); w > 0 {
				t := time.NewTimer(w)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return nil
				}
			}
		}
		if err := d.write(data); err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("pty: cable %s: %w", d.name, err)
		}
	}
}

// schedule returns when n bytes, read between readStart and readEnd, have
// crossed the line, given that what went before crosses at lineFree.
func (d *cableDir) schedule(lineFree, readStart, readEnd time.Time, n int) time.Time {
	// A line that had to wait for these bytes was idle and starts
	// afresh. Otherwise they were waiting for us: they go right after
	// what went before, so that a late timer or a busy CPU is made up
	// for and the rate stays exact (up to cableCatchUp behind, so an
	// unnoticed idle spell does not turn into a burst).
	if readEnd.Sub(readStart) > cableIdle {
		lineFree = later(lineFree, readEnd)
	} else {
		lineFree = later(lineFree, readStart.Add(-cableCatchUp))
	}
	return lineFree.Add(time.Duration(n) * d.byteTime)
}

// write delivers data, dropping it (with a log line) when the program on
// the far end has not read for cableStuck.
func (d *cableDir) write(data []byte) error {
	d.dst.SetWriteDeadline(time.Now().Add(cableStuck))
	n, err := d.dst.Write(data)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		d.dropped += uint64(len(data) - n)
		d.log.Warn("cable: nobody reads this end; dropping bytes", "dir", d.name, "dropped_total", d.dropped)
		return nil
	}
	return err
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
