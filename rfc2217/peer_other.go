//go:build !unix

package rfc2217

import "net"

// peerStateOf cannot tell here: a client gone while its data waits for
// the device is noticed when the device takes the data.
func peerStateOf(net.Conn) peerState { return peerOpen }
