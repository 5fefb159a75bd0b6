package serialdev

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// ttyDriver reports whether the character device fi is served by a tty
// driver, from sysfs, without opening it (an open raises DTR, which resets
// many boards). It is true where sysfs cannot tell: a pty has no entry.
func ttyDriver(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	dev := uint64(st.Rdev)
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/char/%d:%d/subsystem", unix.Major(dev), unix.Minor(dev)))
	return err != nil || filepath.Base(link) == "tty"
}
