package serialdev

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
)

// transport is a kind of port under test. open gives a port whose written
// bytes come back on Read (loop://, or a pty whose master echoes) and
// closes it when the test ends; settings are as the port reads them back
// after SetSettings(s), or an error wrapping ErrInvalidSettings.
type transport struct {
	name     string
	open     func(t *testing.T) Port
	settings func(s Settings) (Settings, error)
}

func transports() []transport {
	loop := transport{
		name: "loop",
		open: func(t *testing.T) Port {
			p, err := Open(LoopURL)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			return p
		},
		settings: func(s Settings) (Settings, error) { return s, nil },
	}
	return append([]transport{loop}, osTransports()...)
}

// readFull reads len(want) bytes within d and compares them.
func readFull(t *testing.T, p Port, want []byte, d time.Duration) {
	t.Helper()
	if err := p.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	defer p.SetReadDeadline(time.Time{})
	got := make([]byte, len(want))
	if n, err := io.ReadFull(p, got); err != nil {
		t.Fatalf("read %d of %d bytes: %v", n, len(want), err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("data differs from byte %d of %d", i, len(want))
	}
}

func TestPortEcho(t *testing.T) {
	every := make([]byte, 256*4)
	for i := range every {
		every[i] = byte(i)
	}
	random := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"one byte", []byte{0}},
		{"every byte value", every},
		{"1 MiB random", random}, // more than any buffer: writer and reader must overlap
	}
	for _, tr := range transports() {
		for _, c := range cases {
			t.Run(tr.name+"/"+c.name, func(t *testing.T) {
				p := tr.open(t)
				werr := make(chan error, 1)
				go func() {
					_, err := p.Write(c.data)
					werr <- err
				}()
				readFull(t, p, c.data, 20*time.Second)
				if err := <-werr; err != nil {
					t.Fatalf("write: %v", err)
				}
			})
		}
	}
}

func TestPortReadDeadline(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			p := tr.open(t)
			buf := make([]byte, 16)

			p.SetReadDeadline(time.Now().Add(-time.Second))
			if _, err := p.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read after a past deadline: %v, want os.ErrDeadlineExceeded", err)
			}

			const d = 50 * time.Millisecond
			start := time.Now()
			p.SetReadDeadline(start.Add(d))
			_, err := p.Read(buf)
			if el := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || el < d || el > 2*time.Second {
				t.Fatalf("read with a %v deadline: %v after %v", d, err, el)
			}

			// A deadline moved while Read waits takes effect.
			p.SetReadDeadline(time.Time{})
			errc := make(chan error, 1)
			go func() {
				_, err := p.Read(buf)
				errc <- err
			}()
			time.Sleep(20 * time.Millisecond)
			p.SetReadDeadline(time.Now())
			select {
			case err := <-errc:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("read after the deadline moved: %v", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("moving the deadline did not end a pending Read")
			}

			// Without a deadline, the port works again.
			p.SetReadDeadline(time.Time{})
			if _, err := p.Write([]byte("after")); err != nil {
				t.Fatal(err)
			}
			readFull(t, p, []byte("after"), 5*time.Second)
		})
	}
}

func TestPortCloseUnblocksRead(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			p := tr.open(t)
			errc := make(chan error, 1)
			go func() {
				_, err := p.Read(make([]byte, 8))
				errc <- err
			}()
			time.Sleep(20 * time.Millisecond)
			start := time.Now()
			if err := p.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, os.ErrClosed) {
					t.Fatalf("pending read ended with %v, want os.ErrClosed", err)
				}
				if el := time.Since(start); el > 500*time.Millisecond {
					t.Fatalf("pending read took %v to end", el)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Close did not unblock a pending Read")
			}
			select {
			case _, ok := <-p.StatusChanged():
				if ok {
					// a last signal may still be buffered; the next receive must see the close
					if _, ok := <-p.StatusChanged(); ok {
						t.Fatal("StatusChanged still open after Close")
					}
				}
			case <-time.After(time.Second):
				t.Fatal("StatusChanged not closed by Close")
			}
		})
	}
}

func TestPortAfterClose(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			p := tr.open(t)
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			ops := []struct {
				name string
				fn   func() error
			}{
				{"read", func() error { _, err := p.Read(make([]byte, 1)); return err }},
				{"write", func() error { _, err := p.Write([]byte{1}); return err }},
				{"settings", func() error { _, err := p.Settings(); return err }},
				{"set settings", func() error { return p.SetSettings(DefaultSettings()) }},
				{"status", func() error { _, err := p.Status(); return err }},
				{"purge", func() error { return p.Purge(PurgeBoth) }},
				{"drain", func() error { return p.Drain() }},
				{"read deadline", func() error { return p.SetReadDeadline(time.Now()) }},
				{"write deadline", func() error { return p.SetWriteDeadline(time.Now()) }},
				{"close", p.Close},
			}
			for _, op := range ops {
				if err := op.fn(); !errors.Is(err, os.ErrClosed) {
					t.Errorf("%s after Close: %v, want os.ErrClosed", op.name, err)
				}
			}
		})
	}
}

