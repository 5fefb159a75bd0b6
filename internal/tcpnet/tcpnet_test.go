package tcpnet

import "testing"

func TestNetwork(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"0.0.0.0:7000", "tcp4"},
		{"127.0.0.1:7000", "tcp4"},
		{"[::]:7000", "tcp"},
		{"[::1]:7000", "tcp"},
		{"localhost:7000", "tcp"},
		{":7000", "tcp"},
		{"nonsense", "tcp"},
	}
	for _, tt := range tests {
		if got := Network(tt.addr); got != tt.want {
			t.Errorf("Network(%q) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}
