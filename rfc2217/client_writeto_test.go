package rfc2217

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sertun/sertun/serialdev"
)

var errSinkBroke = errors.New("test sink broke")

// recSink records what WriteTo gives it, through TryWrite and Write, in
// the order it arrives, and checks that the two never run at once.
type recSink struct {
	// take says how much of n offered bytes TryWrite takes.
	take func(n int) int
	// gate, when not nil, holds the first Write until it is closed;
	// TryWrite takes nothing until then.
	gate chan struct{}
	// failAt > 0: Write takes bytes up to failAt in all, then fails with
	// fail (nil: returns a short count and no error).
	failAt int
	fail   error

	active  atomic.Int32 // TryWrite and Write calls in progress
	overlap atomic.Bool  // a TryWrite and a Write ran at once

	mu      sync.Mutex
	got     []byte
	tries   int // TryWrite calls
	tried   int // bytes TryWrite took
	writes  int // Write calls
	written int // bytes Write took
	want    int
	full    chan struct{} // closed once got holds want bytes
}

func newRecSink(want int, take func(int) int) *recSink {
	return &recSink{take: take, want: want, full: make(chan struct{})}
}

func (s *recSink) enter() {
	if s.active.Add(1) > 1 {
		s.overlap.Store(true)
	}
}

func (s *recSink) leave() { s.active.Add(-1) }

// record appends p; s.mu held.
func (s *recSink) record(p []byte) {
	before := len(s.got)
	s.got = append(s.got, p...)
	if before < s.want && len(s.got) >= s.want {
		close(s.full)
	}
}

func (s *recSink) TryWrite(p []byte) int {
	s.enter()
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tries++
	n := 0
	if s.gate == nil || chanClosed(s.gate) {
		n = s.take(len(p))
	}
	if n < 0 || n > len(p) {
		panic("recSink: take out of range")
	}
	s.record(p[:n])
	s.tried += n
	return n
}

func (s *recSink) Write(p []byte) (int, error) {
	s.enter()
	defer s.leave()
	s.mu.Lock()
	s.writes++
	first := s.writes == 1
	s.mu.Unlock()
	if first && s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(p)
	if s.failAt > 0 && len(s.got)+n > s.failAt {
		n = max(0, s.failAt-len(s.got))
	}
	s.record(p[:n])
	s.written += n
	if n < len(p) {
		return n, s.fail
	}
	return n, nil
}

func (s *recSink) snapshot() (got []byte, tries, tried, writes, written int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.got), s.tries, s.tried, s.writes, s.written
}

// plainWriter hides TryWrite: WriteTo sees an io.Writer only.
type plainWriter struct{ s *recSink }

func (w plainWriter) Write(p []byte) (int, error) { return w.s.Write(p) }

func takeAll(n int) int { return n }
func takeNone(int) int  { return 0 }
func takeRandom(seed uint64) func(int) int {
	r := rand.New(rand.NewPCG(seed, seed))
	return func(n int) int { return r.IntN(n + 1) }
}

type writeToResult struct {
	n   int64
	err error
}

// startWriteTo runs c.WriteTo(w) and, for a TryWriter, waits until WriteTo
// has taken it on, so that data sent afterwards may go the direct way.
func startWriteTo(t *testing.T, c *Client, w io.Writer) <-chan writeToResult {
	t.Helper()
	res := make(chan writeToResult, 1)
	go func() {
		n, err := c.WriteTo(w)
		res <- writeToResult{n, err}
	}()
	if _, ok := w.(TryWriter); ok {
		waitUntil(t, 2*time.Second, "WriteTo to take its writer", func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.sink != nil
		})
	}
	return res
}

func waitResult(t *testing.T, res <-chan writeToResult, d time.Duration) writeToResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(d):
		t.Fatalf("WriteTo did not return within %v", d)
		return writeToResult{}
	}
}

// sendPieces sends data from the fake server in random-sized pieces, each
// escaped (IAC doubled) on its own, and closes done when all went.
func sendPieces(s *fakeServer, data []byte, seed uint64) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := rand.New(rand.NewPCG(seed, 1))
		for len(data) > 0 {
			n := min(len(data), 1+r.IntN(32<<10))
			s.sendData(data[:n])
			data = data[n:]
		}
	}()
	return done
}

