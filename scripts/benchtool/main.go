//go:build linux

// Command benchtool measures sertun against the tools people use today
// (ser2net, socat, gensiot) on the same device end: a pty pair it holds,
// playing the device on the master. scripts/bench.sh builds and runs it;
// each subcommand prints one section of the bench as a table of medians
// with min and max over the runs, and ratios to the references.
//
//	benchtool share  [flags]   sertun share vs ser2net defaults/tuned vs socat
//	benchtool attach [flags]   program -> attach -> share -> device, vs gensiot and socat ptys
//	benchtool tunnel [flags]   sertun tunnel over sertun cable vs a bare socat relay
//
// Everything binds to 127.0.0.1; every process it starts dies with it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type env struct {
	sertun  string // sertun binary; "" = not available
	why     string // why sertun is not available
	alt     string // a second sertun binary to compare (a column "sertun-alt")
	runs    int
	window  time.Duration // bulk transfer length per direction per run
	rtts    int           // most round trips per latency run
	rttCap  time.Duration // a latency run stops after this long
	clients int           // clients for the per-client memory figure
	tmp     string
	verbose bool
	quick   bool   // shorter runs, for a smoke test
	only    string // measure only the column(s) whose name contains this
	reaper  *reaper
}

func (e *env) logf(format string, a ...any) {
	if e.verbose {
		fmt.Fprintf(os.Stderr, format+"\n", a...)
	}
}

// inTurn returns xs rotated by run: the relays take turns going first, so
// that whatever the first of a run meets (the last run's processes still
// winding down, the kernel's workers placed for another relay) falls on
// each of them alike.
func inTurn[T any](xs []T, run int) []T {
	if len(xs) == 0 {
		return xs
	}
	k := run % len(xs)
	return append(append([]T(nil), xs[k:]...), xs[:k]...)
}

// skip says whether column name is filtered out by -only.
func (e *env) skip(name string) bool {
	if e.only == "" {
		return false
	}
	for _, w := range strings.Split(e.only, ",") {
		if w != "" && strings.Contains(name, w) {
			return false
		}
	}
	return true
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool share|attach|tunnel [flags]")
		os.Exit(2)
	}
	sub := os.Args[1]
	fs := flag.NewFlagSet(sub, flag.ExitOnError)
	e := env{reaper: &reaper{}}
	fs.StringVar(&e.sertun, "sertun", "", "sertun binary (empty: sertun columns show n/a)")
	fs.StringVar(&e.alt, "sertun-alt", "", "a second sertun binary, measured as column sertun-alt (to A/B a change)")
	fs.StringVar(&e.why, "sertun-missing", "not built", "reason shown when -sertun is empty")
	fs.IntVar(&e.runs, "runs", 5, "runs per figure")
	fs.DurationVar(&e.window, "window", 1500*time.Millisecond, "bulk transfer time per direction per run")
	fs.IntVar(&e.rtts, "rtts", 200000, "most 1-byte round trips per latency run")
	fs.DurationVar(&e.rttCap, "rtt-cap", 1500*time.Millisecond, "stop a latency run after this long (at least 70 round trips); with -rtts high, each run lasts this long")
	fs.IntVar(&e.clients, "clients", 10, "clients for the per-client memory figure")
	fs.BoolVar(&e.verbose, "v", false, "log progress to stderr")
	fs.StringVar(&e.only, "only", "", "measure only columns whose name contains one of these comma-separated words (e.g. sertun,tuned)")
	fs.BoolVar(&e.quick, "quick", false, "shorter runs (smoke test, not for numbers)")
	tunnelOpts := addTunnelFlags(fs)
	fs.Parse(os.Args[2:])
	dir, err := os.MkdirTemp("", "sertun-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
	e.tmp = dir
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		e.reaper.killAll()
		os.RemoveAll(dir)
		fmt.Fprintf(os.Stderr, "benchtool: %v: stopped everything\n", s)
		os.Exit(1)
	}()
	defer e.reaper.killAll()
	defer os.RemoveAll(dir)
	switch sub {
	case "share":
		err = benchShare(&e)
	case "attach":
		err = benchAttach(&e)
	case "tunnel":
		err = benchTunnel(&e, tunnelOpts)
	default:
		err = fmt.Errorf("unknown section %q", sub)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
}
