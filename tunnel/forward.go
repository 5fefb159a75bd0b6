package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sertun/sertun/internal/tcpnet"
)

// Run runs one end of a tunnel until ctx is done: the session over the
// line, the -L and -D listeners, the far side's -R listeners, and the dials
// the far side asks for (as --permit allows). A listener that cannot be
// opened is an error before anything starts.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.normalize(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t := &forwarder{ctx: ctx, cfg: cfg, remote: map[string]net.Listener{}}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	listen := func(addr, what string) (net.Listener, error) {
		ln, err := net.Listen(tcpnet.Network(addr), addr)
		if err != nil {
			return nil, fmt.Errorf("tunnel: %s: %w", what, err)
		}
		lns = append(lns, ln)
		return ln, nil
	}
	type local struct {
		ln net.Listener
		fw Forward
	}
	var locals []local
	for _, fw := range cfg.Local {
		ln, err := listen(fw.Bind, "-L "+fw.String())
		if err != nil {
			return err
		}
		locals = append(locals, local{ln, fw})
	}
	var socks []net.Listener
	for _, addr := range cfg.SOCKS {
		ln, err := listen(addr, "-D "+addr)
		if err != nil {
			return err
		}
		socks = append(socks, ln)
	}
	s, err := newSession(cfg, hooks{handler: t.dialFor, newSession: t.newSession, listen: t.listenFor})
	if err != nil {
		return err
	}
	t.s = s
	args := []any{"device", cfg.Device, "baud", cfg.Baud}
	for _, l := range locals {
		target := l.fw.Target
		if target == "" {
			target = "(the far side's only permitted target)"
		}
		args = append(args, "L", l.ln.Addr().String()+" -> "+target)
	}
	for _, fw := range cfg.Remote {
		args = append(args, "R", "(far side) "+fw.Bind+" -> "+fw.Target)
	}
	for _, ln := range socks {
		args = append(args, "D", ln.Addr().String())
	}
	args = append(args, "permit", cfg.Permit)
	cfg.Logger.Info("tunnel: serving", args...)
	for _, l := range locals {
		t.wg.Add(1)
		go t.acceptLoop(l.ln, func(c net.Conn) { t.local(c, l.fw) })
	}
	for _, ln := range socks {
		t.wg.Add(1)
		go t.acceptLoop(ln, t.socks)
	}
	<-ctx.Done()
	cfg.Logger.Info("tunnel: stopping; the far side's ends of open connections are reset", "streams", s.Stats().Streams)
	for _, ln := range lns {
		ln.Close()
	}
	t.mu.Lock()
	t.closed = true
	for _, ln := range t.remote {
		ln.Close()
	}
	t.mu.Unlock()
	s.Close()
	t.wg.Wait()
	return nil
}

// forwarder runs the forwards of one tunnel end.
type forwarder struct {
	ctx context.Context
	cfg Config
	s   *Session
	wg  sync.WaitGroup

	mu     sync.Mutex
	epoch  int                     // sessions with the far side so far
	remote map[string]net.Listener // the far side's -R listeners, by bind
	closed bool
}

func (t *forwarder) acceptLoop(ln net.Listener, serve func(net.Conn)) {
	defer t.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			t.cfg.Logger.Warn("tunnel: accept failed", "listen", ln.Addr().String(), "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			serve(c)
		}()
	}
}

// local serves one connection to a -L listener.
func (t *forwarder) local(c net.Conn, fw Forward) {
	target := fw.Target
	if target == "" {
		var err error
		if target, err = t.onlyTarget(); err != nil {
			t.cfg.Logger.Error("tunnel: -L "+fw.Bind+": "+err.Error(), "from", c.RemoteAddr().String())
			abort(c)
			return
		}
	}
	st, err := t.open(target)
	if err != nil {
		abort(c)
		return
	}
	t.cfg.Logger.Debug("tunnel: forwarding", "from", c.RemoteAddr().String(), "target", target)
	pipe(c, st)
}

