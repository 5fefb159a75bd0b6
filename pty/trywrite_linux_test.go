package pty

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"
)

// expectNothing checks that the program has nothing to read for a while.
func expectNothing(t *testing.T, prog *os.File, d time.Duration) {
	t.Helper()
	prog.SetReadDeadline(time.Now().Add(d))
	defer prog.SetReadDeadline(time.Time{})
	buf := make([]byte, 64)
	n, err := prog.Read(buf)
	if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("program read %q, %v; want nothing", buf[:n], err)
	}
}

// TryWrite on an empty pty takes all of a small b (the pty buffers some
// 10 KiB) and the program gets it unchanged.
func TestTryWriteDelivers(t *testing.T) {
	p := openPty(t, "")
	prog := openProgram(t, p.SlavePath())
	for _, size := range []int{1, 10, 1000, 4096} {
		b := make([]byte, size)
		randomBytes(b, uint64(size))
		start := time.Now()
		n := p.TryWrite(b)
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("%d bytes: TryWrite took %v", size, d)
		}
		if n != size {
			t.Fatalf("TryWrite of %d bytes to an empty pty took %d", size, n)
		}
		if got := readFull(t, prog, size); !bytes.Equal(got, b) {
			t.Fatalf("%d bytes: the program read other bytes", size)
		}
	}
	if n := p.TryWrite(nil); n != 0 {
		t.Errorf("TryWrite(nil) = %d", n)
	}
	expectNothing(t, prog, 20*time.Millisecond)
}

// A program that does not read: TryWrite fills the pty, returns short
// counts and then 0 without waiting, and the program later reads exactly
// the bytes TryWrite said it took.
func TestTryWriteFull(t *testing.T) {
	p := openPty(t, "")
	prog := openProgram(t, p.SlavePath())
	chunk := make([]byte, 4096)
	var taken []byte
	short, full := 0, false
	start := time.Now()
	for i := range 1024 { // 4 MiB: far more than a pty holds
		randomBytes(chunk, uint64(i))
		t0 := time.Now()
		n := p.TryWrite(chunk)
		if d := time.Since(t0); d > 100*time.Millisecond {
			t.Fatalf("TryWrite %d took %v: it waited", i, d)
		}
		taken = append(taken, chunk[:n]...)
		if n == 0 {
			full = true
			break
		}
		if n < len(chunk) {
			short++
		}
	}
	if !full {
		t.Fatalf("TryWrite never returned 0: %d bytes taken by a pty nobody reads", len(taken))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("filling the pty took %v", d)
	}
	t.Logf("the pty took %d bytes, %d short counts", len(taken), short)
	if len(taken) < 4096 {
		t.Errorf("the pty took only %d bytes", len(taken))
	}
	// Still full: more tries take nothing.
	for range 3 {
		if n := p.TryWrite(chunk); n != 0 {
			t.Fatalf("TryWrite on a full pty took %d", n)
		}
	}
	if got := readFull(t, prog, len(taken)); !bytes.Equal(got, taken) {
		t.Fatal("the program read other bytes than TryWrite took")
	}
	expectNothing(t, prog, 20*time.Millisecond)
	// Drained: room again.
	if n := p.TryWrite([]byte("again")); n != 5 {
		t.Fatalf("TryWrite after the program read: %d", n)
	}
	if got := readFull(t, prog, 5); string(got) != "again" {
		t.Fatalf("program read %q", got)
	}
}

// TryWrite takes nothing past the write deadline or after Close, and
// works again once the deadline is cleared.
func TestTryWriteDeadlineAndClose(t *testing.T) {
	p := openPty(t, "")
	prog := openProgram(t, p.SlavePath())
	tests := []struct {
		name  string
		setup func()
		want  int
	}{
		{"no deadline", func() {}, 3},
		{"deadline passed", func() { p.SetWriteDeadline(time.Unix(1, 0)) }, 0},
		{"deadline cleared", func() { p.SetWriteDeadline(time.Time{}) }, 3},
		{"deadline ahead", func() { p.SetWriteDeadline(time.Now().Add(time.Hour)) }, 3},
		{"closed", func() { p.Close() }, 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.setup()
			msg := []byte{byte('a' + i), 0xff, '\n'}
			start := time.Now()
			if n := p.TryWrite(msg); n != tt.want {
				t.Fatalf("TryWrite = %d, want %d", n, tt.want)
			}
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Errorf("TryWrite took %v", d)
			}
			if tt.want == 0 {
				if tt.name != "closed" {
					expectNothing(t, prog, 20*time.Millisecond)
				}
				return
			}
			if got := readFull(t, prog, len(msg)); !bytes.Equal(got, msg) {
				t.Fatalf("program read %q, want %q", got, msg)
			}
		})
	}
}

// Read hands a short write of the program back at once, as one chunk, and
// a long one whole; long writes come in chunks larger than the 4 KiB a
// master read gives.
func TestReadChunks(t *testing.T) {
	tests := []struct {
		size     int
		oneChunk bool // comes back in one Read
	}{
		{1, true},
		{10, true},
		{100, true},
		{1000, true},
		{3000, false},
		{64 << 10, false},
		{256 << 10, false},
	}
	p := openPty(t, "")
	prog := openProgram(t, p.SlavePath())
	buf := make([]byte, 64<<10)
	for _, tt := range tests {
		want := make([]byte, tt.size)
		randomBytes(want, uint64(tt.size)+7)
		errc := make(chan error, 1)
		start := time.Now()
		go func() { _, err := prog.Write(want); errc <- err }()
		p.SetReadDeadline(time.Now().Add(10 * time.Second))
		var got []byte
		reads, biggest := 0, 0
		var first time.Duration
		for len(got) < len(want) && reads < 10_000 {
			n, err := p.Read(buf)
			if err != nil {
				t.Fatalf("%d bytes: Read after %d: %v", tt.size, len(got), err)
			}
			if reads == 0 {
				first = time.Since(start)
			}
			reads++
			biggest = max(biggest, n)
			got = append(got, buf[:n]...)
		}
		p.SetReadDeadline(time.Time{})
		if err := <-errc; err != nil {
			t.Fatalf("program's write: %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes written, %d read, differing", len(want), len(got))
		}
		t.Logf("%d bytes: %d reads, biggest %d, first after %v", tt.size, reads, biggest, first)
		if tt.oneChunk && reads != 1 {
			t.Errorf("%d bytes came in %d reads, want one", tt.size, reads)
		}
		if tt.oneChunk && first > 200*time.Millisecond {
			t.Errorf("%d bytes: Read returned after %v", tt.size, first)
		}
		if tt.size >= 64<<10 && biggest <= 4096 {
			t.Errorf("%d bytes: no read larger than 4096 (biggest %d)", tt.size, biggest)
		}
	}
}
