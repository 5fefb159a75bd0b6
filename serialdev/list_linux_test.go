package serialdev

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestListSysfs lists a made-up sysfs: a USB-serial adapter, a CDC ACM
// board that names only its interface, a real UART, an empty UART slot,
// a virtual console, and a port whose /dev node is missing.
func TestListSysfs(t *testing.T) {
	root := t.TempDir()
	sys := filepath.Join(root, "sys")
	class := filepath.Join(sys, "class", "tty")
	dev := filepath.Join(root, "dev")
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, path string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
	}
	// tty adds a class entry for name whose device is devDir (relative to
	// sys/devices), or none when devDir is "".
	tty := func(name, devDir string, attrs map[string]string, node bool) {
		ttyDir := filepath.Join(sys, "devices", "virtual", "tty", name)
		if devDir != "" {
			ttyDir = filepath.Join(sys, "devices", devDir, "tty", name)
			link(filepath.Join(sys, "devices", devDir), filepath.Join(ttyDir, "device"))
		}
		write(filepath.Join(ttyDir, "dev"), "4:64\n")
		for k, v := range attrs {
			write(filepath.Join(ttyDir, k), v)
		}
		link(ttyDir, filepath.Join(class, name))
		if node {
			write(filepath.Join(dev, name), "")
		}
	}
	usb := filepath.Join(sys, "devices", "pci0000:00", "usb1")
	write(filepath.Join(usb, "1-1", "idVendor"), "0403\n")
	write(filepath.Join(usb, "1-1", "idProduct"), "6001\n")
	write(filepath.Join(usb, "1-1", "serial"), "A10KXYZ\n")
	write(filepath.Join(usb, "1-1", "manufacturer"), "FTDI\n")
	write(filepath.Join(usb, "1-1", "product"), "FT232R USB UART\n")
	write(filepath.Join(usb, "1-2", "idVendor"), "2e8a\n")
	write(filepath.Join(usb, "1-2", "idProduct"), "000a\n")
	write(filepath.Join(usb, "1-2", "1-2:1.0", "interface"), "Board CDC\n")

	tty("ttyUSB0", "pci0000:00/usb1/1-1/1-1:1.0/ttyUSB0", nil, true)
	tty("ttyACM0", "pci0000:00/usb1/1-2/1-2:1.0", nil, true)
	tty("ttyS0", "platform/serial8250/serial8250:0.0", map[string]string{"type": "4\n"}, true)
	tty("ttyS1", "platform/serial8250/serial8250:0.1", map[string]string{"type": "0\n"}, true)
	tty("tty0", "", nil, true)
	tty("ttyUSB1", "pci0000:00/usb1/1-1/1-1:1.0/ttyUSB1", nil, false)

	got, err := listSysfs(class, dev)
	if err != nil {
		t.Fatal(err)
	}
	want := []Info{
		{Name: filepath.Join(dev, "ttyACM0"), IsUSB: true, VID: "2E8A", PID: "000A", Product: "Board CDC"},
		{Name: filepath.Join(dev, "ttyS0")},
		{Name: filepath.Join(dev, "ttyUSB0"), IsUSB: true, VID: "0403", PID: "6001",
			SerialNumber: "A10KXYZ", Manufacturer: "FTDI", Product: "FT232R USB UART"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("listed\n%+v\nwant\n%+v", got, want)
	}

	if got, err := listSysfs(filepath.Join(root, "none"), dev); err != nil || len(got) != 0 {
		t.Errorf("no sysfs: %v, %v; want an empty list", got, err)
	}
}
