package tunnel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"
)

// testLogger logs to the test when -v, else nowhere.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("t", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// pair runs two sessions over a memCable: a (side 0) and b (side 1).
type pair struct {
	cable *memCable
	a, b  *Session
}

func newPair(t testing.TB, p0, p1 linkParams, ca, cb Config) *pair {
	t.Helper()
	p := &pair{cable: newMemCable(p0, p1)}
	t.Cleanup(p.cable.Close)
	p.a = p.session(t, 0, ca)
	p.b = p.session(t, 1, cb)
	return p
}

func (p *pair) session(t testing.TB, side int, cfg Config) *Session {
	t.Helper()
	cfg.Open = func(context.Context) (Line, error) { return p.cable.attach(side), nil }
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t).With("side", side)
	}
	if cfg.Baud == 0 {
		cfg.Baud = 4_000_000
	}
	s, err := NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// echo accepts streams on s and echoes them until ctx ends.
func echo(ctx context.Context, s *Session) {
	for {
		st, err := s.AcceptStream(ctx)
		if err != nil {
			return
		}
		go func() {
			io.Copy(st, st)
			st.CloseWrite()
			st.Close()
		}()
	}
}

// roundTrip sends n random bytes through an echo stream and checks the
// sha256 of what comes back.
func roundTrip(ctx context.Context, s *Session, n int, seed uint64) error {
	st, err := s.OpenStream(ctx, "echo:7")
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer st.Close()
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	want := sha256.Sum256(data)
	errc := make(chan error, 1)
	go func() {
		for off := 0; off < n; {
			k := min(n-off, 1+r.IntN(8000))
			if _, err := st.Write(data[off : off+k]); err != nil {
				errc <- err
				return
			}
			off += k
		}
		errc <- st.CloseWrite()
	}()
	h := sha256.New()
	got, err := io.Copy(h, st)
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", got, err)
	}
	if werr := <-errc; werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	if got != int64(n) || !bytes.Equal(h.Sum(nil), want[:]) {
		return fmt.Errorf("echo of %d bytes came back as %d bytes with another sha256", n, got)
	}
	return nil
}

func TestStreamsOverLossyLink(t *testing.T) {
	tests := []struct {
		name    string
		p       linkParams
		streams int
		size    int
	}{
		{"clean", linkParams{}, 8, 64 << 10},
		{"ber1e-4", linkParams{ber: 1e-4}, 8, 32 << 10},
		{"ber1e-3", linkParams{ber: 1e-3}, 4, 16 << 10},
		{"drop", linkParams{drop: 1e-4}, 8, 32 << 10},
		{"duplicate", linkParams{dup: 1e-4}, 8, 32 << 10},
		{"delay20ms", linkParams{delay: 20 * time.Millisecond}, 8, 32 << 10},
		{"rate115200", linkParams{rate: 11520, ber: 1e-5}, 4, 8 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			baud := 0
			if tt.p.rate > 0 {
				baud = tt.p.rate * 10
			}
			p := newPair(t, tt.p, tt.p, Config{Baud: baud}, Config{Baud: baud, Permit: []string{"echo:7"}})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			go echo(ctx, p.b)
			var wg sync.WaitGroup
			errs := make(chan error, tt.streams)
			for i := range tt.streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := roundTrip(ctx, p.a, tt.size, uint64(i)); err != nil {
						errs <- fmt.Errorf("stream %d: %w", i, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			st := p.a.Stats()
			t.Logf("a: %+v", st)
			if tt.p.ber >= 1e-4 && st.Retransmits == 0 {
				t.Errorf("no retransmissions at BER %g: the test did not test", tt.p.ber)
			}
		})
	}
}
