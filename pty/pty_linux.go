package pty

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sertun/sertun/serialdev"
)

// openPTY opens /dev/ptmx non-blocking (so *os.File puts it in the poller:
// deadlines and Close work) and the slave, through TIOCGPTPEER where the
// kernel has it so no path lookup can race.
func openPTY() (master, slave *os.File, slavePath string, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, "", fmt.Errorf("pty: opening /dev/ptmx: %w", err)
	}
	fail := func(e error) (*os.File, *os.File, string, error) {
		unix.Close(mfd)
		return nil, nil, "", e
	}
	n, err := unix.IoctlGetUint32(mfd, unix.TIOCGPTN)
	if err != nil {
		return fail(fmt.Errorf("pty: TIOCGPTN: %w", err))
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return fail(fmt.Errorf("pty: unlocking: %w", err))
	}
	slavePath = "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		fd, err := unix.Open(slavePath, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("pty: opening %s: %w", slavePath, err))
		}
		sfd = uintptr(fd)
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), os.NewFile(sfd, slavePath), slavePath, nil
}

// getTermios reads the slave's termios2 through the master.
func getTermios(master *os.File) (*unix.Termios, error) {
	var t *unix.Termios
	err := control(master, func(fd int) (err error) {
		t, err = unix.IoctlGetTermios(fd, unix.TCGETS2)
		return err
	})
	return t, err
}

func setTermios(master *os.File, t *unix.Termios) error {
	return control(master, func(fd int) error { return unix.IoctlSetTermios(fd, unix.TCSETS2, t) })
}

// makeRaw sets cfmakeraw's flags, 8N1, CLOCAL|CREAD, and EXTPROC (so every
// tcsetattr of the program is flagged at the master).
func makeRaw(master *os.File) error {
	t, err := getTermios(master)
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Lflag |= unix.EXTPROC
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CSTOPB | unix.CRTSCTS
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return setTermios(master, t)
}

// enablePacket turns on packet mode on the master.
func enablePacket(master *os.File) error {
	return control(master, func(fd int) error { return unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 1) })
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
	serialdev.SetTermios(t, s)
	return setTermios(master, t)
}

// status handles a status packet from the master (called from Read): a
// settings change is posted if the settings differ. EXTPROC is set again
// at once, so that the program's next change is flagged too.
func (p *Pty) status(st byte, _ []byte) {
	if st&(unix.TIOCPKT_IOCTL|unix.TIOCPKT_DOSTOP|unix.TIOCPKT_NOSTOP) != 0 {
		p.reassertExtproc()
		p.refresh()
	}
	p.postFlush(st)
}

// reassertExtproc sets EXTPROC again when a program's tcsetattr cleared it
// (a termios built from scratch, or lflag = 0): without it the next
// tcsetattr would pass unseen. The kernel flags the clearing call itself,
// since it looks at the old flags too.
func (p *Pty) reassertExtproc() {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, err := getTermios(p.master)
	if err != nil || t.Lflag&unix.EXTPROC != 0 {
		return
	}
	t.Lflag |= unix.EXTPROC
	setTermios(p.master, t)
}

// watchOpens counts the programs that have the slave open, from inotify's
// open and close events on the slave node.
func (p *Pty) watchOpens() error {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("pty: inotify: %w", err)
	}
	if _, err := unix.InotifyAddWatch(fd, p.slavePath, unix.IN_OPEN|unix.IN_CLOSE_WRITE|unix.IN_CLOSE_NOWRITE); err != nil {
		unix.Close(fd)
		return fmt.Errorf("pty: inotify on %s: %w", p.slavePath, err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		<-p.stop
		f.Close()
	}()
	go func() {
		defer p.wg.Done()
		p.readOpens(f)
	}()
	return nil
}

func (p *Pty) readOpens(f *os.File) {
	var buf [64 * (unix.SizeofInotifyEvent + unix.NAME_MAX + 1)]byte
	for {
		n, err := f.Read(buf[:])
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				p.mu.Lock()
				p.counted = false
				p.mu.Unlock()
			}
			return
		}
		delta := 0
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			switch {
			case ev.Mask&unix.IN_OPEN != 0:
				delta++
			case ev.Mask&(unix.IN_CLOSE_WRITE|unix.IN_CLOSE_NOWRITE) != 0:
				delta--
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		if delta == 0 {
			continue
		}
		p.mu.Lock()
		was := p.opens > 0
		p.opens += delta
		if p.opens < 0 {
			p.opens = 0
		}
		if was != (p.opens > 0) {
			p.post(Changes{Lines: true})
		}
		p.mu.Unlock()
	}
}

// ptyKeepsFormat: a Linux pty forces CS8 and clears PARENB.
const ptyKeepsFormat = false

func openVirtual(name string, initial *serialdev.Settings) (Port, error) {
	return open(name, initial)
}
