//go:build race && unix

package fdio

import (
	"runtime"
	"unsafe"
)

// ioSync makes every write happen before the reads after it, for the race
// detector, as internal/poll does for net.Conn and *os.File: data handed
// through a socket or a pty is synchronisation the detector cannot see.
var ioSync int64

func raceReleaseMerge() { runtime.RaceReleaseMerge(unsafe.Pointer(&ioSync)) }
func raceAcquire()      { runtime.RaceAcquire(unsafe.Pointer(&ioSync)) }
