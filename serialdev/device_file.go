//go:build linux || darwin || windows

package serialdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// The device's file is driven by Go's poller on every OS it runs on, so
// deadlines are the file's; data goes through fdio, the file's own Read
// and Write where fdio has no faster path.

func (d *device) Write(p []byte) (int, error) {
	n, err := d.data.Write(p)
	if err != nil && isGone(err) {
		d.status.close()
	}
	return n, d.dataErr("write", err)
}

// dataErr words an error of the data path as *os.File does, with the
// device's name.
func (d *device) dataErr(op string, err error) error {
	var pe *os.PathError
	if err == nil || err == io.EOF || errors.As(err, &pe) {
		return err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		err = se.Err
	}
	return &os.PathError{Op: op, Path: d.name, Err: err}
}

func (d *device) SetReadDeadline(t time.Time) error {
	return d.deadlineError(d.f.SetReadDeadline(t))
}

func (d *device) SetWriteDeadline(t time.Time) error {
	return d.deadlineError(d.f.SetWriteDeadline(t))
}

// deadlineError makes the poller's "use of closed file" os.ErrClosed.
func (d *device) deadlineError(err error) error {
	if err == nil || errors.Is(err, os.ErrNoDeadline) {
		return err
	}
	return &os.PathError{Op: "set deadline", Path: d.name, Err: os.ErrClosed}
}

// ctlError words the failure of a control operation.
func (d *device) ctlError(op string, err error) error {
	if errors.Is(err, os.ErrClosed) {
		return &os.PathError{Op: op, Path: d.name, Err: os.ErrClosed}
	}
	return fmt.Errorf("serialdev: %s %s: %w", op, d.name, err)
}
