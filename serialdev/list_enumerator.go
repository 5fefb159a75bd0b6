//go:build windows || (darwin && cgo)

package serialdev

import (
	"sort"

	"go.bug.st/serial/enumerator"
)

func listPorts() ([]Info, error) {
	details, err := enumerator.GetDetailedPortsList()
	if err != nil {
		return nil, err
	}
	ports := make([]Info, 0, len(details))
	for _, d := range details {
		ports = append(ports, Info{
			Name:         d.Name,
			IsUSB:        d.IsUSB,
			VID:          d.VID,
			PID:          d.PID,
			SerialNumber: d.SerialNumber,
			Manufacturer: d.Manufacturer,
			Product:      d.Product,
		})
	}
	sort.Slice(ports, func(i, j int) bool { return portLess(ports[i].Name, ports[j].Name) })
	return ports, nil
}
