package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/sertun/sertun/rfc2217"
	"github.com/sertun/sertun/serialdev"
)

func TestParseListen(t *testing.T) {
	tests := []struct {
		in       string
		mode     rfc2217.Mode
		addr     string
		hostless bool
		err      string
	}{
		{in: "127.0.0.1:7000", mode: rfc2217.Telnet, addr: "127.0.0.1:7000"},
		{in: "rfc2217://0.0.0.0:7000", mode: rfc2217.Telnet, addr: "0.0.0.0:7000"},
		{in: "RFC2217://[::1]:7000", mode: rfc2217.Telnet, addr: "[::1]:7000"},
		{in: "raw://127.0.0.1:7001", mode: rfc2217.Raw, addr: "127.0.0.1:7001"},
		{in: ":7000", mode: rfc2217.Telnet, addr: "127.0.0.1:7000", hostless: true},
		{in: "7000", mode: rfc2217.Telnet, addr: "127.0.0.1:7000", hostless: true},
		{in: "raw://:7001", mode: rfc2217.Raw, addr: "127.0.0.1:7001", hostless: true},
		{in: "raw://7001", mode: rfc2217.Raw, addr: "127.0.0.1:7001", hostless: true},
		{in: "[::]:7000", mode: rfc2217.Telnet, addr: "[::]:7000"},
		{in: "localhost:0", mode: rfc2217.Telnet, addr: "localhost:0"},
		{in: "ftp://127.0.0.1:7000", err: `unknown scheme "ftp"`},
		{in: "telnet//127.0.0.1:7000", err: "want HOST:PORT"},
		{in: "127.0.0.1", err: "want HOST:PORT"},
		{in: "", err: "want HOST:PORT"},
		{in: "raw://", err: "want HOST:PORT"},
		{in: "127.0.0.1:http", err: `port "http" is not a number`},
		{in: "127.0.0.1:65536", err: `port "65536" is not a number`},
		{in: "127.0.0.1:-1", err: `port "-1"`},
	}
	for _, tt := range tests {
		got, err := parseListen(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseListen(%q) = %+v, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got.mode != tt.mode || got.addr != tt.addr || got.defaultHost != tt.hostless {
			t.Errorf("parseListen(%q) = %+v, %v; want mode %v addr %s hostless %v", tt.in, got, err, tt.mode, tt.addr, tt.hostless)
		}
	}
}

func TestParseSettings(t *testing.T) {
	type flags struct{ baud, data, parity, stop, flow string }
	def := flags{"9600", "8", "none", "1", "none"}
	with := func(f func(*flags)) flags { c := def; f(&c); return c }
	tests := []struct {
		name string
		in   flags
		want string // Settings.String()
		err  string
	}{
		{"defaults", def, "9600 8N1", ""},
		{"odd baud", with(func(f *flags) { f.baud = "250000" }), "250000 8N1", ""},
		{"7E2", with(func(f *flags) { f.data, f.parity, f.stop = "7", "even", "2" }), "9600 7E2", ""},
		{"letters", with(func(f *flags) { f.data, f.parity = "5", "M" }), "9600 5M1", ""},
		{"space", with(func(f *flags) { f.parity = "space" }), "9600 8S1", ""},
		{"odd", with(func(f *flags) { f.parity = "o" }), "9600 8O1", ""},
		{"1.5 stop", with(func(f *flags) { f.data, f.stop = "5", "1.5" }), "9600 5N1.5", ""},
		{"rtscts", with(func(f *flags) { f.flow = "rtscts" }), "9600 8N1 rtscts", ""},
		{"xonxoff", with(func(f *flags) { f.flow = "XONXOFF" }), "9600 8N1 xonxoff", ""},
		{"baud abc", with(func(f *flags) { f.baud = "abc" }), "", `--baud "abc": not a whole number`},
		{"baud 0", with(func(f *flags) { f.baud = "0" }), "", "--baud 0: want a baud rate from 1"},
		{"baud negative", with(func(f *flags) { f.baud = "-5" }), "", "--baud -5"},
		{"baud huge", with(func(f *flags) { f.baud = "100000001" }), "", "--baud 100000001"},
		{"baud past int", with(func(f *flags) { f.baud = "99999999999999999999" }), "", "--baud 99999999999999999999: want a baud rate from 1"},
		{"baud float", with(func(f *flags) { f.baud = "9600.5" }), "", "not a whole number"},
		{"data 9", with(func(f *flags) { f.data = "9" }), "", `--data "9"`},
		{"data empty", with(func(f *flags) { f.data = "" }), "", `--data ""`},
		{"data spaced", with(func(f *flags) { f.data = " 7 " }), "9600 7N1", ""},
		{"parity x", with(func(f *flags) { f.parity = "x" }), "", `--parity "x"`},
		{"stop 3", with(func(f *flags) { f.stop = "3" }), "", `--stop "3"`},
		{"flow dsr", with(func(f *flags) { f.flow = "dsr" }), "", `--flow "dsr"`},
	}
	for _, tt := range tests {
		s, err := parseSettings(tt.in.baud, tt.in.data, tt.in.parity, tt.in.stop, tt.in.flow)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: got %v, %v; want error containing %q", tt.name, s, err, tt.err)
			}
			continue
		}
		if err != nil || s.String() != tt.want {
			t.Errorf("%s: got %v, %v; want %s", tt.name, s, err, tt.want)
		}
		if s.InFlow != s.OutFlow {
			t.Errorf("%s: flow out %v in %v, want the same both ways", tt.name, s.OutFlow, s.InFlow)
		}
	}
}