func waitChan(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

func buffered(c *Client) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.rx) - c.rxOff
}

// wireData is what the server sends in the WriteTo tests: every byte value
// and runs of IAC, then 1 MiB of random bytes.
func wireData(seed byte) []byte { return append(allBytes(), randBytes(1<<20, seed)...) }

// share is what a test expects of a byte count: some, none, or either.
type share int8

const (
	shareAny share = iota
	shareSome
	shareNone
)

func (w share) ok(n int) bool { return w == shareAny || (w == shareSome) == (n > 0) }

func (w share) String() string { return [...]string{"any", "some", "none"}[w] }

// serverHangsUp ends the fake server's side of the connection with a FIN
// (a full close could reset it over unread bytes of ours).
func serverHangsUp(t *testing.T, s *fakeServer) {
	t.Helper()
	if err := s.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// Everything the server sends reaches w once and in order, whichever way
// it goes (the reader's TryWrite or WriteTo's Write), and WriteTo returns
// the connection's end after the data.
func TestClientWriteTo(t *testing.T) {
	tests := []struct {
		name  string
		plain bool            // w is an io.Writer only
		take  func(n int) int // TryWrite's share
		block bool            // the first Write waits until data piled up behind it
		// the ways data must (yes) or must not (no) have gone
		direct, written share
	}{
		{name: "plain writer", plain: true, direct: shareNone, written: shareSome},
		{name: "try takes all", take: takeAll, direct: shareSome, written: shareNone},
		{name: "try takes none", take: takeNone, direct: shareNone, written: shareSome},
		{name: "try takes random", take: takeRandom(1), direct: shareSome, written: shareSome},
		{name: "write blocks, try takes none", take: takeNone, block: true, direct: shareNone, written: shareSome},
		// WriteTo drains the pile with Write, and the reader does not
		// interleave TryWrites with it: any share for TryWrite.
		{name: "write blocks, try takes random", take: takeRandom(2), block: true, written: shareSome},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := dialFake(t, "tcp", serverPolicy{})
			sent := wireData(byte(20 + i))
			sink := newRecSink(len(sent), tt.take)
			var w io.Writer = sink
			if tt.plain {
				w = plainWriter{sink}
			}
			if tt.block {
				sink.gate = make(chan struct{})
				t.Cleanup(func() {
					select {
					case <-sink.gate:
					default:
						close(sink.gate)
					}
				})
			}
			res := startWriteTo(t, c, w)

			rest := sent
			if tt.block {
				// TryWrite takes nothing yet: WriteTo's Write gets
				// the first piece and blocks.
				first := 4000
				s.sendData(sent[:first])
				rest = sent[first:]
				waitUntil(t, 5*time.Second, "the first Write", func() bool {
					_, _, _, writes, _ := sink.snapshot()
					return writes == 1
				})
				_, tries, _, _, _ := sink.snapshot()
				sending := sendPieces(s, rest, uint64(i))
				// The rest piles up in the client meanwhile: the
				// reader must not hand it to TryWrite while Write
				// has data before it.
				waitUntil(t, 10*time.Second, "data to pile up", func() bool { return buffered(c) >= 512<<10 })
				if _, now, _, _, _ := sink.snapshot(); now != tries {
					t.Errorf("TryWrite called %d times while Write was busy", now-tries)
				}
				close(sink.gate)
				waitChan(t, sending, 20*time.Second, "the server to send")
			} else {
				sendPieces(s, rest, uint64(i))
			}
			waitChan(t, sink.full, 20*time.Second, "all the data at w")

			// The server goes: WriteTo ends with the connection's error.
			serverHangsUp(t, s)
			r := waitResult(t, res, 5*time.Second)
			if !errors.Is(r.err, io.EOF) {
				t.Errorf("WriteTo returned %v, want an error wrapping io.EOF", r.err)
			}
			got, tries, tried, writes, written := sink.snapshot()
			t.Logf("TryWrite %d calls %d bytes, Write %d calls %d bytes", tries, tried, writes, written)
			if !bytes.Equal(got, sent) {
				n := 0
				for n < min(len(got), len(sent)) && got[n] == sent[n] {
					n++
				}
				t.Fatalf("w got %d bytes, the server sent %d; they differ from byte %d", len(got), len(sent), n)
			}
			if sink.overlap.Load() {
				t.Error("TryWrite and Write ran at the same time")
			}
			if tt.plain && r.n != int64(len(sent)) {
				t.Errorf("WriteTo returned n = %d, wrote %d", r.n, len(sent))
			}
			if tt.plain && tries != 0 {
				t.Errorf("TryWrite called %d times on a plain writer", tries)
			}
			if !tt.direct.ok(tried) {
				t.Errorf("TryWrite took %d bytes; want %v", tried, tt.direct)
			}
			if !tt.written.ok(written) {
				t.Errorf("Write took %d bytes; want %v", written, tt.written)
			}
			if tt.take != nil && tries == 0 {
				t.Error("TryWrite never offered anything")
			}
			if b := buffered(c); b != 0 {
				t.Errorf("%d bytes left in the client", b)
			}
		})
	}
}

