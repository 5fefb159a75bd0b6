package serialdev

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"
)

// waitSignal reports whether StatusChanged delivers within d.
func waitSignal(p Port, d time.Duration) bool {
	select {
	case <-p.StatusChanged():
		return true
	case <-time.After(d):
		return false
	}
}

func TestLoopLines(t *testing.T) {
	type step struct {
		op     func(Port) error
		lines  Lines
		signal bool
	}
	dtr := func(on bool) func(Port) error { return func(p Port) error { return p.SetDTR(on) } }
	rts := func(on bool) func(Port) error { return func(p Port) error { return p.SetRTS(on) } }
	cases := []struct {
		name  string
		steps []step
	}{
		{"DTR drives DSR and DCD", []step{
			{dtr(true), DSR | DCD, true},
			{dtr(true), DSR | DCD, false},
			{dtr(false), 0, true},
		}},
		{"RTS drives CTS", []step{
			{rts(true), CTS, true},
			{rts(false), 0, true},
			{rts(false), 0, false},
		}},
		{"both", []step{
			{dtr(true), DSR | DCD, true},
			{rts(true), CTS | DSR | DCD, true},
			{dtr(false), CTS, true},
			{rts(false), 0, true},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := NewLoop()
			defer p.Close()
			for i, s := range c.steps {
				if err := s.op(p); err != nil {
					t.Fatal(err)
				}
				st, err := p.Status()
				if err != nil {
					t.Fatal(err)
				}
				if st.Lines != s.lines {
					t.Errorf("step %d: lines %04b, want %04b", i, st.Lines, s.lines)
				}
				if got := waitSignal(p, 10*time.Millisecond); got != s.signal {
					t.Errorf("step %d: signalled %v, want %v", i, got, s.signal)
				}
			}
		})
	}
}

func TestLoopBreaks(t *testing.T) {
	p := NewLoop()
	defer p.Close()
	seq := []struct {
		on     bool
		breaks uint64
		signal bool
	}{
		{false, 0, false},
		{true, 1, true},
		{true, 1, false}, // still the same break
		{false, 1, true},
		{true, 2, true},
		{false, 2, true},
	}
	for i, s := range seq {
		if err := p.SetBreak(s.on); err != nil {
			t.Fatal(err)
		}
		st, _ := p.Status()
		if st.Breaks != s.breaks {
			t.Errorf("step %d: %d breaks, want %d", i, st.Breaks, s.breaks)
		}
		if got := waitSignal(p, 10*time.Millisecond); got != s.signal {
			t.Errorf("step %d: signalled %v, want %v", i, got, s.signal)
		}
	}
}

func TestLoopDefaults(t *testing.T) {
	p := NewLoop()
	defer p.Close()
	if s, err := p.Settings(); err != nil || s != DefaultSettings() {
		t.Errorf("new loop: %v, %v; want %v", s, err, DefaultSettings())
	}
	if st, err := p.Status(); err != nil || st != (Status{}) {
		t.Errorf("new loop status: %+v, %v", st, err)
	}
}

func TestLoopWriteBlocksWhenFull(t *testing.T) {
	p := NewLoop()
	defer p.Close()
	data := bytes.Repeat([]byte{0xFF}, loopBufferSize+100)

	p.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := p.Write(data)
	if n != loopBufferSize || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the buffer: %d, %v; want %d and a timeout", n, err, loopBufferSize)
	}

	// Reading makes room: a blocked writer goes on.
	p.SetWriteDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() { _, err := p.Write(data[n:]); errc <- err }()
	readFull(t, p, data, 5*time.Second)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestLoopPurge(t *testing.T) {
	cases := []struct {
		which Purge
		left  string
	}{
		{PurgeReceive, ""},
		{PurgeBoth, ""},
		{PurgeTransmit, "stale"}, // written data is received at once: nothing in transit
	}
	for _, c := range cases {
		p := NewLoop()
		p.Write([]byte("stale"))
		if err := p.Purge(c.which); err != nil {
			t.Fatal(err)
		}
		p.Write([]byte("fresh"))
		readFull(t, p, []byte(c.left+"fresh"), time.Second)
		if err := p.Drain(); err != nil {
			t.Error(err)
		}
		p.Close()
	}
}

func TestLoopReadZero(t *testing.T) {
	p := NewLoop()
	defer p.Close()
	if n, err := p.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v", n, err)
	}
}
