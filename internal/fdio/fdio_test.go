//go:build linux

package fdio

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// pipeFiles returns a pipe whose ends are non-blocking (or not) *os.Files.
func pipeFiles(t *testing.T, nonblock bool) (r, w *os.File) {
	t.Helper()
	var p [2]int
	flags := unix.O_CLOEXEC
	if nonblock {
		flags |= unix.O_NONBLOCK
	}
	if err := unix.Pipe2(p[:], flags); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(p[0]), "r"), os.NewFile(uintptr(p[1]), "w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// TestCopy: what goes in one end comes out of the other, whole and in
// order, through a socket and through a pipe, both ways of writing.
func TestCopy(t *testing.T) {
	data := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	type ends struct {
		r, w       *FD
		closeWrite func()
	}
	tests := []struct {
		name string
		make func(t *testing.T) ends
		fast bool
	}{
		{"tcp", func(t *testing.T) ends {
			a, b := tcpPair(t)
			return ends{New(b, b), New(a, a), func() { a.(*net.TCPConn).CloseWrite() }}
		}, true},
		{"pipe", func(t *testing.T) ends {
			r, w := pipeFiles(t, true)
			return ends{New(r, r), New(w, w), func() { w.Close() }}
		}, true},
		{"blocking pipe", func(t *testing.T) ends {
			r, w := pipeFiles(t, false)
			return ends{New(r, r), New(w, w), func() { w.Close() }}
		}, false},
	}
	for _, tt := range tests {
		for _, try := range []bool{false, true} {
			name := tt.name + "/write"
			if try {
				name = tt.name + "/trywrite"
			}
			t.Run(name, func(t *testing.T) {
				e := tt.make(t)
				if e.w.Nonblocking() != tt.fast {
					t.Fatalf("Nonblocking() = %v, want %v", e.w.Nonblocking(), tt.fast)
				}
				if try && !tt.fast {
					if n := e.w.TryWrite(data); n != 0 {
						t.Fatalf("TryWrite on a blocking descriptor wrote %d", n)
					}
					return
				}
				go func() {
					defer e.closeWrite()
					p := data
					for len(p) > 0 {
						k := min(len(p), 1+rng.IntN(100<<10))
						if try {
							n := e.w.TryWrite(p[:k])
							p = p[n:]
							if n == 0 {
								time.Sleep(100 * time.Microsecond)
							}
							continue
						}
						n, err := e.w.Write(p[:k])
						if err != nil || n != k {
							t.Errorf("Write = %d, %v; want %d", n, err, k)
							return
						}
						p = p[n:]
					}
				}()
				var got bytes.Buffer
				buf := make([]byte, 64<<10)
				deadline := time.Now().Add(20 * time.Second)
				for time.Now().Before(deadline) {
					n, err := e.r.Read(buf)
					got.Write(buf[:n])
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("Read: %v", err)
					}
				}
				if !bytes.Equal(got.Bytes(), data) {
					t.Fatalf("got %d bytes, want %d, equal %v", got.Len(), len(data), bytes.Equal(got.Bytes(), data))
				}
			})
		}
	}
}

// TestDeadlinesAndClose: a deadline or a Close ends a waiting Read or
// Write with the error the conn or file would give.
func TestDeadlinesAndClose(t *testing.T) {
	t.Run("socket read deadline", func(t *testing.T) {
		a, _ := tcpPair(t)
		f := New(a, a)
		a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := f.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read = %v, want a deadline error", err)
		}
	})
	t.Run("socket close", func(t *testing.T) {
		a, _ := tcpPair(t)
		f := New(a, a)
		time.AfterFunc(20*time.Millisecond, func() { a.Close() })
		if _, err := f.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read = %v, want net.ErrClosed", err)
		}
	})
	t.Run("socket peer reset", func(t *testing.T) {
		a, b := tcpPair(t)
		b.(*net.TCPConn).SetLinger(0)
		b.Close()
		f := New(a, a)
		_, err := f.Read(make([]byte, 10))
		if !errors.Is(err, syscall.ECONNRESET) && err != io.EOF {
			t.Fatalf("Read = %v, want ECONNRESET", err)
		}
	})
	t.Run("pipe write deadline when full", func(t *testing.T) {
		_, w := pipeFiles(t, true)
		f := New(w, w)
		w.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := f.Write(make([]byte, 4<<20))
		if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 {
			t.Fatalf("Write = %d, %v; want a short count and a deadline error", n, err)
		}
		if k := f.TryWrite([]byte{1}); k != 0 {
			t.Fatalf("TryWrite to a full pipe wrote %d", k)
		}
	})
	t.Run("file close", func(t *testing.T) {
		r, _ := pipeFiles(t, true)
		f := New(r, r)
		time.AfterFunc(20*time.Millisecond, func() { r.Close() })
		if _, err := f.Read(make([]byte, 10)); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read = %v, want os.ErrClosed", err)
		}
	})
}

// TryRead takes what is there and never waits: nothing there, a blocking
// descriptor, an ended stream and a closed descriptor all give 0, and the
// next Read tells why.
func TestTryRead(t *testing.T) {
	t.Run("socket", func(t *testing.T) {
		a, b := tcpPair(t)
		f := New(b, b)
		buf := make([]byte, 64)
		start := time.Now()
		if n := f.TryRead(buf); n != 0 {
			t.Fatalf("TryRead with nothing sent = %d", n)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("TryRead waited %v", d)
		}
		if _, err := a.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		var got []byte
		for len(got) < 5 && time.Now().Before(deadline) {
			got = append(got, buf[:f.TryRead(buf)]...)
		}
		if string(got) != "hello" {
			t.Fatalf("TryRead got %q", got)
		}
		a.Close()
		waitUntilEOF := time.Now().Add(5 * time.Second)
		for f.TryRead(buf) != 0 && time.Now().Before(waitUntilEOF) {
		}
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := f.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("Read after the peer closed = %d, %v; want EOF", n, err)
		}
		b.Close()
		if n := f.TryRead(buf); n != 0 {
			t.Fatalf("TryRead after Close = %d", n)
		}
	})
	t.Run("blocking pipe", func(t *testing.T) {
		r, w := pipeFiles(t, false)
		f := New(r, r)
		if _, err := w.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if n := f.TryRead(make([]byte, 8)); n != 0 {
			t.Fatalf("TryRead on a blocking descriptor = %d; it must not read", n)
		}
	})
}
