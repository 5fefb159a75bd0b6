package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/sertun/sertun/internal/tcpnet"
	"github.com/sertun/sertun/rfc2217"
	"github.com/sertun/sertun/serialdev"
)

// defaultListen is where share listens when no LISTEN is given: 2217 is the
// port named after the RFC, and loopback keeps the device private until the
// user opens it up.
const defaultListen = "127.0.0.1:2217"

// A bare ":7000" or "7000" listens here, not on every interface: a serial
// console shared with the whole network by accident is worse than a second
// try with 0.0.0.0:7000.
const defaultHost = "127.0.0.1"

func shareCommand() *cli.Command {
	return &cli.Command{
		Name:      "share",
		Usage:     "share a serial port over TCP (RFC 2217, telnet or raw)",
		ArgsUsage: "DEVICE [LISTEN...]",
		Description: `Serves DEVICE to network clients: pyserial's rfc2217:// URLs, ser2net and
gensio (telnet(rfc2217)), hub4com, plain telnet, or raw TCP.

DEVICE is a path (/dev/ttyUSB0, COM3), loop:// (a built-in loopback port) or
rfc2217://HOST:PORT (a port another server shares, passed on).
The device is opened when a client connects and closed when the last one
leaves; if it disappears, the clients are dropped and sertun keeps listening.

LISTEN is [rfc2217://]HOST:PORT (telnet with the RFC 2217 Com Port Control
Option: the client sets baud rate, format, flow control and modem lines) or
raw://HOST:PORT (the data alone, settings from the flags). Give as many as
you like. Without LISTEN, sertun listens on ` + defaultListen + `.
An address without a host (":7000" or "7000") listens on ` + defaultHost + ` only;
write 0.0.0.0:7000 (or [::]:7000) to let other machines connect.

Each client session starts from --baud, --data, --parity, --stop and --flow.
By default one client at a time is served; a second one is told who holds
the port and disconnected. --kick-old hands the port to the newest client
instead, --shared lets every client read and write at once.

Examples:
   sertun share /dev/ttyUSB0 0.0.0.0:7000
   sertun share /dev/ttyUSB0 :7000 raw://:7001 --baud 115200
   sertun share loop:// 127.0.0.1:7000

Connect with pyserial: serial.serial_for_url("rfc2217://HOST:7000", baudrate=115200)
or gensio: gensiot -e -1 'telnet(rfc2217),tcp,HOST,7000'`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "baud", Value: "9600", Usage: "baud rate each session starts with (any whole number the device takes)"},
			&cli.StringFlag{Name: "data", Value: "8", Usage: "data bits: 5, 6, 7 or 8"},
			&cli.StringFlag{Name: "parity", Value: "none", Usage: "parity: none, odd, even, mark or space (or n, o, e, m, s)"},
			&cli.StringFlag{Name: "stop", Value: "1", Usage: "stop bits: 1, 1.5 or 2"},
			&cli.StringFlag{Name: "flow", Value: "none", Usage: "flow control: none, xonxoff or rtscts"},
			&cli.BoolFlag{Name: "kick-old", Usage: "a new client takes the port over from the one connected"},
			&cli.BoolFlag{Name: "shared", Usage: "every client reads and writes the port at once"},
			&cli.StringFlag{Name: "signature", Usage: "the RFC 2217 SIGNATURE answer (default \"sertun VERSION DEVICE\")"},
		},
		Action: runShare,
	}
}

// listenSpec is one parsed LISTEN argument.
type listenSpec struct {
	mode        rfc2217.Mode
	addr        string // host:port for net.Listen
	defaultHost bool   // the user gave no host
}

