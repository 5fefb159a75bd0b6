// Package tcpnet holds what sertun's TCP listeners share: the network to
// listen on for an address as the user wrote it.
package tcpnet

import "net"

// Network is the network for net.Listen: "tcp4" for an IPv4 address, so
// that 0.0.0.0 means all IPv4 addresses (plain "tcp" makes it a dual-stack
// socket, serving IPv6 that nobody asked for); "tcp" otherwise, so that
// [::] serves both families, as on most Linux servers.
func Network(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "tcp"
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		return "tcp4"
	}
	return "tcp"
}
