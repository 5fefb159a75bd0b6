package serialdev

import (
	"errors"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	cases := []struct {
		name string
		path string
		loop bool
		err  error  // sentinel, or nil
		text string // in the error
	}{
		{"loop://", "", true, nil, ""},
		{"LOOP://", "", true, nil, ""},
		{"/dev/ttyUSB0", "/dev/ttyUSB0", false, nil, ""},
		{"COM3", "COM3", false, nil, ""},
		{`\\.\COM12`, `\\.\COM12`, false, nil, ""},
		{"loop://x", "", false, nil, "takes no host"},
		{"rfc2217://host:2217", "", false, ErrUnknownScheme, `"rfc2217"`},
		{"foo://bar", "", false, ErrUnknownScheme, "loop://"},
		{"", "", false, nil, "empty port name"},
	}
	for _, c := range cases {
		path, loop, err := parseName("open", c.name)
		if c.text == "" {
			if err != nil || path != c.path || loop != c.loop {
				t.Errorf("%q: %q, %v, %v; want %q, %v", c.name, path, loop, err, c.path, c.loop)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.text) || (c.err != nil && !errors.Is(err, c.err)) {
			t.Errorf("%q: error %v, want %v saying %q", c.name, err, c.err, c.text)
		}
	}
}

func TestOpenLoopAndStat(t *testing.T) {
	p, err := Open("loop://")
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	if err := Stat("loop://"); err != nil {
		t.Errorf("Stat(loop://) = %v", err)
	}
	if err := Stat("rfc2217://h:1"); !errors.Is(err, ErrUnknownScheme) {
		t.Errorf("Stat(rfc2217://h:1) = %v", err)
	}
}

func TestList(t *testing.T) {
	ports, err := List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if ports == nil {
		t.Error("List gave nil, want an empty list")
	}
	for _, p := range ports {
		if err := Stat(p.Name); err != nil {
			t.Errorf("listed %s but Stat says %v", p.Name, err)
		}
	}
}

func TestPortLess(t *testing.T) {
	in := []string{"/dev/ttyUSB10", "/dev/ttyACM0", "/dev/ttyUSB2", "/dev/ttyS0", "/dev/ttyUSB0"}
	want := []string{"/dev/ttyACM0", "/dev/ttyS0", "/dev/ttyUSB0", "/dev/ttyUSB2", "/dev/ttyUSB10"}
	got := append([]string(nil), in...)
	for i := range got {
		for j := i + 1; j < len(got); j++ {
			if portLess(got[j], got[i]) {
				got[i], got[j] = got[j], got[i]
			}
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("order %v, want %v", got, want)
	}
}
