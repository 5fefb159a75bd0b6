package pty

import (
	"bytes"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/serialdev"
)

// openPTY opens /dev/ptmx non-blocking (so *os.File puts it in the poller)
// and the slave.
func openPTY() (master, slave *os.File, slavePath string, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, "", fmt.Errorf("pty: opening /dev/ptmx: %w", err)
	}
	fail := func(e error) (*os.File, *os.File, string, error) {
		unix.Close(mfd)
		return nil, nil, "", e
	}
	if err := unix.IoctlSetInt(mfd, unix.TIOCPTYGRANT, 0); err != nil {
		return fail(fmt.Errorf("pty: TIOCPTYGRANT: %w", err))
	}
	if err := unix.IoctlSetInt(mfd, unix.TIOCPTYUNLK, 0); err != nil {
		return fail(fmt.Errorf("pty: TIOCPTYUNLK: %w", err))
	}
	var name [128]byte
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(mfd), uintptr(unix.TIOCPTYGNAME), uintptr(unsafe.Pointer(&name[0]))); e != 0 {
		return fail(fmt.Errorf("pty: TIOCPTYGNAME: %w", e))
	}
	if i := bytes.IndexByte(name[:], 0); i > 0 {
		slavePath = string(name[:i])
	} else {
		return fail(fmt.Errorf("pty: TIOCPTYGNAME gave no name"))
	}
	sfd, err := unix.Open(slavePath, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("pty: opening %s: %w", slavePath, err))
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), os.NewFile(uintptr(sfd), slavePath), slavePath, nil
}

// On BSD the master and slave share one tty, so TIOCGETA on the master
// reads the program's termios.
func getTermios(master *os.File) (*unix.Termios, error) {
	var t *unix.Termios
	err := control(master, func(fd int) (err error) {
		t, err = unix.IoctlGetTermios(fd, unix.TIOCGETA)
		return err
	})
	return t, err
}

func setTermios(master *os.File, t *unix.Termios) error {
	return control(master, func(fd int) error { return unix.IoctlSetTermios(fd, unix.TIOCSETA, t) })
}

func makeRaw(master *os.File) error {
	t, err := getTermios(master)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CSTOPB | unix.CRTSCTS
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return setTermios(master, t)
}

// enablePacket turns on packet mode and external processing (TIOCEXT):
// then each termios change on the slave is announced at the master by a
// TIOCPKT_IOCTL packet that carries a copy of the new termios.
func enablePacket(master *os.File) error {
	return control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 1); err != nil {
			return err
		}
		return unix.IoctlSetPointerInt(fd, unix.TIOCEXT, 1)
	})
}

func readSettings(master *os.File) (serialdev.Settings, error) {
	t, err := getTermios(master)
	if err != nil {
		return serialdev.Settings{}, err
	}
	return serialdev.TermiosSettings(t), nil
}

func writeSettings(master *os.File, s serialdev.Settings) error {
	t, err := getTermios(master)
	if err != nil {
		return err
	}
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.CRTSCTS
	t.Cflag |= [...]uint64{unix.CS5, unix.CS6, unix.CS7, unix.CS8}[s.DataBits-5]
	switch s.Parity {
	case serialdev.ParityOdd:
		t.Cflag |= unix.PARENB | unix.PARODD
	case serialdev.ParityEven:
		t.Cflag |= unix.PARENB
	}
	if s.StopBits == serialdev.Stop2 {
		t.Cflag |= unix.CSTOPB
	}
	t.Iflag &^= unix.IXON | unix.IXOFF
	if s.OutFlow == serialdev.FlowRTSCTS || s.InFlow == serialdev.FlowRTSCTS {
		t.Cflag |= unix.CRTSCTS
	}
	if s.OutFlow == serialdev.FlowXonXoff {
		t.Iflag |= unix.IXON
	}
	if s.InFlow == serialdev.FlowXonXoff {
		t.Iflag |= unix.IXOFF
	}
	t.Ispeed, t.Ospeed = uint64(s.BaudRate), uint64(s.BaudRate)
	return setTermios(master, t)
}

// status handles a status packet (called from Read): a settings change is
// posted if the settings differ. A TIOCPKT_IOCTL packet carries the new
// termios after the status byte; a short copy (small read buffer) is read
// back with TIOCGETA instead. BSD keeps EXTPROC on whatever the program
// sets, so it needs no re-asserting.
func (p *Pty) status(st byte, rest []byte) {
	if st&(unix.TIOCPKT_IOCTL|unix.TIOCPKT_DOSTOP|unix.TIOCPKT_NOSTOP) != 0 {
		var t unix.Termios
		s := serialdev.Settings{}
		if st&unix.TIOCPKT_IOCTL != 0 && len(rest) >= int(unsafe.Sizeof(t)) {
			t = *(*unix.Termios)(unsafe.Pointer(&rest[0]))
			s = serialdev.TermiosSettings(&t)
		}
		if s.Validate() == nil {
			p.mu.Lock()
			if s != p.last {
				p.last = s
				p.post(Changes{Settings: true})
			}
			p.mu.Unlock()
		} else {
			p.refresh()
		}
	}
	p.postFlush(st)
}

// watchOpens: macOS has no inotify and kqueue does not see opens of a
// device node, so opens are not counted.
func (p *Pty) watchOpens() error { return ErrUnsupported }

// ptyKeepsFormat: a BSD pty keeps the data bits and parity a program sets.
const ptyKeepsFormat = true

func openVirtual(name string, initial *serialdev.Settings) (Port, error) {
	return open(name, initial)
}
