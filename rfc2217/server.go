package rfc2217

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sertun/sertun/serialdev"
)

// Policy says how a server shares its device between clients.
type Policy int

const (
	// Exclusive: one client at a time; another gets a one-line "port busy"
	// message and is closed.
	Exclusive Policy = iota
	// KickOld: the newest client takes over; the one before is closed.
	KickOld
	// Shared: every client reads and writes; device data goes to all, and
	// settings changes reach every client.
	Shared
)

func (p Policy) String() string {
	switch p {
	case Exclusive:
		return "exclusive"
	case KickOld:
		return "kick-old"
	case Shared:
		return "shared"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Mode is what a listener speaks.
type Mode int

const (
	// Telnet: telnet with the Com Port Control Option (RFC 2217).
	Telnet Mode = iota
	// Raw: bytes only, as they are.
	Raw
)

func (m Mode) String() string {
	switch m {
	case Telnet:
		return "rfc2217"
	case Raw:
		return "raw"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Config configures a Server. The zero value of each field means its
// default; Open is required.
type Config struct {
	// Device names the device in logs and in the default signature.
	Device string
	// Open opens the device when a session starts (the first client).
	Open func(ctx context.Context) (serialdev.Port, error)
	// Initial are the settings each new session starts from (zero value:
	// serialdev.DefaultSettings()).
	Initial serialdev.Settings
	Policy  Policy
	// Signature answers a client's SIGNATURE request ("" => "sertun DEVICE").
	Signature string
	// ClientBuffer bounds the device data queued for one client (0 => 1
	// MiB). In Shared mode a client past it is disconnected; with one
	// client at a time the device is read no faster than the client takes
	// (its flow control or buffer takes the strain), but a client that
	// takes nothing for ClientStall (0 => 10s) while its queue is full is
	// disconnected: it stalls the device.
	ClientBuffer int
	ClientStall  time.Duration
	// KeepAlive is the TCP keepalive period (0 => 30s).
	KeepAlive time.Duration
	Logger    *slog.Logger // nil => slog.Default()
}

// Errors.
var (
	// ErrServerClosed is returned by Serve after Close.
	ErrServerClosed = errors.New("rfc2217: server closed")
	// ErrPortBusy is the reason a connection is refused under Exclusive.
	ErrPortBusy = errors.New("port busy")

	errKicked      = errors.New("taken over by a newer client")
	errDeviceGone  = errors.New("device gone")
	errTooSlow     = errors.New("client too slow")
	errEnded       = errors.New("connection ended")
	errGoneWaiting = errors.New("client closed the connection while its data waited for the device")
)

// peerState is what the kernel knows of a client that is not being read.
type peerState int

const (
	peerOpen       peerState = iota
	peerHalfClosed           // it sent FIN: done sending, or gone
	peerGone                 // it reset the connection
)

const (
	// busyGrace is how long a newcomer waits for the client holding the
	// port to go before it is told the port is busy: a client that closes
	// and reconnects at once must not find its own old connection in the
	// way, still being torn down.
	busyGrace           = 250 * time.Millisecond
	defaultClientBuffer = 1 << 20
	defaultClientStall  = 10 * time.Second
	defaultKeepAlive    = 30 * time.Second
	// ctrlLimit bounds the control bytes (answers, notifications) queued
	// for a client that does not read; past it the client is dropped.
	ctrlLimit = 64 << 10
)

// Server shares one serial device with network clients. One device
// session runs while at least one client is connected: the device is
// opened for the first client and closed after the last.
type Server struct {
	cfg    Config
	log    *slog.Logger
	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*srvConn]struct{} // every connection being served
	sess      *portSession          // the open (or opening) device, nil if none
	lastSess  *portSession          // the one before, whose close a new open waits for
	wg        sync.WaitGroup        // connection goroutines
	// changed is closed (and replaced) when a client leaves or starts
	// leaving: a newcomer that found the port busy looks again.
	changed chan struct{}
}

// NewServer checks cfg and fills in the defaults.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Open == nil {
		return nil, errors.New("rfc2217: server config without an Open function")
	}
	if cfg.Initial == (serialdev.Settings{}) {
		cfg.Initial = serialdev.DefaultSettings()
	}
	if err := cfg.Initial.Validate(); err != nil {
		return nil, fmt.Errorf("rfc2217: initial settings: %w", err)
	}
	switch cfg.Policy {
	case Exclusive, KickOld, Shared:
	default:
		return nil, fmt.Errorf("rfc2217: unknown client policy %d", int(cfg.Policy))
	}
	if cfg.ClientBuffer < 0 {
		return nil, fmt.Errorf("rfc2217: negative client buffer %d", cfg.ClientBuffer)
	}
	if cfg.ClientBuffer == 0 {
		cfg.ClientBuffer = defaultClientBuffer
	}
	if cfg.ClientStall <= 0 {
		cfg.ClientStall = defaultClientStall
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = defaultKeepAlive
	}
	if cfg.Signature == "" {
		cfg.Signature = "sertun " + cfg.Device
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		listeners: make(map[net.Listener]struct{}),
		changed:   make(chan struct{}),
		conns:     make(map[*srvConn]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Serve accepts connections on ln and serves them in mode until ln fails
// or the server is closed (then it returns ErrServerClosed). Serve may run
// on several listeners at once.
func (s *Server) Serve(ln net.Listener, mode Mode) error {
	if mode != Telnet && mode != Raw {
		return fmt.Errorf("rfc2217: unknown listener mode %d", int(mode))
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	// Debug: the program logs what it serves, one line for all listeners.
	s.log.Debug("serving", "device", s.cfg.Device, "listen", ln.Addr().String(), "mode", mode.String(), "policy", s.cfg.Policy.String())
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("rfc2217: accepting on %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors, an aborted handshake and the
			// like: wait, do not spin, and go on.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "listen", ln.Addr().String(), "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.setKeepAlive(nc)
		c := newSrvConn(s, nc, mode)
		if !s.track(c) {
			nc.Close()
			return ErrServerClosed
		}
		go func() {
			defer s.wg.Done()
			c.serve()
		}()
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track adds c to the served connections, counted in s.wg for Close to
// wait on; false once the server is closed.
func (s *Server) track(c *srvConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c *srvConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) setKeepAlive(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		err := tc.SetKeepAliveConfig(net.KeepAliveConfig{
			Enable:   true,
			Idle:     s.cfg.KeepAlive,
			Interval: s.cfg.KeepAlive / 3,
			Count:    3,
		})
		if err != nil {
			s.log.Debug("setting TCP keepalive", "err", err)
		}
	}
}

// Close stops every listener, drops every client, closes the device and
// waits for all of it.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*srvConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.shut(ErrServerClosed, true)
	}
	s.wg.Wait()
	// The last client's leave closed the session; wait for the device.
	s.mu.Lock()
	last := s.lastSess
	s.mu.Unlock()
	if last != nil {
		<-last.done
	}
	return nil
}

// join attaches c to the device session, opening the device if c is the
// first client, and applies the policy. It returns the session or an
// error that c reports to its peer.
func (s *Server) join(c *srvConn) (*portSession, error) {
	graceEnd := time.Now().Add(busyGrace)
	s.mu.Lock()
	for {
		if s.closed {
			s.mu.Unlock()
			return nil, ErrServerClosed
		}
		ps := s.sess
		if ps == nil {
			ps = newPortSession(s, s.lastSess)
			s.sess, s.lastSess = ps, ps
			s.mu.Unlock()
			err := ps.open(s.ctx)
			s.mu.Lock()
			close(ps.ready)
			if err != nil {
				s.sess = nil
				s.mu.Unlock()
				return nil, err
			}
			if s.closed {
				s.sess = nil
				s.mu.Unlock()
				ps.close()
				return nil, ErrServerClosed
			}
			ps.clients = append(ps.clients, c)
			// Start reading only now: nothing the device sends is read
			// before a client is there to take it.
			ps.start()
			s.mu.Unlock()
			return ps, nil
		}
		select {
		case <-ps.ready:
		default:
			s.mu.Unlock()
			<-ps.ready
			s.mu.Lock()
			continue
		}
		if len(ps.clients) > 0 && allLeaving(ps.clients) {
			// Its clients have finished and wait only for the device's
			// last words: the newcomer gets a session of its own, as if
			// they had gone, once they have (open waits for that).
			leaving := slices.Clone(ps.clients)
			s.sess = nil
			s.mu.Unlock()
			for _, old := range leaving {
				old.shut(io.EOF, true)
			}
			s.mu.Lock()
			continue
		}
		var kicked []*srvConn
		if len(ps.clients) > 0 {
			switch s.cfg.Policy {
			case Exclusive:
				if wait := time.Until(graceEnd); wait > 0 {
					changed := s.changed
					s.mu.Unlock()
					t := time.NewTimer(wait)
					select {
					case <-changed:
					case <-t.C:
					case <-s.ctx.Done():
					}
					t.Stop()
					s.mu.Lock()
					continue
				}
				old := ps.clients[0]
				s.mu.Unlock()
				return nil, fmt.Errorf("%w: in use by %s since %s", ErrPortBusy, old.addr, old.since.Format(time.RFC3339))
			case KickOld:
				kicked = ps.clients
				ps.clients = nil
			}
		}
		ps.clients = append(ps.clients, c)
		s.mu.Unlock()
		for _, old := range kicked {
			s.log.Info("client taken over by a newer one", "device", s.cfg.Device, "client", old.addr, "by", c.addr)
			old.tell(fmt.Sprintf("sertun: port taken over by %s (--kick-old); disconnecting\r\n", c.addr))
			old.shut(errKicked, true)
		}
		if len(kicked) > 0 {
			// A new session, on the device still open: it starts from
			// the configured settings, not from the old client's.
			ps.restart()
		}
		return ps, nil
	}
}

// linger marks c, which has sent EOF, as leaving; false if it has been
// shut already.
func (s *Server) linger(c *srvConn) bool {
	if c.ended.Load() {
		return false
	}
	s.mu.Lock()
	c.leaving = true
	s.signalChange()
	s.mu.Unlock()
	return true
}

// signalChange wakes the newcomers waiting for the port; s.mu is held.
func (s *Server) signalChange() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func allLeaving(clients []*srvConn) bool {
	for _, c := range clients {
		if !c.leaving {
			return false
		}
	}
	return true
}

// leave detaches c; the last client to leave closes the device (also a
// session that a newcomer has replaced already).
func (s *Server) leave(c *srvConn, ps *portSession) {
	s.mu.Lock()
	for i, x := range ps.clients {
		if x == c {
			ps.clients = append(ps.clients[:i], ps.clients[i+1:]...)
			break
		}
	}
	last := len(ps.clients) == 0
	if last && s.sess == ps {
		s.sess = nil
	}
	s.signalChange()
	s.mu.Unlock()
	if last {
		ps.close()
	}
}

// clientsOf returns the clients of ps, appended to dst.
func (s *Server) clientsOf(ps *portSession, dst []*srvConn) []*srvConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(dst, ps.clients...)
}

// deviceGone ends ps after a device failure: every client is dropped, and
// the next client opens the device again. Only the first report counts,
// and none after ps was closed on purpose.
func (s *Server) deviceGone(ps *portSession, err error) {
	if ps.closing.Load() || !ps.gone.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	if s.sess == ps {
		s.sess = nil
	}
	clients := ps.clients
	ps.clients = nil
	s.mu.Unlock()
	s.log.Warn("device gone; dropping its clients", "device", s.cfg.Device, "clients", len(clients), "err", err)
	// Tell each client in its data stream, as the busy line does, so that
	// a user at a terminal sees why the connection ends.
	msg := fmt.Sprintf("sertun: %s gone (%v); disconnecting\r\n", s.cfg.Device, err)
	for _, c := range clients {
		c.tell(msg)
		c.shut(fmt.Errorf("%w: %w", errDeviceGone, err), true)
	}
	ps.close()
}
