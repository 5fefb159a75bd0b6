//go:build darwin && !cgo

package serialdev

import (
	"path/filepath"
	"sort"
)

// listPorts, built without cgo (IOKit, which go.bug.st/serial's enumerator
// uses, needs it), finds the call-out devices by name, without USB ids.
func listPorts() ([]Info, error) {
	names, err := filepath.Glob("/dev/cu.*")
	if err != nil {
		return nil, err
	}
	sort.Slice(names, func(i, j int) bool { return portLess(names[i], names[j]) })
	ports := make([]Info, 0, len(names))
	for _, n := range names {
		ports = append(ports, Info{Name: n})
	}
	return ports, nil
}
