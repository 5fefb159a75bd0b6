//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process under test. It runs in its own process group and
// dies with the bench (Pdeathsig), so nothing outlives a killed bench.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *capBuffer
	done chan struct{}
	err  error
}

type capBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.b.Len() < 64<<10 {
		c.b.Write(p)
	}
	return len(p), nil
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// reaper knows every process the bench started, so that a signal to the
// bench stops them all.
type reaper struct {
	mu    sync.Mutex
	procs []*proc
	dead  bool
}

func (r *reaper) add(p *proc) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		return false
	}
	r.procs = append(r.procs, p)
	return true
}

// killAll stops every process and refuses new ones.
func (r *reaper) killAll() {
	r.mu.Lock()
	r.dead = true
	ps := r.procs
	r.mu.Unlock()
	for _, p := range ps {
		if p.alive() {
			syscall.Kill(-p.Pid(), syscall.SIGKILL)
		}
	}
}

func (e *env) start(name string, argv ...string) (*proc, error) {
	p, err := startProc(name, argv...)
	if err != nil {
		return nil, err
	}
	if !e.reaper.add(p) {
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return nil, errors.New("bench interrupted")
	}
	return p, nil
}

func startProc(name string, argv ...string) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	out := &capBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) Pid() int { return p.cmd.Process.Pid }

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// failure describes a process that exited early, with the tail of its output.
func (p *proc) failure() error {
	out := strings.TrimSpace(p.out.String())
	if len(out) > 600 {
		out = "..." + out[len(out)-600:]
	}
	return fmt.Errorf("%s exited (%v): %s", p.name, p.err, out)
}

// stop sends SIGTERM to the process group, then SIGKILL after 2 s.
func (p *proc) stop() {
	if !p.alive() {
		return
	}
	syscall.Kill(-p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		syscall.Kill(-p.Pid(), syscall.SIGKILL)
		<-p.done
	}
	// Children that left the group are not ours to chase; the group is.
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
}

func stopAll(ps []*proc) {
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].stop()
	}
}

// cpuTicks is utime+stime of pid in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// After the comm field: state is f[0]; utime and stime are fields 14 and 15 of stat.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad /proc stat times")
	}
	return u + s, nil
}

const ticksPerSecond = 100

func cpuSum(pids []int) (int64, error) {
	var t int64
	for _, pid := range pids {
		v, err := cpuTicks(pid)
		if err != nil {
			return 0, err
		}
		t += v
	}
	return t, nil
}

// rssKiB is VmRSS of pid.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

func rssSum(pids []int) (int64, error) {
	var t int64
	for _, pid := range pids {
		v, err := rssKiB(pid)
		if err != nil {
			return 0, err
		}
		t += v
	}
	return t, nil
}

// rssSampler records the largest summed VmRSS of pids while it runs.
type rssSampler struct {
	pids []int
	stop chan struct{}
	done chan struct{}
	max  int64
}

func sampleRSS(pids []int, every time.Duration) *rssSampler {
	s := &rssSampler{pids: pids, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v, err := rssSum(pids); err == nil && v > s.max {
				s.max = v
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) Stop() int64 {
	close(s.stop)
	<-s.done
	if v, err := rssSum(s.pids); err == nil && v > s.max {
		s.max = v
	}
	return s.max
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// dialRetry connects to addr until it answers, the deadline passes or one of
// ps dies.
func dialRetry(addr string, d time.Duration, ps ...*proc) (net.Conn, error) {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c, nil
		}
		for _, p := range ps {
			if !p.alive() {
				return nil, p.failure()
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitPath waits until path exists, the deadline passes or one of ps dies.
func waitPath(path string, d time.Duration, ps ...*proc) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		for _, p := range ps {
			if !p.alive() {
				return p.failure()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitListen waits until something listens on 127.0.0.1:port without
// connecting to it (a connection would start a session on some servers).
func waitListen(port int, d time.Duration, ps ...*proc) error {
	want := fmt.Sprintf(":%04X", port)
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile("/proc/net/tcp")
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			// local_address is f[1] (0100007F:PORT), st is f[3]; 0A is LISTEN.
			if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
				return nil
			}
		}
		for _, p := range ps {
			if !p.alive() {
				return p.failure()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on 127.0.0.1:%d after %v", port, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
