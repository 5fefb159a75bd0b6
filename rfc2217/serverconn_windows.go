package rfc2217

import "net"

// rawWriter: Windows sockets have no non-blocking write through RawConn
// here, so device data always goes through the writer's queue.
type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) tryWrite([]byte) int { return 0 }
