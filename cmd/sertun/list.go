package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/sertun/sertun/serialdev"
)

func listCommand() *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list the serial ports of this machine, with their USB identities",
		ArgsUsage: " ",
		Description: `Lists every serial port with, for USB devices, its vendor and product ids
(VID:PID), serial number, manufacturer and product. Any of the names can be
given to "sertun share" as DEVICE.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array instead of a table"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("list takes no arguments, got %q", c.Args().First())
			}
			ports, err := serialdev.List()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return writeJSON(c.App.Writer, ports)
			}
			return writeTable(c.App.Writer, ports)
		},
	}
}

func writeJSON(w io.Writer, ports []serialdev.Info) error {
	if ports == nil {
		ports = []serialdev.Info{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(ports)
}

func writeTable(w io.Writer, ports []serialdev.Info) error {
	if len(ports) == 0 {
		_, err := fmt.Fprintln(w, "no serial ports found")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tVID:PID\tSERIAL\tMANUFACTURER\tPRODUCT")
	for _, p := range ports {
		id := "-"
		if p.IsUSB || p.VID != "" || p.PID != "" {
			id = orDash(p.VID) + ":" + orDash(p.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Name, id, orDash(p.SerialNumber), orDash(p.Manufacturer), orDash(p.Product))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
