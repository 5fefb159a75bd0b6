package serialdev

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"strings"
)

// LoopURL is the name of the built-in loopback plug.
const LoopURL = "loop://"

// Open opens the port that name designates: a device path (/dev/ttyUSB0,
// /dev/pts/3, COM3) or LoopURL. The device is opened exclusively and in raw
// mode; its baud rate, character format and flow control stay as they were
// until SetSettings. Errors wrap ErrNotFound (and fs.ErrNotExist), ErrBusy,
// fs.ErrPermission or ErrUnknownScheme where they apply.
func Open(name string) (Port, error) {
	path, loop, err := parseName("open", name)
	if err != nil {
		return nil, err
	}
	if loop {
		return NewLoop(), nil
	}
	return openDevice(path)
}

// Stat reports whether name designates a port that exists, without opening
// it: nil, or an error as Open would give it (ErrNotFound, ErrUnknownScheme,
// ...). A port that Stat accepts may still be busy.
func Stat(name string) error {
	path, loop, err := parseName("stat", name)
	if err != nil || loop {
		return err
	}
	return statDevice(path)
}

// List returns the serial ports of this machine, with USB identities where
// known. A machine without serial ports gives an empty list and no error.
func List() ([]Info, error) {
	ports, err := listPorts()
	if err != nil {
		return nil, fmt.Errorf("serialdev: listing serial ports: %w", err)
	}
	if ports == nil {
		ports = []Info{}
	}
	return ports, nil
}

// parseName splits a port URL into a device path or the loop plug.
func parseName(op, name string) (path string, loop bool, err error) {
	scheme, rest, ok := strings.Cut(name, "://")
	switch {
	case name == "":
		return "", false, fmt.Errorf("serialdev: %s: empty port name (want a device path or %s)", op, LoopURL)
	case !ok:
		return name, false, nil
	case strings.EqualFold(scheme, "loop"):
		if rest != "" {
			return "", false, fmt.Errorf("serialdev: %s: the loopback plug takes no host, path or options (write it as %s)", name, LoopURL)
		}
		return "", true, nil
	}
	return "", false, fmt.Errorf("serialdev: %s %s: %w %q (serialdev opens device paths and %s)",
		op, name, ErrUnknownScheme, scheme, LoopURL)
}

// notFoundError is a missing device; it is both ErrNotFound and
// fs.ErrNotExist so that callers can use either.
type notFoundError struct{ op, name string }

func (e *notFoundError) Error() string {
	return "serialdev: " + e.op + " " + e.name + ": " + ErrNotFound.Error()
}

func (e *notFoundError) Unwrap() []error { return []error{ErrNotFound, fs.ErrNotExist} }

func errNotFound(op, name string) error { return &notFoundError{op: op, name: name} }

// errUnsupportedOS is what an OS without a device implementation gives.
func errUnsupportedOS(op, name string) error {
	return fmt.Errorf("serialdev: %s %s: serial devices are not supported on %s: %w",
		op, name, runtime.GOOS, errors.ErrUnsupported)
}
