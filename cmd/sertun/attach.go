package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/sertun/sertun/pty"
	"github.com/sertun/sertun/rfc2217"
	"github.com/sertun/sertun/serialdev"
)

func attachCommand() *cli.Command {
	return &cli.Command{
		Name:      "attach",
		Usage:     "make a remote RFC 2217 port a local virtual serial port",
		ArgsUsage: "[rfc2217://]HOST:PORT",
		Description: `Connects to a port shared over RFC 2217 (sertun share, ser2net, hub4com,
pyserial's rfc2217_server) and makes it a local serial port that any program
can open: on Linux and macOS a pty with a stable symlink (--link), on Windows
the hidden end of a com0com pair (--link CNCB0; the program opens the other
end, COMx).

The program's baud rate, stop bits and flow control reach the remote port as
it sets them, and its flushes become purges there. A pty has no modem lines
and, on Linux, always runs 8 data bits without parity, so:
  --data and --parity fix those on the remote port (else the remote keeps
  its own); --dtr and --rts drive the remote's lines: follow (the default)
  raises them while a program has the port open, like a real port.

If the server goes away, the virtual port stays and attach reconnects (every
5 s at most), then sets the program's settings and lines again; meanwhile the
program's writes wait. The link is removed when attach exits.

Examples:
   sertun attach 192.168.1.20:7000 --link /tmp/ttyREMOTE
   sertun attach rfc2217://pi:2217 --link ~/dev/gps --data 7 --parity even
   sertun attach server:7000 --link CNCB0          (Windows, com0com)`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "link", Usage: "symlink to create for the pty (Windows: the com0com port to bind, such as CNCB0)"},
			&cli.StringFlag{Name: "data", Usage: "force data bits on the remote port: 5, 6, 7 or 8 (default: the remote's own)"},
			&cli.StringFlag{Name: "parity", Usage: "force parity on the remote port: none, odd, even, mark or space (default: the remote's own)"},
			&cli.StringFlag{Name: "dtr", Value: "follow", Usage: "remote DTR: on, off, or follow (raised while a program has the port open)"},
			&cli.StringFlag{Name: "rts", Value: "follow", Usage: "remote RTS: on, off, or follow (raised while a program has the port open)"},
		},
		Action: runAttach,
	}
}

// attachSetup is what runAttach needs, parsed from the command line.
type attachSetup struct {
	addr   string
	link   string
	bridge pty.BridgeConfig
}

func parseAttach(c *cli.Context) (attachSetup, error) {
	var setup attachSetup
	if c.NArg() != 1 {
		return setup, errors.New("attach: want one HOST:PORT (usage: sertun attach [flags] HOST:PORT --link PATH)")
	}
	addr, err := parseRemote(c.Args().First())
	if err != nil {
		return setup, err
	}
	setup.addr = addr
	setup.link = c.String("link")
	if setup.link == "" && runtime.GOOS == "windows" {
		return setup, errors.New("attach: --link is required on Windows: the com0com port to bind, such as CNCB0")
	}
	if c.IsSet("data") || c.IsSet("parity") {
		data, parity := c.String("data"), c.String("parity")
		if data == "" {
			data = "8"
		}
		if parity == "" {
			parity = "none"
		}
		s, err := parseSettings("9600", data, parity, "1", "none")
		if err != nil {
			return setup, err
		}
		if c.IsSet("data") {
			setup.bridge.DataBits = s.DataBits
		}
		if c.IsSet("parity") {
			setup.bridge.Parity = &s.Parity
		}
	}
	if setup.bridge.DTR, err = pty.ParseLineMode(c.String("dtr")); err != nil {
		return setup, fmt.Errorf("--dtr %q: want on, off or follow", c.String("dtr"))
	}
	if setup.bridge.RTS, err = pty.ParseLineMode(c.String("rts")); err != nil {
		return setup, fmt.Errorf("--rts %q: want on, off or follow", c.String("rts"))
	}
	return setup, nil
}

// parseRemote reads [rfc2217://]HOST:PORT; a missing host is 127.0.0.1.
func parseRemote(s string) (string, error) {
	hostport := s
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		if !strings.EqualFold(scheme, "rfc2217") {
			return "", fmt.Errorf("attach: %q: unknown scheme %q (want HOST:PORT or rfc2217://HOST:PORT)", s, scheme)
		}
		hostport = rest
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("attach: %q: want HOST:PORT, such as 192.168.1.20:7000", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("attach: %q: port %q is not a number from 1 to 65535", s, port)
	}
	if host == "" {
		host = defaultHost
	}
	return net.JoinHostPort(host, port), nil
}

func runAttach(c *cli.Context) error {
	setup, err := parseAttach(c)
	if err != nil {
		return err
	}
	log := logger(c).With("remote", setup.addr)
	setup.bridge.Logger = log
	dial := func(ctx context.Context) (serialdev.Port, error) {
		return rfc2217.Dial(ctx, setup.addr, rfc2217.ClientConfig{Logger: log})
	}
	// The first connection is made before the virtual port exists, so that
	// a wrong address fails at once with a clear error.
	first, err := dial(c.Context)
	if err != nil {
		if c.Context.Err() != nil {
			return nil
		}
		return err
	}
	s, _ := first.Settings()
	var initial *serialdev.Settings
	if s.Validate() == nil {
		initial = &s
	}
	v, err := pty.OpenVirtual(setup.link, initial)
	if err != nil {
		first.Close()
		return err
	}
	defer v.Close()
	log.Info(fmt.Sprintf("attached %s to rfc2217://%s", v, setup.addr),
		"settings", s.String(), "dtr", setup.bridge.DTR, "rts", setup.bridge.RTS)
	err = pty.Bridge(c.Context, v, first, dial, setup.bridge)
	if cerr := v.Close(); err == nil && cerr != nil {
		err = cerr
	}
	log.Info("detached", "link", setup.link)
	return err
}
