package pty

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/bits"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startCable runs a cable for the test and opens both ends as a program
// would.
func startCable(t *testing.T, cfg CableConfig) (a, b *os.File) {
	t.Helper()
	dir := t.TempDir()
	la, lb := filepath.Join(dir, "A"), filepath.Join(dir, "B")
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunCable(ctx, la, lb, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunCable: %v", err)
		}
	})
	open := func(p string) *os.File {
		deadline := time.Now().Add(5 * time.Second)
		for {
			f, err := os.OpenFile(p, os.O_RDWR|unix.O_NOCTTY, 0)
			if err == nil {
				t.Cleanup(func() { f.Close() })
				return f
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return open(la), open(lb)
}

func TestCable(t *testing.T) {
	tests := []struct {
		name    string
		cfg     CableConfig
		size    int
		minTime time.Duration
	}{
		{"unpaced", CableConfig{}, 256 << 10, 0},
		{"115200", CableConfig{Baud: 115200}, 5760, 450 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := startCable(t, tt.cfg)
			data := make([]byte, tt.size)
			for i := range data {
				data[i] = byte(i * 7)
			}
			for _, dir := range []struct{ from, to *os.File }{{a, b}, {b, a}} {
				start := time.Now()
				go dir.from.Write(data)
				dir.to.SetReadDeadline(time.Now().Add(10 * time.Second))
				got := make([]byte, len(data))
				if _, err := io.ReadFull(dir.to, got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) {
					t.Fatal("data changed crossing a clean cable")
				}
				if d := time.Since(start); d < tt.minTime {
					t.Errorf("%d bytes crossed in %v, faster than the line rate allows (%v)", len(data), d, tt.minTime)
				}
			}
		})
	}
}

func TestCableBER(t *testing.T) {
	const ber = 1e-3
	a, b := startCable(t, CableConfig{BER: ber})
	data := make([]byte, 64<<10)
	go a.Write(data)
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, len(data))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	flips := 0
	for _, c := range got {
		flips += bits.OnesCount8(c)
	}
	want := ber * 8 * float64(len(data)) // 524
	if float64(flips) < want*0.7 || float64(flips) > want*1.3 {
		t.Errorf("%d bits flipped in %d bytes, want about %.0f", flips, len(data), want)
	}
}

// TestCableSchedule: bytes that were waiting go right after the ones
// before, even when the read that took them was slow to return (a busy
// CPU); only a read that waited for bytes starts the line afresh. The
// cable once restarted the line after any read over 200 µs and ran
// 0.2-0.4% slow on a busy machine: a queue growing by 2-4 ms a second in
// front of a program that paces itself at the line rate.
func TestCableSchedule(t *testing.T) {
	d := &cableDir{byteTime: time.Second * 10 / 115200} // 86.8 µs
	t0 := time.Unix(1000, 0)
	ms := func(f float64) time.Time { return t0.Add(time.Duration(f * float64(time.Millisecond))) }
	tests := []struct {
		name                 string
		lineFree, start, end time.Time
		want                 time.Time
	}{
		{"waiting, on time", ms(1), ms(1), ms(1.01), ms(1).Add(10 * d.byteTime)},
		{"waiting, read descheduled 1 ms", ms(1), ms(1), ms(2), ms(1).Add(10 * d.byteTime)},
		{"waiting, timer 5 ms late", ms(1), ms(6), ms(6.01), ms(1).Add(10 * d.byteTime)},
		{"waiting, far behind", ms(1), ms(30), ms(30.01), ms(20).Add(10 * d.byteTime)},
		{"idle line", ms(1), ms(1), ms(50), ms(50).Add(10 * d.byteTime)},
	}
	for _, tt := range tests {
		if got := d.schedule(tt.lineFree, tt.start, tt.end, 10); !got.Equal(tt.want) {
			t.Errorf("%s: line free at %v, want %v", tt.name, got.Sub(t0), tt.want.Sub(t0))
		}
	}
}