// WriteTo returns w's error as soon as w fails, with the count w took.
func TestClientWriteToWriterFails(t *testing.T) {
	const failAt = 100_000
	tests := []struct {
		name  string
		plain bool
		fail  error // Write's error; nil: a short count alone
		want  error
	}{
		{"plain writer error", true, errSinkBroke, errSinkBroke},
		{"try writer error", false, errSinkBroke, errSinkBroke},
		{"short write", false, nil, io.ErrShortWrite},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := dialFake(t, "tcp", serverPolicy{})
			sent := randBytes(1<<20, byte(40+i))
			sink := newRecSink(len(sent), takeNone)
			sink.failAt, sink.fail = failAt, tt.fail
			var w io.Writer = sink
			if tt.plain {
				w = plainWriter{sink}
			}
			res := startWriteTo(t, c, w)
			sendPieces(s, sent, uint64(i))
			r := waitResult(t, res, 10*time.Second)
			if !errors.Is(r.err, tt.want) {
				t.Errorf("WriteTo returned %v, want %v", r.err, tt.want)
			}
			if r.n != failAt {
				t.Errorf("WriteTo returned n = %d, w took %d", r.n, failAt)
			}
			if got, _, _, _, _ := sink.snapshot(); !bytes.Equal(got, sent[:failAt]) {
				t.Errorf("w took %d bytes, not the first %d sent", len(got), failAt)
			}
			// WriteTo has let go of w: the reader hands it nothing more.
			time.Sleep(20 * time.Millisecond)
			_, tries, _, _, _ := sink.snapshot()
			time.Sleep(50 * time.Millisecond)
			if _, now, _, _, _ := sink.snapshot(); now != tries {
				t.Errorf("TryWrite called %d times after WriteTo returned", now-tries)
			}
		})
	}
}

// WriteTo ends, promptly and with the matching error, on Close, on the read
// deadline and when the server goes, also while nothing arrives.
func TestClientWriteToEnds(t *testing.T) {
	tests := []struct {
		name string
		end  func(t *testing.T, s *fakeServer, c *Client)
		want error
	}{
		{"close", func(_ *testing.T, _ *fakeServer, c *Client) { c.Close() }, os.ErrClosed},
		{"deadline", func(_ *testing.T, _ *fakeServer, c *Client) { c.SetReadDeadline(time.Unix(1, 0)) }, os.ErrDeadlineExceeded},
		{"server gone", func(t *testing.T, s *fakeServer, _ *Client) { serverHangsUp(t, s) }, io.EOF},
	}
	for _, tt := range tests {
		for _, plain := range []bool{false, true} {
			name := tt.name + "/try"
			if plain {
				name = tt.name + "/plain"
			}
			t.Run(name, func(t *testing.T) {
				s, c := dialFake(t, "tcp", serverPolicy{})
				sink := newRecSink(3, takeRandom(3))
				var w io.Writer = sink
				if plain {
					w = plainWriter{sink}
				}
				res := startWriteTo(t, c, w)
				s.sendData([]byte{1, IAC, 2})
				waitChan(t, sink.full, 5*time.Second, "the data")
				time.Sleep(10 * time.Millisecond) // WriteTo waits for more
				start := time.Now()
				tt.end(t, s, c)
				r := waitResult(t, res, 2*time.Second)
				if !errors.Is(r.err, tt.want) {
					t.Errorf("WriteTo returned %v, want %v", r.err, tt.want)
				}
				if d := time.Since(start); d > time.Second {
					t.Errorf("WriteTo took %v to return", d)
				}
				if got, _, _, _, _ := sink.snapshot(); !bytes.Equal(got, []byte{1, IAC, 2}) {
					t.Errorf("w got %x", got)
				}
			})
		}
	}
}

