package rfc2217

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// pyserialScript drives pyserial's rfc2217:// client against the server on
// loop://: open at 57600, settings, 0xFF-rich data, modem lines, break,
// purges, a second client after the first.
const pyserialScript = `
import os, sys, serial
url = sys.argv[1]
s = serial.serial_for_url(url, baudrate=57600, timeout=3)
assert s.baudrate == 57600
s.baudrate = 19200; s.bytesize = 7; s.parity = 'E'; s.stopbits = 1
data = os.urandom(32 * 1024) + b'\xff' * 512
s.write(data)
got = b''
while len(got) < len(data):
    chunk = s.read(len(data) - len(got))
    assert chunk, 'timeout after %d bytes' % len(got)
    got += chunk
assert got == data, 'echo differs'
s.dtr = True; s.rts = True
import time
deadline = time.time() + 3
while not (s.cts and s.dsr and s.cd) and time.time() < deadline: time.sleep(0.02)
assert s.cts and s.dsr and s.cd, 'lines on: cts=%s dsr=%s cd=%s' % (s.cts, s.dsr, s.cd)
s.dtr = False; s.rts = False
deadline = time.time() + 3
while (s.cts or s.dsr or s.cd) and time.time() < deadline: time.sleep(0.02)
assert not (s.cts or s.dsr or s.cd), 'lines off'
s.send_break(0.05)
s.reset_input_buffer(); s.reset_output_buffer()
s.close()
s = serial.serial_for_url(url, baudrate=9600, timeout=3)
s.write(b'second')
assert s.read(6) == b'second'
s.close()
print('ok')
`

func TestPyserialClient(t *testing.T) {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	if err := exec.Command(py, "-c", "import serial").Run(); err != nil {
		t.Skip("pyserial not installed for /usr/bin/python3")
	}
	ts := startServer(t, "tcp", Telnet, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "-c", pyserialScript, "rfc2217://"+ts.addr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("pyserial: %v\n%s", err, out)
	}
	if ts.opens.Load() != 2 {
		t.Errorf("device opened %d times, want 2 (one per client)", ts.opens.Load())
	}
}
