package rfc2217

import (
	"fmt"
	"testing"
)

func TestCommandString(t *testing.T) {
	tests := []struct {
		cmd  Command
		want string
	}{
		{&SetBaudRate{}, "SET-BAUDRATE ask"},
		{&SetBaudRate{Baud: 115200}, "SET-BAUDRATE 115200"},
		{&SetParity{Parity: ParityEven}, "SET-PARITY even"},
		{&SetParity{Parity: 77}, "SET-PARITY 77"},
		{&SetStopSize{Stop: Stop1Half}, "SET-STOPSIZE 1.5"},
		{&SetControl{Value: CtlRTSOn}, "SET-CONTROL RTS on"},
		{&SetControl{Value: CtlInFlowHardware}, "SET-CONTROL inbound flow RTS/CTS"},
		{&NotifyModemState{State: ModemCTS | ModemDSR | ModemDCD}, "NOTIFY-MODEMSTATE CTS DSR DCD"},
		{&NotifyLineState{}, "NOTIFY-LINESTATE none"},
		{&PurgeData{Which: PurgeBoth}, "PURGE-DATA both"},
		{&Signature{Text: "sertun"}, `SIGNATURE "sertun"`},
		{&FlowControlSuspend{}, "FLOWCONTROL-SUSPEND"},
	}
	for _, tt := range tests {
		if got := fmt.Sprint(tt.cmd); got != tt.want {
			t.Errorf("%T: %q, want %q", tt.cmd, got, tt.want)
		}
	}
	if got := optionName(OptComPort) + " " + telnetCommandName(NOP) + " " + telnetCommandName(IAC); got != "COM-PORT-OPTION NOP IAC" {
		t.Errorf("names: %q", got)
	}
}