// allSettings is every combination of the fields at a few rates,
// including rates no classic table has.
func allSettings() []Settings {
	var all []Settings
	for _, baud := range []int{50, 9600, 57600, 250000, 3000000} {
		for bits := 5; bits <= 8; bits++ {
			for par := ParityNone; par <= ParitySpace; par++ {
				for stop := Stop1; stop <= Stop2; stop++ {
					for _, out := range []Flow{FlowNone, FlowXonXoff, FlowRTSCTS, FlowDCD, FlowDSR} {
						for _, in := range []Flow{FlowNone, FlowXonXoff, FlowRTSCTS, FlowDTR} {
							all = append(all, Settings{baud, bits, par, stop, out, in})
						}
					}
				}
			}
		}
	}
	return all
}

func TestPortSettingsRoundTrip(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			p := tr.open(t)
			for _, s := range allSettings() {
				before, err := p.Settings()
				if err != nil {
					t.Fatal(err)
				}
				want, werr := tr.settings(s)
				err = p.SetSettings(s)
				got, gerr := p.Settings()
				if gerr != nil {
					t.Fatal(gerr)
				}
				if werr != nil {
					if !errors.Is(err, ErrInvalidSettings) {
						t.Fatalf("SetSettings(%v) = %v, want ErrInvalidSettings", s, err)
					}
					if got != before {
						t.Fatalf("refused SetSettings(%v) changed the port from %v to %v", s, before, got)
					}
					continue
				}
				if err != nil {
					t.Fatalf("SetSettings(%v): %v", s, err)
				}
				if got != want {
					t.Fatalf("SetSettings(%+v) reads back %+v, want %+v", s, got, want)
				}
			}
		})
	}
}

func TestPortInvalidSettings(t *testing.T) {
	bad := []Settings{
		{BaudRate: 0, DataBits: 8},
		{BaudRate: -9600, DataBits: 8},
		{BaudRate: 9600, DataBits: 4},
		{BaudRate: 9600, DataBits: 9},
		{BaudRate: 9600, DataBits: 8, Parity: ParitySpace + 1},
		{BaudRate: 9600, DataBits: 8, StopBits: Stop2 + 1},
		{BaudRate: 9600, DataBits: 8, OutFlow: FlowDTR},
		{BaudRate: 9600, DataBits: 8, InFlow: FlowDSR},
	}
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			p := tr.open(t)
			if err := p.SetSettings(Settings{BaudRate: 19200, DataBits: 8, StopBits: Stop2}); err != nil {
				t.Fatal(err)
			}
			before, _ := p.Settings()
			for _, s := range bad {
				if err := p.SetSettings(s); !errors.Is(err, ErrInvalidSettings) {
					t.Errorf("SetSettings(%+v) = %v, want ErrInvalidSettings", s, err)
				}
				if after, _ := p.Settings(); after != before {
					t.Errorf("SetSettings(%+v) changed the port to %v", s, after)
				}
			}
		})
	}
}

// TestPortConcurrent runs data, control and status calls at once, for the
// race detector and for deadlock.
func TestPortConcurrent(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			p := tr.open(t)
			const total = 256 << 10
			data := bytes.Repeat([]byte("0123456789abcdef"), total/16)
			var wg sync.WaitGroup
			stop := make(chan struct{})
			wg.Add(3)
			go func() {
				defer wg.Done()
				for i := 0; i < total; i += 4096 {
					if _, err := p.Write(data[i : i+4096]); err != nil {
						t.Errorf("write: %v", err)
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					p.SetDTR(i%2 == 0)
					p.SetRTS(i%3 == 0)
					p.Status()
					p.Settings()
					p.SetWriteDeadline(time.Time{})
					time.Sleep(time.Millisecond)
				}
			}()
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					case <-p.StatusChanged():
					}
				}
			}()
			readFull(t, p, data, 20*time.Second)
			close(stop)
			wg.Wait()
		})
	}
}

// With nobody reading, a writer fills every buffer on the way and blocks:
// a write deadline ends the write, and so does Close.
func TestPortWriteBlocked(t *testing.T) {
	big := make([]byte, 16<<20)
	for _, tr := range transports() {
		t.Run(tr.name+"/deadline", func(t *testing.T) {
			p := tr.open(t)
			const d = 200 * time.Millisecond
			start := time.Now()
			p.SetWriteDeadline(start.Add(d))
			n, err := p.Write(big)
			if el := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || el < d || el > 5*time.Second {
				t.Fatalf("write with nobody reading: %d bytes, %v after %v", n, err, el)
			}
			if n >= len(big) {
				t.Fatalf("wrote all %d bytes with nobody reading", n)
			}
		})
		t.Run(tr.name+"/close", func(t *testing.T) {
			p := tr.open(t)
			errc := make(chan error, 1)
			go func() { _, err := p.Write(big); errc <- err }()
			time.Sleep(100 * time.Millisecond)
			p.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, os.ErrClosed) {
					t.Fatalf("blocked write ended with %v, want os.ErrClosed", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Close did not unblock a blocked Write")
			}
		})
	}
}
