package tunnel

import (
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// linkParams describe one direction of the in-memory serial line.
type linkParams struct {
	rate  int           // bytes per second; 0: unlimited
	ber   float64       // bit error rate
	drop  float64       // probability per byte that a run of bytes vanishes
	dup   float64       // probability per byte that a run is sent twice
	delay time.Duration // one-way latency
}

// memCable is an in-memory null-modem cable between sides 0 and 1, with
// loss, corruption, duplication, delay, a line rate and outages. Each side
// can attach a new line end at any time (a reopened device, a restarted
// peer); bytes sent while nobody is attached are lost.
type memCable struct {
	dirs [2]*memWire // dirs[i] carries what side i writes
	down atomic.Bool // outage: everything is lost
	stop chan struct{}
	wg   sync.WaitGroup
}

type memWire struct {
	p   linkParams
	rng *rand.Rand
	c   *memCable

	mu      sync.Mutex
	queue   []byte  // written, not yet on the line
	transit []chunk // on the line (delay)
	dst     *memLine
	skipBER float64 // bits until the next flip
	skipEv  float64 // bytes until the next drop/dup event
}

type chunk struct {
	at   time.Time
	data []byte
}

func newMemCable(p0, p1 linkParams) *memCable {
	c := &memCable{stop: make(chan struct{})}
	for i, p := range []linkParams{p0, p1} {
		w := &memWire{p: p, rng: rand.New(rand.NewPCG(uint64(i)+1, 42)), c: c}
		w.skipBER = w.nextSkip(p.ber)
		w.skipEv = w.nextSkip(p.drop + p.dup)
		c.dirs[i] = w
		c.wg.Add(1)
		go w.run()
	}
	return c
}

func (c *memCable) Close() {
	close(c.stop)
	c.wg.Wait()
}

// attach gives side i a new line end, replacing the old one (which fails).
func (c *memCable) attach(i int) *memLine {
	l := &memLine{out: c.dirs[i], notify: make(chan struct{}, 1)}
	w := c.dirs[1-i]
	w.mu.Lock()
	old := w.dst
	w.dst = l
	w.mu.Unlock()
	if old != nil {
		old.fail(errors.New("memline: replaced"))
	}
	return l
}

// nextSkip draws the distance to the next event of probability p
// (geometric), so that a low rate costs one random number per event.
func (w *memWire) nextSkip(p float64) float64 {
	if p <= 0 {
		return math.Inf(1)
	}
	return math.Floor(math.Log(1-w.rng.Float64()) / math.Log(1-p))
}

func (w *memWire) run() {
	defer w.c.wg.Done()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	budget := 0.0
	for {
		select {
		case <-w.c.stop:
			return
		case now := <-tick.C:
			w.mu.Lock()
			n := len(w.queue)
			if w.p.rate > 0 {
				budget += now.Sub(last).Seconds() * float64(w.p.rate)
				budget = math.Min(budget, float64(w.p.rate)/100+64)
				n = min(n, int(budget))
				budget -= float64(n)
			}
			last = now
			if n > 0 {
				data := w.mangle(w.queue[:n])
				w.queue = append(w.queue[:0], w.queue[n:]...)
				if !w.c.down.Load() && len(data) > 0 {
					w.transit = append(w.transit, chunk{now.Add(w.p.delay), data})
				}
			}
			for len(w.transit) > 0 && !w.transit[0].at.After(now) {
				if w.dst != nil {
					w.dst.deliver(w.transit[0].data)
				}
				w.transit = w.transit[1:]
			}
			w.mu.Unlock()
		}
	}
}

// mangle applies bit errors, drops and duplicates to b, returning a copy.
func (w *memWire) mangle(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		for w.skipBER < 8 {
			c ^= 1 << int(w.skipBER)
			w.skipBER += 1 + w.nextSkip(w.p.ber)
		}
		w.skipBER -= 8
		if w.skipEv < 1 {
			w.skipEv = w.nextSkip(w.p.drop + w.p.dup)
			run := 1 + w.rng.IntN(40)
			end := min(i+run, len(b))
			if w.rng.Float64()*(w.p.drop+w.p.dup) < w.p.drop {
				i = end - 1
				continue
			}
			out = append(out, b[i:end]...)
		} else {
			w.skipEv--
		}
		out = append(out, c)
	}
	return out
}

// memLine is one attached end: a Line.
type memLine struct {
	out *memWire

	mu     sync.Mutex
	buf    []byte
	err    error
	notify chan struct{}
}

func (l *memLine) deliver(b []byte) {
	l.mu.Lock()
	if l.err == nil {
		l.buf = append(l.buf, b...)
	}
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *memLine) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *memLine) Read(b []byte) (int, error) {
	for {
		l.mu.Lock()
		if len(l.buf) > 0 {
			n := copy(b, l.buf)
			l.buf = l.buf[n:]
			l.mu.Unlock()
			return n, nil
		}
		err := l.err
		l.mu.Unlock()
		if err != nil {
			return 0, err
		}
		<-l.notify
	}
}

func (l *memLine) Write(b []byte) (int, error) {
	l.mu.Lock()
	err := l.err
	l.mu.Unlock()
	if err != nil {
		return 0, err
	}
	w := l.out
	w.mu.Lock()
	w.queue = append(w.queue, b...)
	w.mu.Unlock()
	return len(b), nil
}

func (l *memLine) Close() error {
	l.fail(net.ErrClosed)
	return nil
}