// A purge while the reader is in TryWrite: what TryWrite took is not
// taken off the emptied buffer (that would corrupt it), the data sent after
// the purge arrives whole, and nothing from before the purge follows it.
func TestClientWriteToPurge(t *testing.T) {
	s, c := dialFake(t, "tcp", serverPolicy{})
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	sink := newRecSink(0, nil)
	first := true
	sink.take = func(n int) int { // under sink.mu, from the reader only
		if first {
			first = false
			close(entered)
			<-release
		}
		return n
	}
	res := startWriteTo(t, c, sink)
	before := randBytes(48<<10, 50) // fits in the socket buffers
	sending := sendPieces(s, before, 50)
	waitChan(t, entered, 5*time.Second, "the first TryWrite")
	waitChan(t, sending, 5*time.Second, "the server to send")

	c.mu.Lock()
	gen := c.rxGen
	c.mu.Unlock()
	purged := make(chan error, 1)
	go func() { purged <- c.Purge(serialdev.PurgeReceive) }()
	waitUntil(t, 2*time.Second, "the purge to start", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.rxGen != gen
	})
	// The reader is still in TryWrite: the PURGE answer waits behind it.
	once.Do(func() { close(release) })
	select {
	case err := <-purged:
		if err != nil {
			t.Fatalf("Purge: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Purge did not return")
	}
	c.mu.Lock()
	off, n := c.rxOff, len(c.rx)
	c.mu.Unlock()
	if off < 0 || off > n {
		t.Fatalf("receive buffer broken after the purge: offset %d, length %d", off, n)
	}

	after := wireData(51)
	sink.mu.Lock()
	sink.want = len(sink.got) + len(after)
	sink.mu.Unlock()
	sendPieces(s, after, 51)
	waitUntil(t, 20*time.Second, "the data sent after the purge", func() bool {
		got, _, _, _, _ := sink.snapshot()
		return bytes.HasSuffix(got, after)
	})
	got, _, _, _, _ := sink.snapshot()
	head := got[:len(got)-len(after)]
	if !bytes.HasPrefix(before, head) {
		t.Errorf("before the post-purge data w got %d bytes that are not a head of what was sent before the purge", len(head))
	}
	if len(head) == 0 {
		t.Error("the TryWrite in progress during the purge delivered nothing")
	}
	serverHangsUp(t, s)
	if r := waitResult(t, res, 5*time.Second); !errors.Is(r.err, io.EOF) {
		t.Errorf("WriteTo returned %v, want io.EOF", r.err)
	}
}

// The client against this package's server on loop://: what it writes
// comes back through WriteTo whole, and Close ends WriteTo.
func TestClientWriteToWithServer(t *testing.T) {
	for _, tt := range []struct {
		name string
		take func(int) int
	}{{"try takes all", takeAll}, {"try takes random", takeRandom(4)}, {"try takes none", takeNone}} {
		t.Run(tt.name, func(t *testing.T) {
			addr := startLoopServer(t, Exclusive)
			c := dialTest(t, addr)
			data := wireData(60)
			sink := newRecSink(len(data), tt.take)
			res := startWriteTo(t, c, sink)
			go func() {
				c.SetWriteDeadline(time.Now().Add(20 * time.Second))
				if _, err := c.Write(data); err != nil {
					t.Errorf("Write: %v", err)
				}
			}()
			waitChan(t, sink.full, 20*time.Second, "the echo")
			c.Close()
			r := waitResult(t, res, 5*time.Second)
			if !errors.Is(r.err, os.ErrClosed) {
				t.Errorf("WriteTo after Close returned %v, want os.ErrClosed", r.err)
			}
			if got, _, _, _, _ := sink.snapshot(); !bytes.Equal(got, data) {
				t.Fatalf("echo of %d bytes came back as %d differing bytes", len(data), len(got))
			}
			if sink.overlap.Load() {
				t.Error("TryWrite and Write ran at the same time")
			}
		})
	}
}

