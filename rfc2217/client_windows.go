package rfc2217

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

// connRefused reports whether a dial failed because nothing listens there.
func connRefused(err error) bool {
	return errors.Is(err, windows.WSAECONNREFUSED) || errors.Is(err, syscall.ECONNREFUSED)
}
