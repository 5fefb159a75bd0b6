package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/sertun/sertun/serialdev"
	"github.com/sertun/sertun/tunnel"
)

func tunnelCommand() *cli.Command {
	return &cli.Command{
		Name:      "tunnel",
		Usage:     "carry TCP connections over a serial line (run it on both ends)",
		ArgsUsage: "DEVICE",
		Description: `Runs one end of a tunnel over the serial line DEVICE; run the same command
on the machine at the other end of the cable. Many TCP connections share the
line, each with its own flow control; frames carry a CRC-32C and are sent
again when the line corrupts or drops them. The ends can start in any order;
if the cable is out, connections wait (up to --max-outage); if the device
disappears (a USB adapter unplugged), sertun opens it again.

  -L [BIND:]PORT:HOST:HOSTPORT   this side listens on BIND:PORT, the far side
                                 connects to HOST:HOSTPORT
  -L [BIND:]PORT                 the same, to the far side's only --permit target
  -R [BIND:]PORT:HOST:HOSTPORT   the far side listens, this side connects
  -D [BIND:]PORT                 a SOCKS5 proxy here; the far side connects
  --permit HOST:PORT|any         targets this side connects to for the far side
                                 (none by default)

BIND defaults to 127.0.0.1. DEVICE is a path (/dev/ttyUSB0, COM3) or
rfc2217://HOST:PORT. The line runs raw at --baud, 8N1; give both ends the
same --baud, the real rate of the line: frames are sized and paced by it.
On a pty without --baud, the rate set on the pty is taken (sertun cable
--baud sets it), or 4000000 where nobody set one (a socat pty pair).

Examples:
   far:  sertun tunnel /dev/ttyUSB0 --permit 127.0.0.1:22
   near: sertun tunnel /dev/ttyUSB0 -L 2222        # then: ssh -p 2222 localhost
   near: sertun tunnel /dev/ttyUSB0 -L 8080:10.0.0.5:80 -D 1080 --baud 460800`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "L", Usage: "local forward [BIND:]PORT[:HOST:HOSTPORT]"},
			&cli.StringSliceFlag{Name: "R", Usage: "remote forward [BIND:]PORT:HOST:HOSTPORT"},
			&cli.StringSliceFlag{Name: "D", Usage: "SOCKS5 proxy on [BIND:]PORT"},
			&cli.StringSliceFlag{Name: "permit", Usage: "HOST:PORT this side connects to for the far side, or any"},
			&cli.IntFlag{Name: "baud", Value: tunnel.DefaultBaud, Usage: "line rate in bits per second (8N1); on a pty without --baud, the rate set on the pty"},
			&cli.DurationFlag{Name: "max-outage", Value: tunnel.DefaultMaxOutage, Usage: "how long connections wait for a cable that is out"},
			&cli.DurationFlag{Name: "stats", Usage: "log goodput, retransmissions and CRC errors at this interval (e.g. 10s)"},
		},
		Action: runTunnel,
	}
}

func runTunnel(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("tunnel takes one DEVICE, got %d arguments (run \"sertun tunnel --help\")", c.NArg())
	}
	device := c.Args().First()
	baud := c.Int("baud")
	if !c.IsSet("baud") && isPty(device) {
		baud = ptyBaud(c, device, baud)
	}
	if baud < 50 || baud > 100_000_000 {
		return fmt.Errorf("--baud %d: want a line rate from 50 to 100000000", baud)
	}
	if d := c.Duration("max-outage"); d <= 0 {
		return fmt.Errorf("--max-outage %v: want a positive duration such as 10m", d)
	}
	if d := c.Duration("stats"); d < 0 {
		return fmt.Errorf("--stats %v: want an interval such as 10s", d)
	}
	cfg := tunnel.Config{
		Device:    device,
		Baud:      baud,
		MaxOutage: c.Duration("max-outage"),
		Permit:    c.StringSlice("permit"),
		Stats:     c.Duration("stats"),
		Logger:    logger(c),
	}
	for _, spec := range c.StringSlice("L") {
		fw, err := tunnel.ParseForward(spec, true)
		if err != nil {
			return fmt.Errorf("-L: %w", err)
		}
		cfg.Local = append(cfg.Local, fw)
	}
	for _, spec := range c.StringSlice("R") {
		fw, err := tunnel.ParseForward(spec, false)
		if err != nil {
			return fmt.Errorf("-R: %w", err)
		}
		cfg.Remote = append(cfg.Remote, fw)
	}
	for _, spec := range c.StringSlice("D") {
		addr, err := tunnel.ParseListen(spec)
		if err != nil {
			return fmt.Errorf("-D: %w", err)
		}
		cfg.SOCKS = append(cfg.SOCKS, addr)
	}
	// After the flags, so that a bad flag is reported as such even where
	// the device is not plugged in yet.
	if err := statPort(device); err != nil {
		return err
	}
	cfg.Open = func(ctx context.Context) (tunnel.Line, error) {
		p, err := openPort(ctx, device)
		if err != nil {
			return nil, err
		}
		s := serialdev.Settings{BaudRate: baud, DataBits: 8}
		if err := p.SetSettings(s); err != nil {
			p.Close()
			return nil, fmt.Errorf("%s: setting %v: %w", device, s, err)
		}
		return p, nil
	}
	return tunnel.Run(c.Context, cfg)
}

// isPty reports whether device is, or links to, a Unix pty slave.
func isPty(device string) bool {
	p, err := filepath.EvalSymlinks(device)
	return err == nil && strings.HasPrefix(p, "/dev/pts/")
}

// ptyRate is the line rate taken for a pty whose rate nobody set: a pty
// pair has no speed limit, and the tunnel paces itself at the rate.
const ptyRate = 4_000_000

// ptyBaud is the line rate of a pty when --baud is not given: the rate set
// on it (sertun cable --baud sets its rate on both ends), or ptyRate when
// it still has the rate Linux gives every new pty, 38400, which nobody
// sets on purpose on a pty.
func ptyBaud(c *cli.Context, device string, def int) int {
	p, err := serialdev.Open(device)
	if err != nil {
		return def // the tunnel's own open reports it
	}
	s, err := p.Settings()
	p.Close()
	if err != nil {
		return def
	}
	baud := s.BaudRate
	if baud == 38400 {
		baud = ptyRate
	}
	logger(c).Info("the device is a pty: pacing at its rate; give --baud to both ends to set another", "device", device, "baud", baud)
	return baud
}