func dialTest(t *testing.T, addr string) *Client {
	t.Helper()
	ctx := t.Context()
	c, err := Dial(ctx, addr, ClientConfig{Timeout: time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// WriteTo's count is what it wrote to w, the reader's TryWrites included
// (io.WriterTo; io.Copy returns it).
func TestClientWriteToCount(t *testing.T) {
	for _, tt := range []struct {
		name string
		take func(int) int
	}{{"try takes all", takeAll}, {"try takes random", takeRandom(5)}} {
		t.Run(tt.name, func(t *testing.T) {
			s, c := dialFake(t, "tcp", serverPolicy{})
			sent := randBytes(256<<10, 70)
			sink := newRecSink(len(sent), tt.take)
			res := startWriteTo(t, c, sink)
			sendPieces(s, sent, 70)
			waitChan(t, sink.full, 10*time.Second, "the data")
			serverHangsUp(t, s)
			r := waitResult(t, res, 5*time.Second)
			if r.n != int64(len(sent)) {
				t.Errorf("WriteTo returned n = %d; w took %d", r.n, len(sent))
			}
		})
	}
}

// TestClientWriteToWaitsForDelivery: WriteTo that ends (here on the read
// deadline) while the reader is handing data to TryWrite returns only once
// that is done, counts it, and the reader never touches w afterwards.
func TestClientWriteToWaitsForDelivery(t *testing.T) {
	s, c := dialFake(t, "tcp", serverPolicy{})
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	sink := newRecSink(0, nil)
	sink.take = func(n int) int { <-release; return n }
	res := startWriteTo(t, c, sink)
	s.sendData([]byte("x"))
	waitUntil(t, 2*time.Second, "a delivery", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.sinkBusy
	})
	c.SetReadDeadline(time.Unix(1, 0))
	select {
	case r := <-res:
		t.Fatalf("WriteTo returned (%d, %v) during a delivery", r.n, r.err)
	case <-time.After(50 * time.Millisecond):
	}
	once.Do(func() { close(release) })
	r := waitResult(t, res, 2*time.Second)
	if !errors.Is(r.err, os.ErrDeadlineExceeded) || r.n != 1 {
		t.Errorf("WriteTo = %d, %v; want 1 and a deadline error", r.n, r.err)
	}
	c.SetReadDeadline(time.Time{})
	s.sendData([]byte("y"))
	time.Sleep(50 * time.Millisecond)
	if got, _, _, _, _ := sink.snapshot(); string(got) != "x" {
		t.Errorf("the sink got %q; want only what came before WriteTo returned", got)
	}
}

// A receive purge empties the buffer; a server that the client suspended
// because that buffer was full must be resumed, or it never sends again.
func TestClientPurgeResumesServer(t *testing.T) {
	s, c := dialFake(t, "tcp", serverPolicy{})
	sending := sendPieces(s, randBytes(rxHighWater+64<<10, 80), 80)
	waitChan(t, sending, 5*time.Second, "the server to send")
	s.waitFor(5*time.Second, "SUSPEND", func() bool { return s.suspended })
	if err := c.Purge(serialdev.PurgeReceive); err != nil {
		t.Fatal(err)
	}
	if b := buffered(c); b != 0 {
		t.Fatalf("%d bytes buffered after the purge", b)
	}
	s.waitFor(2*time.Second, "RESUME after the purge emptied the buffer", func() bool { return !s.suspended })
}
