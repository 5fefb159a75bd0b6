// Command sertun shares serial ports over the network (RFC 2217), attaches
// to shared ports as local virtual ports, and carries TCP connections over a
// serial line.
//
// The command is a thin layer: flags, wiring and messages. The work is done
// by the packages serialdev, rfc2217, pty and tunnel.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

func main() {
	if os.Getenv("GOMAXPROCS") == "" && isRelay(os.Args) {
		runtime.GOMAXPROCS(1)
	}
	sigs := []os.Signal{os.Interrupt, syscall.SIGTERM}
	if !signal.Ignored(syscall.SIGHUP) {
		// A hang-up (the terminal or ssh session closed) ends us
		// cleanly too, but not under nohup, which asks to ignore it.
		sigs = append(sigs, syscall.SIGHUP)
	}
	ctx, stop := signal.NotifyContext(context.Background(), sigs...)
	go func() {
		// After the first signal, the default action returns: a second
		// Ctrl-C ends a shutdown that hangs. Not at once: a signal often
		// comes twice together (timeout(1) sends it to the command and
		// then to its process group), and that must not kill us before
		// the cleanup (attach's link) is done.
		<-ctx.Done()
		time.Sleep(time.Second)
		stop()
	}()
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sertun: %s\n", oneLine(err))
		os.Exit(1)
	}
}

// isRelay says whether args run share or attach. Their data goes through
// one goroutine at a time, and the kernel (pty workers, loopback TCP)
// needs the other CPUs; with more Ps the runtime wakes and spins extra
// threads at every hand-off. Measured with one P: 10-15% less CPU per MiB,
// more throughput and a shorter 1-byte round trip, in share and in
// attach+share. Tunnel and cable keep the default: they pace a line with
// timers, and one P showed no gain there. GOMAXPROCS=N still overrides.
func isRelay(args []string) bool {
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "-") { // the global flags take no value
			return a == "share" || a == "attach"
		}
	}
	return false
}

// run is main without the process: tests call it with their own arguments
// and writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	app := newApp(stdout, stderr)
	return app.RunContext(ctx, hoistFlags(app, args))
}

const loggerKey = "logger"

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "sertun",
		Usage: "share serial ports over the network, and networks over serial ports",
		Description: `sertun shares a serial port over TCP with RFC 2217 (the telnet Com Port
Control Option spoken by pyserial, ser2net/gensio and hub4com), attaches to
such a port as a local virtual serial port, and carries TCP connections over
a serial cable.

DEVICE is a port URL wherever one is taken: a path (/dev/ttyUSB0, COM3),
loop:// (a built-in loopback plug: data echoes, DTR drives DSR and DCD, RTS
drives CTS) or rfc2217://HOST:PORT (a port shared by another server).`,
		Version: sertunVersion(),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "v", Usage: "log debug messages"},
			// urfave/cli's own version flag takes -v for itself.
			&cli.BoolFlag{Name: "version", Usage: "print the version"},
		},
		HideVersion: true,
		Commands: []*cli.Command{
			shareCommand(),
			attachCommand(),
			tunnelCommand(),
			cableCommand(),
			listCommand(),
			versionCommand(),
		},
		Writer:    stdout,
		ErrWriter: stderr,
		Metadata:  map[string]any{},
		Before: func(c *cli.Context) error {
			level := slog.LevelInfo
			if c.Bool("v") {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(logger)
			c.App.Metadata[loggerKey] = logger
			return nil
		},
		Action: func(c *cli.Context) error {
			if c.Bool("version") {
				return printVersion(c.App.Writer)
			}
			if c.Args().Present() {
				return fmt.Errorf("unknown command %q (run \"sertun --help\" to see the commands)", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		// Errors are printed by main, on one line, and nothing calls os.Exit
		// behind its back.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	app.OnUsageError = usageError
	for _, cmd := range app.Commands {
		if cmd.OnUsageError == nil {
			cmd.OnUsageError = usageError
		}
	}
	return app
}

// usageError turns urfave/cli's flag errors into one line with a pointer to
// the help.
func usageError(c *cli.Context, err error, isSubcommand bool) error {
	name := "sertun"
	if isSubcommand && c.Command != nil {
		name += " " + c.Command.Name
	}
	return fmt.Errorf("%w (run \"%s --help\")", err, name)
}

// logger returns the logger that the -v flag configured.
func logger(c *cli.Context) *slog.Logger {
	if l, ok := c.App.Metadata[loggerKey].(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// hoistFlags lets flags follow the positional arguments, as users type them
// ("sertun share /dev/ttyUSB0 :7000 --baud 115200 -v"): urfave/cli stops at
// the first positional argument, so the command's flags are moved before its
// arguments and global flags given after the command move before it. An
// argument after "--" is never moved.
func hoistFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		n := flagArgs(app.Flags, args[i:])
		out = append(out, args[i:i+n]...)
		i += n
	}
	if i >= len(args) || args[i] == "--" {
		return append(out, args[i:]...)
	}
	cmd := app.Command(args[i])
	if cmd == nil {
		return append(out, args[i:]...)
	}
	var globals, flags, positional []string
	rest := args[i+1:]
	for j := 0; j < len(rest); {
		arg := rest[j]
		switch {
		case arg == "--":
			positional = append(positional, rest[j+1:]...)
			j = len(rest)
		case len(arg) > 1 && strings.HasPrefix(arg, "-"):
			if lookupFlag(cmd.Flags, arg) == nil && lookupFlag(app.Flags, arg) != nil {
				n := flagArgs(app.Flags, rest[j:])
				globals = append(globals, rest[j:j+n]...)
				j += n
				continue
			}
			n := flagArgs(cmd.Flags, rest[j:])
			flags = append(flags, rest[j:j+n]...)
			j += n
			if j == len(rest) && n == 1 && takesValue(cmd.Flags, arg) {
				// A value flag last on the line, with no value: leave it
				// last, so that the parser says it needs one rather than
				// take the "--" before the arguments as its value.
				out = append(out, globals...)
				out = append(out, args[i])
				return append(out, flags...)
			}
		default:
			positional = append(positional, arg)
			j++
		}
	}
	out = append(out, globals...)
	out = append(out, args[i])
	out = append(out, flags...)
	if len(positional) > 0 {
		out = append(out, "--") // so that an argument such as "-" stays one
	}
	return append(out, positional...)
}

// flagArgs says how many arguments the flag at args[0] takes up: two for a
// flag with a value given as a separate argument, else one.
func flagArgs(flags []cli.Flag, args []string) int {
	if strings.Contains(args[0], "=") || len(args) < 2 {
		return 1
	}
	if takesValue(flags, args[0]) {
		return 2
	}
	return 1 // a switch, or unknown: the parser will say so
}

// takesValue reports whether arg names a flag that takes a value and does
// not carry it ("--baud" but not "--baud=9600").
func takesValue(flags []cli.Flag, arg string) bool {
	if strings.Contains(arg, "=") {
		return false
	}
	v, ok := lookupFlag(flags, arg).(cli.DocGenerationFlag)
	return ok && v.TakesValue()
}

func lookupFlag(flags []cli.Flag, arg string) cli.Flag {
	name := strings.TrimLeft(arg, "-")
	if k := strings.IndexByte(name, '='); k >= 0 {
		name = name[:k]
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	for _, n := range cli.HelpFlag.Names() {
		if n == name {
			return cli.HelpFlag
		}
	}
	return nil
}

// oneLine makes sure an error prints on one line.
func oneLine(err error) string {
	s := strings.TrimSpace(err.Error())
	if strings.Contains(s, "\n") {
		s = strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
	}
	return s
}
