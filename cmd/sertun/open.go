package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"

	"github.com/sertun/sertun/rfc2217"
	"github.com/sertun/sertun/serialdev"
)

// rfc2217Scheme starts the URL of a port on an RFC 2217 server.
const rfc2217Scheme = "rfc2217://"

// openPort opens the port a DEVICE argument names: a path or loop:// through
// serialdev, rfc2217://HOST:PORT through the rfc2217 client. Every command
// that takes DEVICE opens it here.
func openPort(ctx context.Context, url string) (serialdev.Port, error) {
	if addr, ok := rfc2217Addr(url); ok {
		c, err := rfc2217.Dial(ctx, addr, rfc2217.ClientConfig{})
		if err != nil {
			return nil, err // worded for users by rfc2217
		}
		return c, nil
	}
	p, err := serialdev.Open(url)
	if err != nil {
		return nil, portError(url, err)
	}
	return p, nil
}

// statPort checks at startup that a DEVICE argument names a port, without
// opening it (the device may be opened later, when a client arrives).
func statPort(url string) error {
	if addr, ok := rfc2217Addr(url); ok {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s: want rfc2217://HOST:PORT", url)
		}
		return nil
	}
	if err := serialdev.Stat(url); err != nil {
		return portError(url, err)
	}
	return nil
}

// portError words the errors users meet when they name a port, with what to
// do about them.
func portError(url string, err error) error {
	switch {
	case errors.Is(err, serialdev.ErrNotFound):
		return fmt.Errorf("%s: %w (run \"sertun list\" to see the ports)", url, serialdev.ErrNotFound)
	case errors.Is(err, serialdev.ErrUnknownScheme):
		scheme, _, _ := strings.Cut(url, "://")
		return fmt.Errorf("%s: %w %q (want a device path such as /dev/ttyUSB0 or COM3, loop://, or rfc2217://HOST:PORT)",
			url, serialdev.ErrUnknownScheme, scheme)
	case errors.Is(err, serialdev.ErrBusy):
		return fmt.Errorf("%s: %w (another program has it open)", url, serialdev.ErrBusy)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: %w (on Linux, add your user to the group that owns the device, often \"dialout\", and log in again)",
			url, fs.ErrPermission)
	}
	return err
}

// rfc2217Addr returns HOST:PORT when url is rfc2217://HOST:PORT (the scheme
// in any case).
func rfc2217Addr(url string) (addr string, ok bool) {
	n := len(rfc2217Scheme)
	if len(url) < n || !strings.EqualFold(url[:n], rfc2217Scheme) {
		return "", false
	}
	return url[n:], true
}