// parseListen parses [rfc2217://]HOST:PORT, raw://HOST:PORT, :PORT or PORT.
func parseListen(s string) (listenSpec, error) {
	spec := listenSpec{mode: rfc2217.Telnet}
	hostport := s
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		switch strings.ToLower(scheme) {
		case "rfc2217":
			spec.mode = rfc2217.Telnet
		case "raw":
			spec.mode = rfc2217.Raw
		default:
			return spec, fmt.Errorf("listen address %q: unknown scheme %q (want rfc2217://HOST:PORT or raw://HOST:PORT)", s, scheme)
		}
		hostport = rest
	}
	if hostport != "" && strings.Trim(hostport, "0123456789") == "" {
		hostport = ":" + hostport
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || strings.ContainsAny(host, "/ ") {
		return spec, fmt.Errorf("listen address %q: want HOST:PORT, :PORT or PORT", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return spec, fmt.Errorf("listen address %q: port %q is not a number from 0 to 65535", s, port)
	}
	if host == "" {
		host, spec.defaultHost = defaultHost, true
	}
	spec.addr = net.JoinHostPort(host, port)
	return spec, nil
}

// parseSettings reads the settings flags.
func parseSettings(baud, data, parity, stop, flow string) (serialdev.Settings, error) {
	var s serialdev.Settings
	var err error
	if s.BaudRate, err = strconv.Atoi(strings.TrimSpace(baud)); err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return s, fmt.Errorf("--baud %s: want a baud rate from 1 to 100000000", baud)
		}
		return s, fmt.Errorf("--baud %q: not a whole number (want a baud rate such as 115200)", baud)
	}
	if s.BaudRate <= 0 || s.BaudRate > 100_000_000 {
		return s, fmt.Errorf("--baud %s: want a baud rate from 1 to 100000000", baud)
	}
	switch d := strings.TrimSpace(data); d {
	case "5", "6", "7", "8":
		s.DataBits = int(d[0] - '0')
	default:
		return s, fmt.Errorf("--data %q: want 5, 6, 7 or 8", data)
	}
	switch strings.ToLower(parity) {
	case "none", "n":
		s.Parity = serialdev.ParityNone
	case "odd", "o":
		s.Parity = serialdev.ParityOdd
	case "even", "e":
		s.Parity = serialdev.ParityEven
	case "mark", "m":
		s.Parity = serialdev.ParityMark
	case "space", "s":
		s.Parity = serialdev.ParitySpace
	default:
		return s, fmt.Errorf("--parity %q: want none, odd, even, mark or space", parity)
	}
	switch stop {
	case "1":
		s.StopBits = serialdev.Stop1
	case "1.5":
		s.StopBits = serialdev.Stop1Half
	case "2":
		s.StopBits = serialdev.Stop2
	default:
		return s, fmt.Errorf("--stop %q: want 1, 1.5 or 2", stop)
	}
	switch strings.ToLower(flow) {
	case "none", "off":
		s.OutFlow = serialdev.FlowNone
	case "xonxoff", "xon/xoff", "software":
		s.OutFlow = serialdev.FlowXonXoff
	case "rtscts", "rts/cts", "hardware":
		s.OutFlow = serialdev.FlowRTSCTS
	default:
		return s, fmt.Errorf("--flow %q: want none, xonxoff or rtscts", flow)
	}
	s.InFlow = s.OutFlow
	if err := s.Validate(); err != nil {
		return s, err
	}
	return s, nil
}

// shareSetup is what runShare needs, parsed from the command line.
type shareSetup struct {
	config  rfc2217.Config
	listens []listenSpec
}