// onlyTarget is the target of `-L port`: the far side's only permit.
func (t *forwarder) onlyTarget() (string, error) {
	permits, err := t.s.FarPermits(t.ctx)
	if err != nil {
		return "", err
	}
	if len(permits) == 1 && permits[0] != PermitAny {
		return permits[0], nil
	}
	switch {
	case len(permits) == 0:
		return "", errors.New("-L with no target uses the far side's only --permit, and it has none; start it with --permit HOST:PORT, or give -L [bind:]port:host:hostport")
	case slices.Contains(permits, PermitAny):
		return "", errors.New("-L with no target uses the far side's only --permit, and it permits any target; give -L [bind:]port:host:hostport")
	}
	return "", fmt.Errorf("-L with no target uses the far side's only --permit, and it has %d (%s); give -L [bind:]port:host:hostport", len(permits), strings.Join(permits, ", "))
}

// open opens a stream and logs why it failed, with the hint a user acts on.
func (t *forwarder) open(target string) (*Stream, error) {
	st, err := t.s.OpenStream(t.ctx, target)
	switch {
	case err == nil:
	case errors.Is(err, ErrNotPermitted):
		t.cfg.Logger.Warn(fmt.Sprintf("tunnel: far side does not permit %s; start it with --permit %s", target, target))
	case t.ctx.Err() != nil:
	default:
		t.cfg.Logger.Warn("tunnel: far side could not connect", "target", target, "err", err)
	}
	return st, err
}

// track counts a goroutine that Run waits for; false once Run is ending.
func (t *forwarder) track() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// dialFor serves a stream the far side opened: dial, then confirm or reset.
func (t *forwarder) dialFor(st *Stream) {
	if !t.track() {
		st.Reset("far side is shutting down")
		return
	}
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(t.ctx, 15*time.Second)
	c, err := t.cfg.Dial(ctx, "tcp", st.target)
	cancel()
	if err != nil {
		t.cfg.Logger.Warn("tunnel: cannot connect for the far side", "target", st.target, "err", err)
		st.resetWith(ResetDialFailed, fmt.Sprintf("%s cannot connect to %s: %v", "far side", st.target, err), nil)
		return
	}
	st.confirm()
	t.cfg.Logger.Debug("tunnel: connected for the far side", "target", st.target)
	pipe(c, st)
}

// newSession closes the listeners opened for the previous far session.
func (t *forwarder) newSession() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.epoch++
	for bind, ln := range t.remote {
		ln.Close()
		delete(t.remote, bind)
	}
}

