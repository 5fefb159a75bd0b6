//go:build linux || darwin || windows

package serialdev

import (
	"errors"
	"os"
	"time"
)

// The device's file is driven by Go's poller on every OS it runs on, so
// writes and deadlines are the file's.

func (d *device) Write(p []byte) (int, error) {
	n, err := d.f.Write(p)
	if err != nil && isGone(err) {
		d.status.close()
	}
	return n, err
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
