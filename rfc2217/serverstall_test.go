package rfc2217

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// A lone client that reads steadily but slower than the device (512 bytes
// every 5 ms) is slow, not stuck: it keeps the port, however long its
// queue stays full.
func TestServerSlowSteadyClientKept(t *testing.T) {
	ts := startServer(t, "pipe", Raw, Config{ClientBuffer: 64 << 10, ClientStall: 400 * time.Millisecond})
	conn, err := ts.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		conn.Write(bytes.Repeat([]byte("x"), 2<<20))
	}()
	buf := make([]byte, 512)
	var got int
	var maxGap time.Duration
	last := time.Now()
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := io.ReadFull(conn, buf)
		got += n
		if d := time.Since(last); d > maxGap {
			maxGap = d
		}
		last = time.Now()
		if err != nil {
			t.Logf("read ended after %d bytes: %v", got, err)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	logs := ts.logs.String()
	if strings.Contains(logs, "client takes nothing") {
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "takes nothing") || strings.Contains(l, "disconnected") {
				t.Log(l)
			}
		}
		t.Errorf("steady client (max gap between reads %v, %d bytes read) was dropped as stalled", maxGap, got)
	}
}

// After a long FLOWCONTROL-SUSPEND the client resumes and pauses reading
// for 300 ms, less than ClientStall (400 ms): the clock starts at RESUME.
func TestServerStallClockAfterResume(t *testing.T) {
	ts := startServer(t, "pipe", Telnet, Config{ClientBuffer: 64 << 10, ClientStall: 400 * time.Millisecond})
	c := opened(t, ts)
	c.send(&FlowControlSuspend{})
	payload := randomData(100<<10, 5)
	go c.writeRaw(AppendData(nil, payload, c.binOut.Load()))
	time.Sleep(1350 * time.Millisecond)
	c.pause.Lock()
	c.send(&FlowControlResume{})
	resumed := time.Now()
	time.Sleep(300 * time.Millisecond)
	c.mu.Lock()
	t.Logf("client has %d of %d bytes at unpause", len(c.data), len(payload))
	c.mu.Unlock()
	c.pause.Unlock()
	c.waitFor(5*time.Second, "data or EOF", func() bool { return len(c.data) >= len(payload) || c.eof != nil })
	if logs := ts.logs.String(); strings.Contains(logs, "client takes nothing") {
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "takes nothing") {
				t.Log(l)
			}
		}
		t.Errorf("dropped after a 300 ms pause following RESUME (ClientStall 400 ms); resumed %v ago", time.Since(resumed))
	}
}

// A tiny ClientStall drops a stuck client at once, without a crash.
func TestServerTinyClientStall(t *testing.T) {
	ts := startServer(t, "pipe", Raw, Config{ClientBuffer: 1024, ClientStall: time.Nanosecond})
	conn, err := ts.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go conn.Write(bytes.Repeat([]byte("x"), 1<<20)) // more than the device and the queue hold
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(ts.logs.String(), "client takes nothing"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("stuck client not dropped:\n%s", ts.logs.String())
		}
	}
}
