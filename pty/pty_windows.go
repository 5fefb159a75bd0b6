package pty

import (
	"fmt"
	"os"
	"syscall"

	"github.com/sertun/sertun/serialdev"
)

// Windows has no ptys: Open fails, and attach uses a com0com pair
// (com0com_windows.go).

func openPTY() (master, slave *os.File, slavePath string, err error) {
	return nil, nil, "", fmt.Errorf("%w (on Windows, attach to a com0com pair: --link CNCB0)", ErrUnsupported)
}

func makeRaw(*os.File) error                            { return ErrUnsupported }
func enablePacket(*os.File) error                       { return ErrUnsupported }
func readSettings(*os.File) (serialdev.Settings, error) { return serialdev.Settings{}, ErrUnsupported }
func writeSettings(*os.File, serialdev.Settings) error  { return ErrUnsupported }
func (p *Pty) status(byte, []byte) bool                 { return false }
func (p *Pty) watchOpens() error                        { return ErrUnsupported }

const ptyKeepsFormat = true

// openVirtual: the program's end of a com0com pair has its own settings,
// which the program sets; initial is not shown there.
func openVirtual(name string, _ *serialdev.Settings) (Port, error) { return openCom0com(name) }

func readRaw(syscall.RawConn, []byte, bool) (int, error) { return 0, ErrUnsupported }
