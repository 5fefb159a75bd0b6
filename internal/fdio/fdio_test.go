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
