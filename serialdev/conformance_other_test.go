//go:build !linux

package serialdev

func osTransports() []transport { return nil }
