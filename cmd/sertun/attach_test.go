package main

import (
	"strings"
	"testing"
)

func TestParseRemote(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"127.0.0.1:7000", "127.0.0.1:7000", ""},
		{"rfc2217://pi:2217", "pi:2217", ""},
		{"RFC2217://[::1]:7000", "[::1]:7000", ""},
		{":7000", "127.0.0.1:7000", ""},
		{"telnet://pi:23", "", "unknown scheme"},
		{"pi", "", "want HOST:PORT"},
		{"pi:0", "", "not a number from 1 to 65535"},
		{"pi:http", "", "not a number"},
	}
	for _, tt := range tests {
		got, err := parseRemote(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseRemote(%q) = %q, %v; want error with %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseRemote(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestAttachUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"attach"}, "want one HOST:PORT"},
		{[]string{"attach", "a:1", "b:2"}, "want one HOST:PORT"},
		{[]string{"attach", "127.0.0.1:1", "--dtr", "high"}, `--dtr "high"`},
		{[]string{"attach", "127.0.0.1:1", "--rts", "x"}, `--rts "x"`},
		{[]string{"attach", "127.0.0.1:1", "--data", "9"}, "--data"},
		{[]string{"attach", "127.0.0.1:1", "--parity", "sometimes"}, "--parity"},
	}
	for _, tt := range tests {
		_, _, err := runCLI(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("sertun %s: %v, want an error with %q", strings.Join(tt.args, " "), err, tt.want)
		}
	}
}