// listenFor opens a listener for the far side's -R.
func (t *forwarder) listenFor(id uint64, bind, target string) {
	t.mu.Lock()
	epoch, closed := t.epoch, t.closed
	if !closed {
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if closed {
		return
	}
	go func() {
		defer t.wg.Done()
		fail := func(err error) {
			t.cfg.Logger.Error("tunnel: cannot listen for the far side's -R", "listen", bind, "err", err)
			t.s.listenResult(id, err.Error())
		}
		if _, _, err := splitHostPort(bind); err != nil {
			fail(err)
			return
		}
		t.mu.Lock()
		_, dup := t.remote[bind]
		t.mu.Unlock()
		if dup {
			fail(errors.New("already listening there for the far side"))
			return
		}
		ln, err := net.Listen(tcpnet.Network(bind), bind)
		if err != nil {
			fail(err)
			return
		}
		t.mu.Lock()
		if t.closed || t.epoch != epoch {
			t.mu.Unlock()
			ln.Close()
			return
		}
		t.remote[bind] = ln
		t.wg.Add(1) // for acceptLoop
		t.mu.Unlock()
		t.cfg.Logger.Info("tunnel: listening for the far side's -R", "listen", ln.Addr().String(), "target", target)
		t.s.listenResult(id, "")
		t.acceptLoop(ln, func(c net.Conn) {
			st, err := t.open(target)
			if err != nil {
				abort(c)
				return
			}
			pipe(c, st)
		})
	}()
}

// listenResult answers a LISTEN: "" when listening, else the error.
func (s *Session) listenResult(id uint64, errText string) {
	s.mu.Lock()
	s.ctrl = append(s.ctrl, appendMsg(nil, msgListenResult, id, []byte(errText)))
	s.mu.Unlock()
	s.kick()
}

// pipe copies both ways until both directions are done, carrying
// half-closes across. A failure either way fails both ends, as TCP's reset
// does: a target that closed while the client still sends must make the
// client's writes fail, not have the tunnel carry them to be dropped.
func pipe(c net.Conn, st *Stream) {
	var wg sync.WaitGroup
	wg.Add(2)
	fail := func(err error) {
		st.Reset("connection failed: " + err.Error())
		abort(c)
	}
	go func() {
		defer wg.Done()
		if _, err := io.Copy(st, c); err != nil {
			fail(err)
			return
		}
		st.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		if _, err := io.Copy(c, st); err != nil {
			fail(err)
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	wg.Wait()
	c.Close()
	st.Close()
}

// abort closes c with a TCP reset, so the client sees a failure, not EOF.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// SOCKS5 (RFC 1928), CONNECT without authentication.
const (
	socksVersion        = 5
	socksNoAuth         = 0
	socksNoAcceptable   = 0xff
	socksConnect        = 1
	socksAtypIPv4       = 1
	socksAtypDomain     = 3
	socksAtypIPv6       = 4
	socksOK             = 0
	socksFailure        = 1
	socksNotAllowed     = 2
	socksRefused        = 5
	socksCmdUnsupported = 7
	socksAtypUnsupp     = 8
)

// socks serves one SOCKS5 client: the far side dials its CONNECT target.
func (t *forwarder) socks(c net.Conn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	target, err := socksHandshake(c)
	if err != nil {
		t.cfg.Logger.Debug("tunnel: SOCKS5 handshake failed", "from", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	st, err := t.open(target)
	if err != nil {
		code := byte(socksFailure)
		var re *ResetError
		if errors.As(err, &re) {
			switch re.Code {
			case ResetNotPermitted:
				code = socksNotAllowed
			case ResetDialFailed:
				code = socksRefused
			}
		}
		c.Write(socksReply(code))
		c.Close()
		return
	}
	if _, err := c.Write(socksReply(socksOK)); err != nil {
		st.Reset("SOCKS client gone")
		c.Close()
		return
	}
	pipe(c, st)
}

func socksReply(code byte) []byte {
	return []byte{socksVersion, code, 0, socksAtypIPv4, 0, 0, 0, 0, 0, 0}
}

// socksHandshake reads the greeting and the request and returns the
// target. It reads exactly what the client sent, so no data is lost.
func socksHandshake(c net.Conn) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", err
	}
	if hdr[0] != socksVersion {
		return "", fmt.Errorf("not SOCKS5 (version %d)", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", err
	}
	ok := false
	for _, m := range methods {
		ok = ok || m == socksNoAuth
	}
	if !ok {
		c.Write([]byte{socksVersion, socksNoAcceptable})
		return "", errors.New("client offers no method without authentication")
	}
	if _, err := c.Write([]byte{socksVersion, socksNoAuth}); err != nil {
		return "", err
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return "", err
	}
	if req[0] != socksVersion {
		return "", fmt.Errorf("bad request version %d", req[0])
	}
	if req[1] != socksConnect {
		c.Write(socksReply(socksCmdUnsupported))
		return "", fmt.Errorf("command %d not supported (CONNECT only)", req[1])
	}
	var host string
	switch req[3] {
	case socksAtypIPv4, socksAtypIPv6:
		ip := make(net.IP, 4)
		if req[3] == socksAtypIPv6 {
			ip = make(net.IP, 16)
		}
		if _, err := io.ReadFull(c, ip); err != nil {
			return "", err
		}
		host = ip.String()
	case socksAtypDomain:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return "", err
		}
		name := make([]byte, l[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return "", err
		}
		host = string(name)
	default:
		c.Write(socksReply(socksAtypUnsupp))
		return "", fmt.Errorf("address type %d not supported", req[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), nil
}
