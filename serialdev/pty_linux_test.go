package serialdev

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// openPty makes a pty pair and returns the master, non-blocking so that
// deadlines and Close work, and the slave path for Open. The slave is not
// opened here: the test opens it through the package.
func openPty(t testing.TB) (*os.File, string) {
	t.Helper()
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		t.Fatalf("ptsname: %v", err)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	t.Cleanup(func() { master.Close() })
	return master, "/dev/pts/" + strconv.Itoa(n)
}

// masterTermios reads the slave's termios through the master, as the test
// peer of a real device would see the line.
func masterTermios(t testing.TB, master *os.File) *unix.Termios {
	t.Helper()
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var tio *unix.Termios
	var ierr error
	if err := rc.Control(func(fd uintptr) { tio, ierr = getTermios(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatalf("TCGETS2 on the master: %v", ierr)
	}
	return tio
}
