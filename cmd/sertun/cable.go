package main

import (
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/sertun/sertun/pty"
)

func cableCommand() *cli.Command {
	return &cli.Command{
		Name:      "cable",
		Usage:     "a virtual null-modem cable: two linked ptys, optionally slow and noisy",
		ArgsUsage: "PATH_A PATH_B",
		Description: `Creates two pseudo-terminals, with symlinks at PATH_A and PATH_B, joined like a
null-modem cable: what a program writes to one, the program on the other
reads. For trying sertun tunnel (or anything serial) without hardware.

--baud limits each direction to baud/10 bytes per second (8N1), delivered
smoothly as a UART would; --ber flips bits at that rate (1e-5 is a poor
line, 1e-4 a bad one). Runs until interrupted; the links are removed.

Example:
   sertun cable /tmp/ttyA /tmp/ttyB --baud 115200 --ber 1e-5`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "baud", Usage: "line rate in bits per second (0: as fast as the ptys go)"},
			&cli.StringFlag{Name: "ber", Value: "0", Usage: "bit error rate, e.g. 1e-5"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("cable takes two paths, PATH_A and PATH_B, got %d arguments (run \"sertun cable --help\")", c.NArg())
			}
			ber, err := strconv.ParseFloat(c.String("ber"), 64)
			if err != nil || ber < 0 || ber >= 1 {
				return fmt.Errorf("--ber %q: want a bit error rate from 0 to 1, such as 1e-5", c.String("ber"))
			}
			if c.Int("baud") < 0 {
				return fmt.Errorf("--baud %d: want a positive line rate, or 0 for no limit", c.Int("baud"))
			}
			return pty.RunCable(c.Context, c.Args().Get(0), c.Args().Get(1), pty.CableConfig{
				Baud:   c.Int("baud"),
				BER:    ber,
				Logger: logger(c),
			})
		},
	}
}
