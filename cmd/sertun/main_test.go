package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/sertun/sertun/serialdev"
)

func TestHoistFlags(t *testing.T) {
	app := newApp(nil, nil)
	tests := []struct {
		in, want string
	}{
		{"sertun", "sertun"},
		{"sertun share loop://", "sertun share -- loop://"},
		{"sertun share --baud 115200 loop:// :7000", "sertun share --baud 115200 -- loop:// :7000"},
		{"sertun share loop:// :7000 --baud 115200 --shared", "sertun share --baud 115200 --shared -- loop:// :7000"},
		{"sertun share loop:// --baud=115200 :7000", "sertun share --baud=115200 -- loop:// :7000"},
		{"sertun share loop:// -v", "sertun -v share -- loop://"},
		{"sertun -v share loop://", "sertun -v share -- loop://"},
		{"sertun share loop:// -- --baud", "sertun share -- loop:// --baud"},
		{"sertun share loop:// --nope x", "sertun share --nope -- loop:// x"},
		{"sertun share loop:// --baud", "sertun share --baud"},
		{"sertun attach 127.0.0.1:7000 --link", "sertun attach --link"},
		{"sertun share loop:// -h", "sertun share -h -- loop://"},
		{"sertun nope --baud 1 x", "sertun nope --baud 1 x"},
		{"sertun -v", "sertun -v"},
		{"sertun list --json", "sertun list --json"},
	}
	for _, tt := range tests {
		got := strings.Join(hoistFlags(app, strings.Fields(tt.in)), " ")
		if got != tt.want {
			t.Errorf("hoistFlags(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// runCLI runs the command line as main would, in process.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errw bytes.Buffer
	err = run(context.Background(), append([]string{"sertun"}, args...), &out, &errw)
	return out.String(), errw.String(), err
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"nope"}, `unknown command "nope" (run "sertun --help"`},
		{[]string{"--nope"}, `flag provided but not defined: -nope (run "sertun --help")`},
		{[]string{"share", "--nope", "loop://"}, `flag provided but not defined: -nope (run "sertun share --help")`},
		{[]string{"share"}, "share: missing DEVICE"},
		{[]string{"share", "loop://", "--baud", "fast"}, `--baud "fast"`},
		{[]string{"share", "loop://", "--stop", "3"}, `--stop "3"`},
		{[]string{"share", "loop://", "ftp://127.0.0.1:1"}, `unknown scheme "ftp"`},
		{[]string{"share", "--kick-old", "--shared", "loop://"}, "--kick-old and --shared cannot be used together"},
		{[]string{"list", "extra"}, "list takes no arguments"},
		{[]string{"version", "extra"}, "version takes no arguments"},
	}
	for _, tt := range tests {
		stdout, stderr, err := runCLI(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("sertun %s: error %v, want one containing %q", strings.Join(tt.args, " "), err, tt.want)
			continue
		}
		if strings.Contains(oneLine(err), "\n") {
			t.Errorf("sertun %s: error on more than one line: %q", strings.Join(tt.args, " "), oneLine(err))
		}
		// Usage errors print no help text around main's one line.
		if stdout != "" || stderr != "" {
			t.Errorf("sertun %s: printed stdout %q stderr %q besides the error", strings.Join(tt.args, " "), stdout, stderr)
		}
	}
}

func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"share", "list", "version", "-v"}},
		{[]string{"--help"}, []string{"share", "list", "version"}},
		{[]string{"share", "--help"}, []string{"DEVICE [LISTEN...]", "--baud", "--kick-old", "0.0.0.0:7000", "127.0.0.1:2217", "raw://"}},
		{[]string{"list", "-h"}, []string{"--json", "VID:PID"}},
	}
	for _, tt := range tests {
		stdout, _, err := runCLI(t, tt.args...)
		if err != nil {
			t.Errorf("sertun %s: %v", strings.Join(tt.args, " "), err)
		}
		for _, w := range tt.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("sertun %s: help does not mention %q:\n%s", strings.Join(tt.args, " "), w, stdout)
			}
		}
	}
}

func TestVersion(t *testing.T) {
	stdout, _, err := runCLI(t, "version")
	if err != nil || !strings.HasPrefix(stdout, "sertun "+sertunVersion()+" (go") {
		t.Errorf("sertun version: %q, %v", stdout, err)
	}
	stdout, _, err = runCLI(t, "--version")
	if err != nil || !strings.Contains(stdout, sertunVersion()) {
		t.Errorf("sertun --version: %q, %v", stdout, err)
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"two\nlines\n", "two; lines"},
		{"  padded  \n", "padded"},
	}
	for _, tt := range tests {
		if got := oneLine(stringError(tt.in)); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

type stringError string

func (e stringError) Error() string { return string(e) }

func TestListOutput(t *testing.T) {
	ports := []serialdev.Info{
		{Name: "/dev/ttyUSB0", IsUSB: true, VID: "0403", PID: "6001", SerialNumber: "A50285BI", Manufacturer: "FTDI", Product: "FT232R USB UART"},
		{Name: "/dev/ttyS0"},
	}
	var b bytes.Buffer
	if err := writeTable(&b, ports); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", b.String())
	}
	wantFields := [][]string{
		{"PORT", "VID:PID", "SERIAL", "MANUFACTURER", "PRODUCT"},
		{"/dev/ttyUSB0", "0403:6001", "A50285BI", "FTDI", "FT232R", "USB", "UART"},
		{"/dev/ttyS0", "-", "-", "-", "-"},
	}
	for i, w := range wantFields {
		if got := strings.Fields(lines[i]); !reflect.DeepEqual(got, w) {
			t.Errorf("line %d = %q, want fields %q", i, lines[i], w)
		}
	}
	// The columns line up.
	if col := strings.Index(lines[0], "VID:PID"); strings.Index(lines[1], "0403") != col || strings.Index(lines[2], "-") != col {
		t.Errorf("columns do not line up:\n%s", b.String())
	}

	b.Reset()
	if err := writeTable(&b, nil); err != nil || b.String() != "no serial ports found\n" {
		t.Errorf("empty table: %q, %v", b.String(), err)
	}

	b.Reset()
	if err := writeJSON(&b, ports); err != nil {
		t.Fatal(err)
	}
	var back []serialdev.Info
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || !reflect.DeepEqual(back, ports) {
		t.Errorf("JSON round trip: %+v, %v\n%s", back, err, b.String())
	}
	b.Reset()
	if err := writeJSON(&b, nil); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Errorf("empty JSON: %q, %v", b.String(), err)
	}
}

func TestIsRelay(t *testing.T) {
	tests := []struct {
		args []string
		want bool
	}{
		{[]string{"sertun", "share", "loop://"}, true},
		{[]string{"sertun", "-v", "attach", "127.0.0.1:7000", "--link", "/tmp/x"}, true},
		{[]string{"sertun", "tunnel", "/dev/ttyUSB0"}, false},
		{[]string{"sertun", "cable", "share"}, false},
		{[]string{"sertun", "--version"}, false},
		{[]string{"sertun"}, false},
	}
	for _, tt := range tests {
		if got := isRelay(tt.args); got != tt.want {
			t.Errorf("isRelay(%q) = %v, want %v", tt.args, got, tt.want)
		}
	}
}
