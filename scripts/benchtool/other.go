//go:build !linux

// Command benchtool is the bench of scripts/bench.sh; it needs Linux
// (ptys, /proc).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "benchtool: Linux only (it reads /proc and plays the device on a pty)")
	os.Exit(1)
}
