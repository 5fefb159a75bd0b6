package serialdev

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// listPorts reads sysfs. It opens no device: go.bug.st/serial's Linux
// enumerator opens (and reconfigures) every ttyS port to tell placeholders
// from real UARTs, which would disturb a port another program is using;
// sysfs answers the same question through the port's "type".
func listPorts() ([]Info, error) { return listSysfs("/sys/class/tty", "/dev") }

// listSysfs lists the serial ports under a sysfs tty class directory whose
// device nodes live in devDir.
func listSysfs(classDir, devDir string) ([]Info, error) {
	entries, err := os.ReadDir(classDir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ports []Info
	for _, e := range entries {
		name := e.Name()
		dir := filepath.Join(classDir, name)
		// Virtual terminals, ptmx and the console have no device behind them.
		dev, err := filepath.EvalSymlinks(filepath.Join(dir, "device"))
		if err != nil {
			continue
		}
		// A UART slot with no chip behind it (PORT_UNKNOWN).
		if t, err := readAttr(filepath.Join(dir, "type")); err == nil && t == "0" {
			continue
		}
		path := filepath.Join(devDir, name)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		info := Info{Name: path}
		usbInfo(dev, &info)
		ports = append(ports, info)
	}
	sort.Slice(ports, func(i, j int) bool { return portLess(ports[i].Name, ports[j].Name) })
	return ports, nil
}

// usbInfo fills info from the USB device above dev, if there is one: the
// tty's device is the USB interface (cdc_acm) or a child of it (usb-serial).
func usbInfo(dev string, info *Info) {
	var iface string
	for i, d := 0, dev; i < 4 && d != "/" && d != "."; i, d = i+1, filepath.Dir(d) {
		if s, err := readAttr(filepath.Join(d, "interface")); err == nil && iface == "" {
			iface = s
		}
		vid, err := readAttr(filepath.Join(d, "idVendor"))
		if err != nil {
			continue
		}
		pid, _ := readAttr(filepath.Join(d, "idProduct"))
		info.IsUSB = true
		info.VID = strings.ToUpper(vid)
		info.PID = strings.ToUpper(pid)
		info.SerialNumber, _ = readAttr(filepath.Join(d, "serial"))
		info.Manufacturer, _ = readAttr(filepath.Join(d, "manufacturer"))
		info.Product, _ = readAttr(filepath.Join(d, "product"))
		if info.Product == "" {
			info.Product = iface
		}
		return
	}
}

func readAttr(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
