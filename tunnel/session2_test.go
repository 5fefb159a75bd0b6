package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOutage cuts the cable for 5 s in the middle of transfers: the link
// goes down, the streams wait, and everything arrives intact afterwards.
func TestOutage(t *testing.T) {
	t.Parallel()
	p := newPair(t, linkParams{rate: 200_000}, linkParams{rate: 200_000},
		Config{Baud: 2_000_000}, Config{Baud: 2_000_000, Permit: []string{"echo:7"}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := roundTrip(ctx, p.a, 256<<10, uint64(i)); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	p.cable.down.Store(true)
	time.Sleep(5 * time.Second)
	if p.a.Up() {
		t.Error("link still up after 5 s without a frame")
	}
	p.cable.down.Store(false)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !p.a.Up() || !p.b.Up() {
		t.Error("link not up again after the outage")
	}
}

// TestMaxOutage: streams are reset when the outage outlasts MaxOutage, and
// the link then starts a new session that works.
func TestMaxOutage(t *testing.T) {
	t.Parallel()
	p := newPair(t, linkParams{}, linkParams{},
		Config{MaxOutage: time.Second}, Config{MaxOutage: time.Second, Permit: []string{"echo:7"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	st, err := p.a.OpenStream(ctx, "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	p.cable.down.Store(true)
	_, err = io.Copy(io.Discard, st)
	if !errors.Is(err, ErrOutage) {
		t.Errorf("read during a long outage: %v, want ErrOutage", err)
	}
	p.cable.down.Store(false)
	// A stream opened before the link is back would itself wait, and with
	// a MaxOutage as short as this one's (1 s, the HELLO period while
	// down) it could outlast it on a loaded machine: open once the link
	// is up again.
	end := time.Now().Add(10 * time.Second)
	for !p.a.Up() || !p.b.Up() {
		if time.Now().After(end) {
			t.Fatal("link not up within 10 s of the outage's end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := roundTrip(ctx, p.a, 10_000, 1); err != nil {
		t.Errorf("after the outage: %v", err)
	}
}

// crash ends s as a killed process does: without telling the far side.
func crash(s *Session) {
	s.mu.Lock()
	s.state = stateDown
	s.mu.Unlock()
	s.Close()
}

// TestPeerRestart: the far side is replaced by a new process; the near
// side's streams fail with ErrPeerRestarted and new streams work.
func TestPeerRestart(t *testing.T) {
	t.Parallel()
	p := newPair(t, linkParams{}, linkParams{}, Config{}, Config{Permit: []string{"echo:7"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	st, err := p.a.OpenStream(ctx, "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	crash(p.b)
	b2 := p.session(t, 1, Config{Permit: []string{"echo:7"}})
	go echo(ctx, b2)
	_, err = io.Copy(io.Discard, st)
	if !errors.Is(err, ErrPeerRestarted) {
		t.Errorf("read after the peer restarted: %v, want ErrPeerRestarted", err)
	}
	if err := roundTrip(ctx, p.a, 100_000, 2); err != nil {
		t.Errorf("after the restart: %v", err)
	}
}

// TestPeerClose: the far side is stopped (SIGTERM): its streams fail on the
// near side at once, with the reason, not once the link is declared down.
func TestPeerClose(t *testing.T) {
	t.Parallel()
	p := newPair(t, linkParams{}, linkParams{}, Config{}, Config{Permit: []string{"echo:7"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	var sts []*Stream
	for range 3 {
		st, err := p.a.OpenStream(ctx, "echo:7")
		if err != nil {
			t.Fatal(err)
		}
		sts = append(sts, st)
	}
	go sts[0].Write(make([]byte, 1<<20)) // one busy, as a bulk transfer is
	start := time.Now()
	p.b.Close()
	if d := time.Since(start); d > closeGrace {
		t.Errorf("Close took %v", d)
	}
	for i, st := range sts {
		st.SetReadDeadline(time.Now().Add(time.Second)) // well before the link could be declared down
		_, err := io.Copy(io.Discard, st)
		if err == nil || !strings.Contains(err.Error(), "far side is shutting down") {
			t.Errorf("stream %d: read ended with %v, want the far side's shutdown", i, err)
		}
	}
}

// TestStartedApart: the near side runs alone for a while, then the far
// side starts.
func TestStartedApart(t *testing.T) {
	t.Parallel()
	c := newMemCable(linkParams{}, linkParams{})
	t.Cleanup(c.Close)
	p := &pair{cable: c}
	p.a = p.session(t, 0, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- roundTrip(ctx, p.a, 50_000, 3) }()
	time.Sleep(2 * time.Second)
	p.b = p.session(t, 1, Config{Permit: []string{"echo:7"}})
	go echo(ctx, p.b)
	if err := <-errc; err != nil {
		t.Error(err)
	}
}

// TestRefused: a target outside the far side's --permit list is refused
// with ErrNotPermitted, and the far side announced what it permits.
func TestRefused(t *testing.T) {
	t.Parallel()
	p := newPair(t, linkParams{}, linkParams{}, Config{}, Config{Permit: []string{"10.0.0.5:22"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	_, err := p.a.OpenStream(ctx, "10.0.0.6:22")
	if !errors.Is(err, ErrNotPermitted) {
		t.Errorf("open of a target not permitted: %v, want ErrNotPermitted", err)
	}
	permits, err := p.a.FarPermits(ctx)
	if err != nil || len(permits) != 1 || permits[0] != "10.0.0.5:22" {
		t.Errorf("FarPermits = %v, %v; want [10.0.0.5:22]", permits, err)
	}
	if _, err := p.a.OpenStream(ctx, "10.0.0.5:22"); err != nil {
		t.Errorf("open of the permitted target: %v", err)
	}
}

// TestManyStreams: 1024 streams open at once, each echoing its data.
func TestManyStreams(t *testing.T) {
	t.Parallel()
	p := newPair(t, linkParams{}, linkParams{}, Config{}, Config{Permit: []string{"any"}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	const n = 1024
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	opened := make(chan struct{}, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := p.a.OpenStream(ctx, "echo:7")
			if err != nil {
				errs <- err
				opened <- struct{}{}
				return
			}
			defer st.Close()
			opened <- struct{}{}
			<-start
			msg := []byte(fmt.Sprintf("stream %d says hello", i))
			if _, err := st.Write(msg); err != nil {
				errs <- err
				return
			}
			st.CloseWrite()
			got, err := io.ReadAll(st)
			if err != nil || string(got) != string(msg) {
				errs <- fmt.Errorf("stream %d: got %q, %v", i, got, err)
			}
		}()
	}
	for range n {
		<-opened
	}
	if got := p.a.Stats().Streams; got != n {
		t.Errorf("%d streams open at once, want %d", got, n)
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStalledReader: a stream nobody reads holds its own window and no
// more; another stream keeps flowing.
func TestStalledReader(t *testing.T) {
	t.Parallel()
	p := newPair(t, linkParams{}, linkParams{}, Config{}, Config{Permit: []string{"any"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stalled, err := p.a.OpenStream(ctx, "sink:1")
	if err != nil {
		t.Fatal(err)
	}
	far, _ := p.b.AcceptStream(ctx) // never read
	_ = far
	written := make(chan int64, 1)
	go func() {
		stalled.SetWriteDeadline(time.Now().Add(3 * time.Second))
		n, _ := io.Copy(stalled, zeroReader{})
		written <- n
	}()
	go echo(ctx, p.b)
	if err := roundTrip(ctx, p.a, 200_000, 4); err != nil {
		t.Errorf("stream next to a stalled one: %v", err)
	}
	n := <-written
	if n < streamWindow || n > streamWindow+sendBufMax {
		t.Errorf("stalled stream took %d bytes; want its window (%d) plus its send buffer (%d)", n, streamWindow, sendBufMax)
	}
}

type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// TestStreamDeadlines: Read and Write honour deadlines, and a deadline can
// be moved or cleared.
func TestStreamDeadlines(t *testing.T) {
	t.Parallel()
	p := newPair(t, linkParams{}, linkParams{}, Config{}, Config{Permit: []string{"any"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.a.OpenStream(ctx, "x:1")
	if err != nil {
		t.Fatal(err)
	}
	far, err := p.b.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	t0 := time.Now()
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("deadline of 50 ms took %v", d)
	}
	st.SetReadDeadline(time.Time{})
	far.Write([]byte("x"))
	b := make([]byte, 1)
	if n, err := st.Read(b); n != 1 || err != nil {
		t.Errorf("read after clearing the deadline: %d, %v", n, err)
	}
	// A deadline set while Read blocks wakes it.
	go func() {
		time.Sleep(50 * time.Millisecond)
		st.SetReadDeadline(time.Now())
	}()
	if _, err := st.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read with a deadline set meanwhile: %v", err)
	}
	// Half-close: the far side reads EOF and can still write.
	st.CloseWrite()
	if _, err := far.Read(b); err != io.EOF {
		t.Errorf("far read after CloseWrite: %v, want EOF", err)
	}
	if _, err := st.Write(b); !errors.Is(err, ErrWriteClosed) {
		t.Errorf("write after CloseWrite: %v", err)
	}
	far.Write([]byte("y"))
	st.SetReadDeadline(time.Time{})
	if n, err := st.Read(b); n != 1 || b[0] != 'y' || err != nil {
		t.Errorf("read after own CloseWrite: %d %q %v", n, b, err)
	}
	// Reset reaches the far side with its reason.
	far.Reset("test says stop")
	var re *ResetError
	if _, err := st.Read(b); !errors.As(err, &re) || re.Reason != "test says stop" {
		t.Errorf("read after far reset: %v", err)
	}
}

// TestSlowLine: the line is 10% slower than --baud says. Pacing adapts,
// so the queue in front of the line (the round trip) stays short.
func TestSlowLine(t *testing.T) {
	t.Parallel()
	slow := linkParams{rate: 18_000} // --baud 200000 says 20000 B/s
	p := newPair(t, slow, slow, Config{Baud: 200_000}, Config{Baud: 200_000, Permit: []string{"echo:7"}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	if err := roundTrip(ctx, p.a, 150_000, 5); err != nil {
		t.Fatal(err)
	}
	st := p.a.Stats()
	limit := 4*p.a.frameTime(p.a.maxPayload) + 20*time.Millisecond
	// Unpaced, the queue would reach 10% of what was sent (15 kB, most of
	// a second); adapted, it stays within a few times the limit.
	if st.Pace > 0.97 || st.SRTT > 3*limit {
		t.Errorf("after 150 kB on a line 10%% slower than --baud: pace %.3f, srtt %v (limit %v)", st.Pace, st.SRTT, limit)
	}
	t.Logf("pace %.3f srtt %v", st.Pace, st.SRTT)
}

// TestInteractiveLatency: on a 115200 baud line busy with bulk data both
// ways, 1-byte echoes come back well within 60 ms: small writes go first,
// in short frames, and pacing keeps the queue in front of the line short.
func TestInteractiveLatency(t *testing.T) {
	t.Parallel()
	line := linkParams{rate: 11520}
	p := newPair(t, line, line, Config{Baud: 115200}, Config{Baud: 115200, Permit: []string{"any"}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	for range 2 { // bulk both ways: echoed data
		st, err := p.a.OpenStream(ctx, "bulk:1")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		go io.Copy(io.Discard, st)
		go io.Copy(st, zeroReader{})
	}
	st, err := p.a.OpenStream(ctx, "ping:1")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	var rtts []time.Duration
	b := make([]byte, 1)
	for i := range 100 {
		t0 := time.Now()
		st.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st, b); err != nil || b[0] != byte(i) {
			t.Fatalf("echo %d: %v %v", i, b, err)
		}
		rtts = append(rtts, time.Since(t0))
		time.Sleep(time.Duration(3+i%5) * time.Millisecond)
	}
	slices.Sort(rtts)
	p50, p99 := rtts[50], rtts[98]
	st0 := p.a.Stats()
	t.Logf("1-byte echo under bulk both ways at 115200: p50 %v p99 %v max %v; bulk sent %d bytes", p50, p99, rtts[99], st0.BytesSent)
	if p99 > 60*time.Millisecond {
		t.Errorf("p99 %v, want under 60 ms", p99)
	}
}

// TestDeviceReopen: the device fails (a USB adapter unplugged) in the
// middle of a transfer; the session opens it again and the transfer
// completes intact.
func TestDeviceReopen(t *testing.T) {
	t.Parallel()
	c := newMemCable(linkParams{rate: 100_000}, linkParams{rate: 100_000})
	t.Cleanup(c.Close)
	p := &pair{cable: c}
	dev := &plug{c: c}
	p.a = dev.session(t, Config{Baud: 1_000_000})
	p.b = p.session(t, 1, Config{Baud: 1_000_000, Permit: []string{"echo:7"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	errc := make(chan error, 1)
	go func() { errc <- roundTrip(ctx, p.a, 200_000, 6) }()
	time.Sleep(700 * time.Millisecond)
	dev.unplug(false)
	if err := <-errc; err != nil {
		t.Error(err)
	}
	dev.mu.Lock()
	defer dev.mu.Unlock()
	if dev.opens < 2 {
		t.Errorf("device opened %d times, want a reopen", dev.opens)
	}
}

// plug is side 0's device on a cable: unplug fails the line in use and,
// for a device that is gone, every open after it.
type plug struct {
	c     *memCable
	mu    sync.Mutex
	cur   *memLine
	opens int
	gone  bool
}

func (d *plug) open(context.Context) (Line, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gone {
		return nil, errors.New("no such device")
	}
	d.opens++
	d.cur = d.c.attach(0)
	return d.cur, nil
}

func (d *plug) unplug(gone bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gone = gone
	d.cur.fail(io.ErrUnexpectedEOF)
}

// session starts side 0's session on d.
func (d *plug) session(t *testing.T, cfg Config) *Session {
	t.Helper()
	cfg.Open, cfg.Logger = d.open, testLogger(t)
	s, err := NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPayloadCleanRun: frames stay at the largest size however long the
// line stays clean, and shrink within a few batches when it turns noisy.
// (The error estimate once fell without bound: after about a thousand
// clean frames the size overflowed and frames dropped to 48 bytes.)
func TestPayloadCleanRun(t *testing.T) {
	for _, baud := range []int{115200, 460800, 921600} {
		s := &Session{maxPayload: maxPayloadFor(baud)}
		s.payload = s.maxPayload / 4
		s.byteErr = frameOverhead / float64(s.maxPayload*s.maxPayload/16)
		f := &outFrame{body: make([]byte, s.maxPayload)}
		for i := range 100_000 {
			s.outcome(f, false)
			if i > 100 && s.payload != s.maxPayload {
				t.Fatalf("baud %d: after %d clean frames the body limit is %d, want %d", baud, i+1, s.payload, s.maxPayload)
			}
		}
		// Then one frame in four lost: a byte error rate near 4e-4,
		// best frames near sqrt(21/4e-4) = 230 bytes or less.
		for i := range 4 * 16 {
			s.outcome(f, i%4 == 0)
		}
		if s.payload > 300 {
			t.Errorf("baud %d: after 4 batches with a quarter of the frames lost the body limit is %d, want at most 300", baud, s.payload)
		}
	}
}

// An adapter unplugged for good (the device cannot be opened again) ends
// the streams after --max-outage, as a cable that is out does.
func TestSessionDeviceGoneMaxOutage(t *testing.T) {
	c := newMemCable(linkParams{}, linkParams{})
	t.Cleanup(c.Close)
	p := &pair{cable: c}
	dev := &plug{c: c}
	a := dev.session(t, Config{Baud: 4_000_000, MaxOutage: time.Second})
	p.a = a
	p.b = p.session(t, 1, Config{MaxOutage: time.Second, Permit: []string{"echo:7"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	st, err := a.OpenStream(ctx, "echo:7")
	if err != nil {
		t.Fatal(err)
	}
	dev.unplug(true)
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, st); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrOutage) {
			t.Errorf("stream ended with %v, want %v", err, ErrOutage)
		}
	case <-time.After(8 * time.Second):
		t.Fatalf("stream still open 8 s after the device went, with MaxOutage 1 s (up %v)", a.Up())
	}
	if a.Up() {
		t.Error("the session still says the link is up")
	}
}

// A configuration the tunnel cannot carry is refused at the start, with
// what to do, not left to stall the session.
func TestConfigRefused(t *testing.T) {
	long := []string{"echo:7"}
	for i := range 300 {
		long = append(long, fmt.Sprintf("host-%03d.example.internal:22", i))
	}
	open := func(context.Context) (Line, error) { return nil, errors.New("unused") }
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"permit list too long", Config{Open: open, Permit: long}, "the --permit list is too long: 301 targets"},
		{"permit without port", Config{Open: open, Permit: []string{"host"}}, `--permit "host"`},
		{"baud", Config{Open: open, Baud: 10}, "baud rate 10 out of range"},
		{"no open", Config{}, "Config.Open is required"},
		{"-R twice", Config{Open: open, Remote: []Forward{{"127.0.0.1:9000", "a:1"}, {"127.0.0.1:9000", "b:2"}}}, "-R 127.0.0.1:9000 given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSession(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to say %q", err, tt.want)
			}
		})
	}
	// The longest list that fits still works end to end.
	var fits []string
	for i := 0; len(infoMsg(append(fits, "echo:7"))) <= maxBody; i++ {
		fits = append(fits, fmt.Sprintf("host-%03d.example.internal:22", i))
	}
	fits = append(fits[:len(fits)-1], "echo:7")
	p := newPair(t, linkParams{}, linkParams{}, Config{}, Config{Permit: fits})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	if err := roundTrip(ctx, p.a, 1000, 1); err != nil {
		t.Fatalf("with %d permits: %v", len(fits), err)
	}
}

// A frame taken for lost that the far side then reports received (SACK) is
// not sent again.
func TestSackedLostNotResent(t *testing.T) {
	s := &Session{state: stateUp, window: maxWindow, rto: time.Second, lastRecv: time.Now(), deadAfter: time.Hour,
		line: nopLine{}, maxPayload: 256, payload: 256}
	now := time.Now()
	for seq := range uint16(3) {
		s.inflight[seq] = &outFrame{seq: seq, body: []byte{byte(seq)}, sentAt: now, order: uint64(seq + 1), tries: 1}
	}
	s.nextSeq = 3
	s.inflight[1].lost = true // taken for lost
	s.handleAck(0, 0b11, now) // 0 not yet; 1 and 2 arrived
	var sent []uint16
	for range 3 {
		f, _, _ := s.nextFrame(now)
		if f == nil {
			break
		}
		if f.typ == frameData {
			sent = append(sent, f.seq)
		}
	}
	if !slices.Equal(sent, []uint16{0}) {
		t.Errorf("sent frames %v again, want only 0 (1 and 2 arrived)", sent)
	}
}

type nopLine struct{}

func (nopLine) Read([]byte) (int, error)    { return 0, io.EOF }
func (nopLine) Write(b []byte) (int, error) { return len(b), nil }
func (nopLine) Close() error                { return nil }
