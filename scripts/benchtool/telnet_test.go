//go:build linux

package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// replyConn records what the telnet client writes back.
type replyConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *replyConn) Write(p []byte) (int, error) { return c.out.Write(p) }

func TestTelnetDecode(t *testing.T) {
	tests := []struct {
		name        string
		in, data    []byte
		wantReplies []byte
	}{
		{"plain", []byte("hello"), []byte("hello"), nil},
		{"doubled IAC", []byte{'a', tnIAC, tnIAC, 'b'}, []byte{'a', 0xff, 'b'}, nil},
		{"binary and SGA agreed",
			[]byte{tnIAC, tnDO, optBinary, tnIAC, tnWILL, optBinary, tnIAC, tnWILL, optSGA, 'x'},
			[]byte("x"),
			[]byte{tnIAC, tnWILL, optBinary, tnIAC, tnDO, optBinary, tnIAC, tnDO, optSGA}},
		{"com-port and echo refused",
			[]byte{tnIAC, tnDO, 44, tnIAC, tnWILL, 1, 'y'},
			[]byte("y"),
			[]byte{tnIAC, tnWONT, 44, tnIAC, tnDONT, 1}},
		{"repeated request answered once",
			[]byte{tnIAC, tnDO, 44, tnIAC, tnDO, 44},
			nil,
			[]byte{tnIAC, tnWONT, 44}},
		{"subnegotiation skipped, IAC inside",
			[]byte{'a', tnIAC, tnSB, 44, 1, tnIAC, tnIAC, 0, 0, tnIAC, tnSE, 'b'},
			[]byte("ab"), nil},
		{"other command skipped", []byte{'a', tnIAC, 241, 'b'}, []byte("ab"), nil},
	}
	for _, tt := range tests {
		// Every split of the input into two reads must give the same result.
		for split := 0; split <= len(tt.in); split++ {
			rc := &replyConn{}
			tc := newTelnetConn(rc)
			in := bytes.Clone(tt.in)
			var got []byte
			got = append(got, tc.decode(in[:split])...)
			got = append(got, tc.decode(in[split:])...)
			if !bytes.Equal(got, tt.data) {
				t.Errorf("%s, split %d: data %v, want %v", tt.name, split, got, tt.data)
			}
			if !bytes.Equal(rc.out.Bytes(), tt.wantReplies) {
				t.Errorf("%s, split %d: replies %v, want %v", tt.name, split, rc.out.Bytes(), tt.wantReplies)
			}
		}
	}
}

func TestTelnetWriteEscapes(t *testing.T) {
	tests := []struct {
		name     string
		in, wire []byte
	}{
		{"no IAC", []byte("plain"), []byte("plain")},
		{"IAC inside", []byte{1, 0xff, 2}, []byte{1, 0xff, 0xff, 2}},
		{"IAC first and last", []byte{0xff, 1, 0xff}, []byte{0xff, 0xff, 1, 0xff, 0xff}},
		{"IACs only", []byte{0xff, 0xff}, []byte{0xff, 0xff, 0xff, 0xff}},
		{"empty", []byte{}, nil},
	}
	for _, tt := range tests {
		rc := &replyConn{}
		tc := newTelnetConn(rc)
		n, err := tc.Write(tt.in)
		if err != nil || n != len(tt.in) {
			t.Fatalf("%s: Write = %d, %v", tt.name, n, err)
		}
		if !bytes.Equal(rc.out.Bytes(), tt.wire) {
			t.Errorf("%s: wire %v, want %v", tt.name, rc.out.Bytes(), tt.wire)
		}
	}
}

func TestPercentileAndMedian(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}} {
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	for _, tt := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestInTurn(t *testing.T) {
	xs := []string{"a", "b", "c"}
	for _, tt := range []struct {
		run  int
		want string
	}{{0, "abc"}, {1, "bca"}, {2, "cab"}, {3, "abc"}, {7, "bca"}} {
		if got := strings.Join(inTurn(xs, tt.run), ""); got != tt.want {
			t.Errorf("inTurn(abc, %d) = %s, want %s", tt.run, got, tt.want)
		}
	}
	if got := strings.Join(xs, ""); got != "abc" {
		t.Errorf("inTurn changed its argument: %s", got)
	}
	if got := inTurn([]string(nil), 3); len(got) != 0 {
		t.Errorf("inTurn(nil) = %v", got)
	}
}

// TestTransferOverPty moves data through a pty pair (the bench's device
// end) with both helpers and checks that a corrupted stream is caught.
func TestTransferOverPty(t *testing.T) {
	p, err := openPty()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	slave, err := openProgramEnd(p.Slave)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	x, err := transfer(p.Master, slave, 100*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("master->slave: %v", err)
	}
	if x.Bytes == 0 || x.MBps() <= 0 {
		t.Fatalf("nothing moved: %+v", x)
	}
	if _, err := transfer(slave, p.Master, 100*time.Millisecond, nil); err != nil {
		t.Fatalf("slave->master: %v", err)
	}
	if err := syncPath(slave, p.Master, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	rtts, err := latency(slave, p.Master, 50, time.Second)
	if err != nil || len(rtts) != 50 {
		t.Fatalf("latency: %d round trips, %v", len(rtts), err)
	}
	// A stray byte in the path must fail the count check.
	if _, err := p.Master.Write([]byte{'!'}); err != nil {
		t.Fatal(err)
	}
	if _, err := transfer(p.Master, slave, 50*time.Millisecond, nil); err == nil {
		t.Fatal("transfer with an extra byte in the path succeeded")
	}
}