func parseShare(c *cli.Context) (shareSetup, error) {
	var setup shareSetup
	args := c.Args().Slice()
	if len(args) == 0 {
		return setup, errors.New("share: missing DEVICE (usage: sertun share [flags] DEVICE [LISTEN...]; try /dev/ttyUSB0 or loop://)")
	}
	device := args[0]
	if len(args) == 1 {
		args = append(args, defaultListen)
	}
	for _, a := range args[1:] {
		spec, err := parseListen(a)
		if err != nil {
			return setup, err
		}
		setup.listens = append(setup.listens, spec)
	}
	initial, err := parseSettings(c.String("baud"), c.String("data"), c.String("parity"), c.String("stop"), c.String("flow"))
	if err != nil {
		return setup, err
	}
	policy := rfc2217.Exclusive
	switch {
	case c.Bool("kick-old") && c.Bool("shared"):
		return setup, errors.New("--kick-old and --shared cannot be used together: pick how a second client is treated")
	case c.Bool("kick-old"):
		policy = rfc2217.KickOld
	case c.Bool("shared"):
		policy = rfc2217.Shared
	}
	signature := c.String("signature")
	if signature == "" {
		signature = "sertun " + sertunVersion() + " " + device
	}
	setup.config = rfc2217.Config{
		Device:    device,
		Open:      func(ctx context.Context) (serialdev.Port, error) { return openPort(ctx, device) },
		Initial:   initial,
		Policy:    policy,
		Signature: signature,
		Logger:    logger(c),
	}
	return setup, nil
}

func runShare(c *cli.Context) error {
	setup, err := parseShare(c)
	if err != nil {
		return err
	}
	cfg := setup.config
	if err := statPort(cfg.Device); err != nil {
		return err
	}
	srv, err := rfc2217.NewServer(cfg)
	if err != nil {
		return err
	}
	var lns []net.Listener
	closeAll := func() {
		srv.Close()
		for _, ln := range lns {
			ln.Close()
		}
	}
	var lc net.ListenConfig
	var urls []string
	hostless := false
	for _, spec := range setup.listens {
		ln, err := lc.Listen(c.Context, tcpnet.Network(spec.addr), spec.addr)
		if err != nil {
			closeAll()
			return listenError(spec.addr, err)
		}
		lns = append(lns, ln)
		urls = append(urls, spec.mode.String()+"://"+ln.Addr().String())
		hostless = hostless || spec.defaultHost
	}

	log := cfg.Logger
	log.Info(fmt.Sprintf("serving %s on %s", cfg.Device, strings.Join(urls, ", ")),
		"settings", cfg.Initial.String(), "policy", cfg.Policy)
	if hostless {
		log.Info("an address without a host listens on " + defaultHost + " only; give 0.0.0.0:PORT to let other machines connect")
	}

	errc := make(chan error, len(lns))
	for i, ln := range lns {
		go func() { errc <- srv.Serve(ln, setup.listens[i].mode) }()
	}
	pending := len(lns)
	var serveErr error
	select {
	case <-c.Context.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		// A listener failed while we were not shutting down.
		if serveErr == nil {
			serveErr = errors.New("a listener closed")
		}
		serveErr = fmt.Errorf("share: %w", serveErr)
		pending--
	}
	closeAll()
	for range pending {
		<-errc
	}
	return serveErr
}

// listenError words the common listen failures so that the user knows what
// to change.
func listenError(addr string, err error) error {
	switch {
	case isErrno(err, syscall.EADDRINUSE, wsaEADDRINUSE):
		return fmt.Errorf("listen on %s: address already in use (another program, perhaps another sertun or ser2net, is listening there; stop it or pick another port)", addr)
	case isErrno(err, syscall.EACCES, wsaEACCES):
		return fmt.Errorf("listen on %s: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a port such as 2217)", addr)
	case isErrno(err, syscall.EADDRNOTAVAIL, wsaEADDRNOTAVAIL):
		host, _, _ := net.SplitHostPort(addr)
		return fmt.Errorf("listen on %s: %s is not an address of this machine", addr, host)
	}
	return fmt.Errorf("listen on %s: %w", addr, err)
}

// Windows reports Winsock codes where Unix has errno values; the numbers do
// not overlap, so one test serves both.
const (
	wsaEACCES        syscall.Errno = 10013
	wsaEADDRINUSE    syscall.Errno = 10048
	wsaEADDRNOTAVAIL syscall.Errno = 10049
)

func isErrno(err error, unix, windows syscall.Errno) bool {
	var e syscall.Errno
	return errors.As(err, &e) && (e == unix || e == windows)
}
