package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// Config configures a tunnel end. The zero value (with Open set) is a
// session at 115200 baud that dials nothing.
type Config struct {
	// Open opens the serial line. It is called again whenever the line
	// fails (a USB adapter unplugged), until the session is closed.
	Open func(ctx context.Context) (Line, error)
	// Device names the line in logs.
	Device string
	// Baud is the line rate in bits per second (8N1: Baud/10 bytes per
	// second); frames are paced and sized from it. 0 means 115200.
	Baud int
	// MaxOutage is how long streams wait for a link that is down before
	// they are reset. 0 means 10 minutes.
	MaxOutage time.Duration
	// Permit lists the targets ("host:port", or "any") this side dials for
	// the far side. Empty: none.
	Permit []string
	// Local (-L): this side listens on Bind; the far side dials Target.
	// An empty Target means the far side's only permitted target.
	Local []Forward
	// Remote (-R): the far side listens on Bind; this side dials Target.
	Remote []Forward
	// SOCKS (-D): addresses of SOCKS5 listeners whose connections the far
	// side dials.
	SOCKS []string
	// Stats, when positive, logs counters at that interval.
	Stats time.Duration
	// Dial connects to targets; nil means net.Dialer with a 10 s timeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Forward is one -L or -R: listen on Bind, connect to Target.
type Forward struct {
	Bind   string // host:port
	Target string // host:port, "" for the far side's only permitted target
}

func (f Forward) String() string {
	if f.Target == "" {
		return f.Bind
	}
	return f.Bind + ":" + f.Target
}

// PermitAny is the --permit value that allows every target.
const PermitAny = "any"

func (c *Config) normalize() error {
	if c.Open == nil {
		return errors.New("tunnel: Config.Open is required")
	}
	if c.Baud == 0 {
		c.Baud = DefaultBaud
	}
	if c.Baud < 50 || c.Baud > 100_000_000 {
		return fmt.Errorf("tunnel: baud rate %d out of range (50 to 100000000)", c.Baud)
	}
	if c.MaxOutage == 0 {
		c.MaxOutage = DefaultMaxOutage
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		c.Dial = d.DialContext
	}
	for i, p := range c.Permit {
		if strings.EqualFold(p, PermitAny) {
			c.Permit[i] = PermitAny
			continue
		}
		if _, _, err := splitHostPort(p); err != nil {
			return fmt.Errorf("tunnel: --permit %q: %w (want host:port or %s)", p, err, PermitAny)
		}
	}
	// The far side listens for our -R forwards: two on one address would
	// only fail there, in its log.
	seen := map[string]bool{}
	for _, fw := range c.Remote {
		if seen[fw.Bind] {
			return fmt.Errorf("tunnel: -R %s given twice: the far side can listen there only once", fw.Bind)
		}
		seen[fw.Bind] = true
	}
	if n := len(infoMsg(c.Permit)); n > maxBody {
		return fmt.Errorf("tunnel: the --permit list is too long: %d targets take %d bytes, at most %d fit (use fewer targets, or --permit %s)",
			len(c.Permit), n, maxBody, PermitAny)
	}
	return nil
}

// permitted says whether this side dials target for the far side: the
// --permit list, and the targets of our own -R forwards.
func (s *Session) permitted(target string) bool {
	for _, p := range s.cfg.Permit {
		if p == PermitAny || strings.EqualFold(p, target) {
			return true
		}
	}
	for _, fw := range s.cfg.Remote {
		if strings.EqualFold(fw.Target, target) {
			return true
		}
	}
	return false
}

// splitHostPort checks a host:port and returns its parts.
func splitHostPort(s string) (host string, port int, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return h, n, nil
}

// ParseForward parses a -L or -R value: [bind:]port:host:hostport, or
// [bind:]port alone when target is optional (-L with the far side's only
// permitted target). IPv6 addresses go in brackets. bind defaults to
// 127.0.0.1.
func ParseForward(spec string, targetOptional bool) (Forward, error) {
	parts, err := splitColons(spec)
	if err != nil {
		return Forward{}, fmt.Errorf("tunnel: forward %q: %w", spec, err)
	}
	var bind, port, host, hostport string
	switch len(parts) {
	case 1:
		port = parts[0]
	case 2:
		bind, port = parts[0], parts[1]
	case 3:
		port, host, hostport = parts[0], parts[1], parts[2]
	case 4:
		bind, port, host, hostport = parts[0], parts[1], parts[2], parts[3]
	default:
		return Forward{}, fmt.Errorf("tunnel: forward %q: want [bind:]port:host:hostport", spec)
	}
	if host == "" && hostport == "" && !targetOptional {
		return Forward{}, fmt.Errorf("tunnel: forward %q: want [bind:]port:host:hostport", spec)
	}
	if bind == "" {
		bind = "127.0.0.1"
	}
	fw := Forward{Bind: net.JoinHostPort(bind, port)}
	if _, _, err := splitHostPort(fw.Bind); err != nil {
		return Forward{}, fmt.Errorf("tunnel: forward %q: listen address: %w", spec, err)
	}
	if host != "" || hostport != "" {
		fw.Target = net.JoinHostPort(host, hostport)
		if h, port, err := splitHostPort(fw.Target); err != nil || h == "" || port == 0 {
			return Forward{}, fmt.Errorf("tunnel: forward %q: target %q: want host:port", spec, fw.Target)
		}
	}
	return fw, nil
}

// ParseListen parses a -D value: [bind:]port, bind defaulting to 127.0.0.1.
func ParseListen(spec string) (string, error) {
	fw, err := ParseForward(spec, true)
	if err != nil || fw.Target != "" {
		return "", fmt.Errorf("tunnel: listen address %q: want [bind:]port", spec)
	}
	return fw.Bind, nil
}

// splitColons splits on colons outside brackets and strips the brackets.
func splitColons(s string) ([]string, error) {
	var parts []string
	for len(s) > 0 || len(parts) == 0 {
		if strings.HasPrefix(s, "[") {
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return nil, errors.New("missing ]")
			}
			parts = append(parts, s[1:end])
			s = s[end+1:]
			if s == "" {
				break
			}
			if s[0] != ':' {
				return nil, errors.New("want : after ]")
			}
			s = s[1:]
			continue
		}
		i := strings.IndexByte(s, ':')
		if i < 0 {
			parts = append(parts, s)
			break
		}
		parts = append(parts, s[:i])
		s = s[i+1:]
		if s == "" {
			parts = append(parts, "")
		}
	}
	return parts, nil
}
