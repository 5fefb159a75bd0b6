//go:build !linux && !darwin && !windows

package pty

import (
	"os"
	"syscall"

	"github.com/sertun/sertun/serialdev"
)

func openPTY() (master, slave *os.File, slavePath string, err error) {
	return nil, nil, "", ErrUnsupported
}

func makeRaw(*os.File) error                            { return ErrUnsupported }
func enablePacket(*os.File) error                       { return ErrUnsupported }
func readSettings(*os.File) (serialdev.Settings, error) { return serialdev.Settings{}, ErrUnsupported }
func writeSettings(*os.File, serialdev.Settings) error  { return ErrUnsupported }
func (p *Pty) status(byte, []byte) bool                 { return false }
func (p *Pty) watchOpens() error                        { return ErrUnsupported }

const ptyKeepsFormat = true

func openVirtual(name string, initial *serialdev.Settings) (Port, error) {
	return open(name, initial)
}

func readRaw(syscall.RawConn, []byte, bool) (int, error) { return 0, ErrUnsupported }
