// Package fdio is the data path of sertun's non-blocking descriptors:
// sockets, pty masters and serial devices. Reads and writes go through the
// descriptor's syscall.RawConn, so Go's poller still waits for readiness
// and deadlines and Close work as on the net.Conn or *os.File they come
// from.
//
// On Linux each read or write is a raw system call. syscall.Read and
// syscall.Write tell the scheduler that the goroutine may block, and the
// runtime's monitor hands its P to another thread when a call spans one of
// its ticks (20 µs); on a relay most calls wake another task (a pty's
// buffer worker, the peer of a loopback socket) and are preempted, so most
// calls were handed off, at the price of futex wake-ups, context switches
// and a monitor that never slows down. A call on a non-blocking descriptor
// does not block, and need not say so. Measured on attach+share: CPU per
// MiB 14.0 -> 9.9 ms (device to program) and 10.5 -> 7.3 ms (program to
// device).
//
// Only descriptors in non-blocking mode take that path: a blocking one
// (New checks) uses the plain Read and Write it was given.
package fdio
