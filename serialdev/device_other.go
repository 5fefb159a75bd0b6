//go:build !linux && !darwin && !windows

package serialdev

func openDevice(name string) (Port, error) { return nil, errUnsupportedOS("open", name) }

func statDevice(name string) error { return errUnsupportedOS("stat", name) }

func listPorts() ([]Info, error) { return nil, errUnsupportedOS("list", "ports") }
