package tunnel

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestPaceBelowLine: a line 0.7% slower than --baud says (a UART clock a
// little slow, a cable emulator short of CPU) under bulk data both ways.
// Pacing is open loop, so a sender at exactly --baud would pile the
// shortfall up in the device, in front of every keystroke, for as long as
// the transfer runs: 80 bytes more every second, too little for the round
// trip to show. What the device holds must stay what pacing itself leaves
// there: the rest of the frame on the line, the next one and the lead.
func TestPaceBelowLine(t *testing.T) {
	t.Parallel()
	slow := linkParams{rate: 11_440} // --baud 115200 says 11520 B/s
	p := newPair(t, slow, slow, Config{Baud: 115200}, Config{Baud: 115200, Permit: []string{"any"}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go echo(ctx, p.b)
	st, err := p.a.OpenStream(ctx, "bulk:1")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	go io.Copy(io.Discard, st)
	go io.Copy(st, zeroReader{})
	queued := func() int {
		w := p.cable.dirs[0]
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queue)
	}
	// Two frames and the memory line's own granularity (10 ms of line
	// time, 115 bytes). A sender at --baud has about 700 after 8 s.
	const bound = 2*196 + 115
	deadline := time.Now().Add(8 * time.Second)
	most := 0
	for i := 0; time.Now().Before(deadline); i++ {
		time.Sleep(10 * time.Millisecond)
		if i >= 300 { // after 3 s
			most = max(most, queued())
		}
	}
	sent := p.a.Stats().BytesSent
	t.Logf("most queued in front of the line after 3 s: %d bytes; stream data sent: %d bytes", most, sent)
	if most > bound {
		t.Errorf("%d bytes queued in front of a line 0.7%% slower than --baud, want at most %d", most, bound)
	}
	// Pacing below the line costs little: 8 s at 99% of --baud, 0.91 of
	// it stream data, is 83 kB; a bound with room for a busy machine.
	if want := uint64(8 * 11440 * 80 / 100); sent < want {
		t.Errorf("stream data sent in 8 s: %d bytes, want at least %d", sent, want)
	}
}
