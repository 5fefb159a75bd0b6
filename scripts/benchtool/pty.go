//go:build linux

package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ptyPair is a pseudo-terminal whose master the bench plays as the device
// end. The bench also holds the slave open so that the pty lives while the
// server under test closes and reopens it (sertun opens the device per
// session); the held slave is never read.
type ptyPair struct {
	Master *os.File // non-blocking, driven by Go's poller: deadlines work
	Slave  string
	hold   int
}

func openPty() (*ptyPair, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("unlockpt: %w", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ptsname: %w", err)
	}
	slave := fmt.Sprintf("/dev/pts/%d", n)
	hold, err := unix.Open(slave, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open %s: %w", slave, err)
	}
	if err := makeRaw(hold); err != nil {
		unix.Close(hold)
		unix.Close(fd)
		return nil, err
	}
	// os.NewFile sees O_NONBLOCK and registers the fd with the poller.
	return &ptyPair{Master: os.NewFile(uintptr(fd), "ptmx"), Slave: slave, hold: hold}, nil
}

func (p *ptyPair) Close() {
	p.Master.Close()
	unix.Close(p.hold)
}

// makeRaw is cfmakeraw(3).
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("tcgetattr: %w", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CRTSCTS
	t.Cflag |= unix.CS8 | unix.CREAD | unix.CLOCAL
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
		return fmt.Errorf("tcsetattr: %w", err)
	}
	return nil
}

// openProgramEnd opens a virtual port (a link made by sertun attach, gensiot
// or socat) the way a program would, raw, non-blocking for the poller.
func openProgramEnd(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := makeRaw(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}
