package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// version is set when a release is linked:
//
//	go build -ldflags "-X main.version=v1.2.0" ./cmd/sertun
//
// Without it, the module version that "go install ...@v1.2.0" records is
// used, else "devel".
var version string

// sertunVersion is the version sertun reports, also in the RFC 2217
// SIGNATURE answer.
func sertunVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "devel-" + s.Value[:12]
		}
	}
	return "devel"
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:      "version",
		Usage:     "print sertun's version",
		ArgsUsage: " ",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return fmt.Errorf("version takes no arguments")
			}
			return printVersion(c.App.Writer)
		},
	}
}

func printVersion(w io.Writer) error {
	_, err := fmt.Fprintf(w, "sertun %s (%s %s/%s)\n", sertunVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
