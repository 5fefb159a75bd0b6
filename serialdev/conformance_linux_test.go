package serialdev

import (
	"testing"
	"time"
)

func osTransports() []transport {
	return []transport{{
		name: "pty",
		open: openEchoPty,
		settings: func(s Settings) (Settings, error) {
			if err := supported(s); err != nil {
				return Settings{}, err
			}
			// A pty keeps the rate, CSTOPB, CRTSCTS, IXON and IXOFF, and
			// forces 8 data bits without parity.
			s.DataBits, s.Parity = 8, ParityNone
			if s.StopBits == Stop1Half {
				s.StopBits = Stop2
			}
			if s.OutFlow == FlowRTSCTS || s.InFlow == FlowRTSCTS {
				s.OutFlow, s.InFlow = FlowRTSCTS, FlowRTSCTS
			}
			return s, nil
		},
	}}
}

// openEchoPty opens the slave of a pty with Open while the master sends
// back whatever it receives.
func openEchoPty(t *testing.T) Port {
	master, path := openPty(t)
	p, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				if _, err := master.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		p.Close()
		master.SetDeadline(time.Now())
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("pty echo did not stop")
		}
	})
	return p
}
