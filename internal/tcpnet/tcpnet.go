// Package tcpnet holds what sertun's TCP listeners share: the network to
// listen on for an address as the user wrote it.
package tcpnet

import "net"

// Network is the network for net.Listen that keeps to the address's own
// family: "0.0.0.0:7000" listens on IPv4 only, "[::]:7000" on IPv6 only
// (plain "tcp" would make 0.0.0.0 a dual-stack socket, serving IPv6 that
// nobody asked for). Host names and an empty host keep "tcp".
func Network(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "tcp"
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return "tcp"
	case ip.To4() != nil:
		return "tcp4"
	}
	return "tcp6"
}