func TestListenError(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{opErr(syscall.EADDRINUSE), "address already in use (another program"},
		{opErr(syscall.EACCES), "ports below 1024 need root"},
		{opErr(syscall.EADDRNOTAVAIL), "127.0.0.1 is not an address of this machine"},
		{opErr(wsaEADDRINUSE), "address already in use (another program"},
		{errors.New("something else"), "listen on 127.0.0.1:80: something else"},
	}
	for _, tt := range tests {
		if got := listenError("127.0.0.1:80", tt.err).Error(); !strings.Contains(got, tt.want) {
			t.Errorf("listenError(%v) = %q, want it to contain %q", tt.err, got, tt.want)
		}
	}
}

// opErr is what net.Listen returns when bind fails.
func opErr(errno syscall.Errno) error {
	return &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", errno)}
}

func TestPortError(t *testing.T) {
	tests := []struct {
		url  string
		err  error
		want string
	}{
		{"/dev/x", fmt.Errorf("serialdev: open /dev/x: %w", serialdev.ErrNotFound),
			`/dev/x: no such serial port (run "sertun list" to see the ports)`},
		{"foo://x", fmt.Errorf("serialdev: %w", serialdev.ErrUnknownScheme),
			`foo://x: unknown port URL scheme "foo" (want a device path such as /dev/ttyUSB0 or COM3, loop://, or rfc2217://HOST:PORT)`},
		{"/dev/x", fmt.Errorf("serialdev: open /dev/x: %w", serialdev.ErrBusy),
			"/dev/x: port busy (another program has it open)"},
		{"/dev/x", &fs.PathError{Op: "open", Path: "/dev/x", Err: fs.ErrPermission},
			`/dev/x: permission denied (on Linux, add your user to the group that owns the device, often "dialout", and log in again)`},
		{"/dev/x", errors.New("serialdev: open /dev/x: input/output error"), "serialdev: open /dev/x: input/output error"},
	}
	for _, tt := range tests {
		err := portError(tt.url, tt.err)
		if err.Error() != tt.want {
			t.Errorf("portError(%v) = %q, want %q", tt.err, err, tt.want)
		}
		if !errors.Is(err, errors.Unwrap(tt.err)) && errors.Unwrap(tt.err) != nil {
			t.Errorf("portError(%v) lost the sentinel error", tt.err)
		}
	}
}

func TestStatPort(t *testing.T) {
	tests := []struct {
		url  string
		want string // "" = no error
	}{
		{"loop://", ""},
		{"rfc2217://127.0.0.1:7000", ""},
		{"RFC2217://host:7000", ""},
		{"rfc2217://host", "want rfc2217://HOST:PORT"},
		{"/nonexistent/ttyUSB9", `/nonexistent/ttyUSB9: no such serial port (run "sertun list" to see the ports)`},
		{"foo://x", `foo://x: unknown port URL scheme "foo"`},
	}
	for _, tt := range tests {
		err := statPort(tt.url)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("statPort(%q) = %v, want nil", tt.url, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("statPort(%q) = %v, want an error containing %q", tt.url, err, tt.want)
		}
	}
}
