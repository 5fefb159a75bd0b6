//go:build linux

package rfc2217

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/serialdev"
)

// ptyMaster opens a pty pair and returns the master (non-blocking, so
// deadlines work) and the slave's path. A slave fd stays open for the
// test's life so that the master keeps working while the server closes
// and reopens the slave.
func ptyMaster(t *testing.T) (*os.File, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	path := "/dev/pts/" + strconv.Itoa(n)
	master := os.NewFile(uintptr(fd), "ptmx")
	slave, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		slave.Close()
		master.Close()
	})
	return master, path
}

// masterTermios reads the slave's settings with TCGETS2 on the master.
func masterTermios(t *testing.T, master *os.File) *unix.Termios {
	t.Helper()
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var tio *unix.Termios
	var ierr error
	rc.Control(func(fd uintptr) { tio, ierr = unix.IoctlGetTermios(int(fd), unix.TCGETS2) })
	if ierr != nil {
		t.Fatal(ierr)
	}
	return tio
}

func masterSpeed(t *testing.T, master *os.File) int { return int(masterTermios(t, master).Ospeed) }

// startSer2net runs ser2net with an RFC 2217 accepter in front of device
// and returns its address; it is killed when the test ends.
func startSer2net(t *testing.T, device string) string {
	t.Helper()
	bin, err := exec.LookPath("ser2net")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ser2net is not installed (apt-get install ser2net)")
		}
		t.Skip("ser2net is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cfg := filepath.Join(t.TempDir(), "ser2net.yaml")
	conf := fmt.Sprintf(`connection: &rfc
  accepter: telnet(rfc2217),tcp,127.0.0.1,%s
  connector: serialdev(nouucplock),%s,115200n81,local
  options:
    kickolduser: true
`, port, device)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "-n", "-d", "-u", "-c", cfg)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("ser2net output:\n%s", out.String())
		}
	})
	for end := time.Now().Add(5 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(end) {
			t.Fatalf("ser2net does not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr
}

// TestClientSer2net runs the client against the real ser2net in front of
// a pty: settings reach the device, data passes intact both ways, and
// ser2net's unanswered SET-CONTROL does not fail anything.
func TestClientSer2net(t *testing.T) {
	master, slave := ptyMaster(t)
	addr := startSer2net(t, slave)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, ClientConfig{Timeout: time.Second, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, _ := c.Settings(); got.BaudRate != 115200 || got.DataBits != 8 {
		t.Errorf("initial settings %v, want ser2net's 115200 8N1", got)
	}

	want := serialdev.Settings{BaudRate: 38400, DataBits: 8, StopBits: serialdev.Stop2, OutFlow: serialdev.FlowRTSCTS}
	if err := c.SetSettings(want); err != nil {
		t.Fatal(err)
	}
	if got := masterSpeed(t, master); got != 38400 {
		t.Errorf("device at %d baud, want 38400", got)
	}
	if got, _ := c.Settings(); got.BaudRate != 38400 || got.StopBits != serialdev.Stop2 || got.OutFlow != serialdev.FlowRTSCTS {
		t.Errorf("Settings() = %v", got)
	}
	// ser2net leaves SET-CONTROL DTR unanswered on a pty: the client
	// waits once, assumes it, and goes on.
	start := time.Now()
	if err := c.SetDTR(true); err != nil {
		t.Errorf("SetDTR: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("SetDTR took %v", d)
	}

	data := append(randBytes(16<<10, 7), 0xFF, 0xFF, 0x00, '\r', '\n')
	// client -> device
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := c.Write(data); err != nil {
			t.Errorf("Write: %v", err)
		}
	}()
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(data))
	if _, err := io.ReadFull(master, got); err != nil {
		t.Fatalf("device read: %v", err)
	}
	wg.Wait()
	if !bytes.Equal(got, data) {
		t.Fatal("device got other bytes than the client wrote")
	}
	// device -> client
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := master.Write(data); err != nil {
			t.Errorf("device write: %v", err)
		}
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("client read: %v", err)
	}
	wg.Wait()
	if !bytes.Equal(got, data) {
		t.Fatal("client got other bytes than the device wrote")
	}

	// A change to 115200 reaches the device too.
	want.BaudRate = 115200
	if err := c.SetSettings(want); err != nil {
		t.Fatal(err)
	}
	if got := masterSpeed(t, master); got != 115200 {
		t.Errorf("device at %d baud, want 115200", got)
	}

	// A reader that falls behind: the client's SUSPEND is misread by
	// ser2net as "flow control none"; the client must notice, put
	// RTS/CTS back, and lose nothing.
	big := randBytes(3<<20, 8)
	wg.Add(1)
	go func() {
		defer wg.Done()
		master.SetWriteDeadline(time.Now().Add(20 * time.Second))
		if _, err := master.Write(big); err != nil {
			t.Errorf("device write: %v", err)
		}
	}()
	time.Sleep(500 * time.Millisecond) // nobody reads: the client's buffer fills
	got = make([]byte, len(big))
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("client read: %v", err)
	}
	wg.Wait()
	if !bytes.Equal(got, big) {
		t.Fatal("client got other bytes than the device wrote")
	}
	waitUntil(t, 2*time.Second, "RTS/CTS back on the device", func() bool {
		return masterTermios(t, master).Cflag&unix.CRTSCTS != 0
	})
	c.mu.Lock()
	broken := c.suspBroken
	c.mu.Unlock()
	if !broken {
		t.Error("the client did not notice that ser2net misreads FLOWCONTROL-SUSPEND")
	}
	if s, _ := c.Settings(); s.OutFlow != serialdev.FlowRTSCTS {
		t.Errorf("client settings %v after the SUSPEND mix-up", s)
	}
}
