//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// bridge is a virtual serial port for a program (a pty with a link) in
// front of a server that shares the device; or, with relay, one process
// joining the device and the program's pty directly.
type bridge struct {
	name   string
	server func(e *env, dev string, port int) ([]*proc, error)
	client func(e *env, link string, port int) (*proc, error)
	relay  func(e *env, dev, link string) (*proc, error)
}

// sertunBridge is attach in front of share, both of binary bin.
func sertunBridge(name, bin string) bridge {
	return bridge{name: name,
		server: func(e *env, dev string, port int) ([]*proc, error) {
			p, err := e.start(name+": share", bin, "share", dev, "127.0.0.1:"+strconv.Itoa(port))
			return []*proc{p}, err
		},
		client: func(e *env, link string, port int) (*proc, error) {
			return e.start(name+": attach", bin, "attach", "127.0.0.1:"+strconv.Itoa(port), "--link", link)
		}}
}

func attachBridges(e *env) []bridge {
	b := []bridge{
		sertunBridge("sertun attach+share", e.sertun),
		{name: "gensiot+ser2net-tuned",
			server: func(e *env, dev string, port int) ([]*proc, error) {
				return startSer2net(e, ser2netTuned, port, dev)
			},
			client: func(e *env, link string, port int) (*proc, error) {
				return e.start("gensiot", "gensiot", "-e", "-1", "-i", fmt.Sprintf("pty(link=%s,raw)", link),
					fmt.Sprintf("telnet(rfc2217),tcp,127.0.0.1,%d", port))
			}},
		{name: "socat-pty+ser2net-raw",
			server: func(e *env, dev string, port int) ([]*proc, error) {
				return startSer2net(e, ser2netRawTuned, port, dev)
			},
			client: func(e *env, link string, port int) (*proc, error) {
				return e.start("socat pty", "socat", fmt.Sprintf("pty,link=%s,raw,echo=0", link),
					fmt.Sprintf("TCP:127.0.0.1:%d", port))
			}},
	}
	if e.alt != "" {
		b = append(b, sertunBridge("sertun-alt", e.alt))
	}
	// A reference for the path on this machine: the same two pty hops with
	// one relay between them and no network, telnet or second process.
	b = append(b, bridge{name: directName,
		relay: func(e *env, dev, link string) (*proc, error) {
			return e.start("socat pty<->pty", "socat", "FILE:"+dev+",raw,echo=0", fmt.Sprintf("pty,link=%s,raw,echo=0", link))
		}})
	return b
}

const directName = "socat pty<->pty"

type attachMetrics struct{ d2p, p2d, p50, p99, cpuD2P, cpuP2D *metric }

func attachRun(e *env, b bridge, m *attachMetrics) error {
	pty, err := openPty()
	if err != nil {
		return err
	}
	defer pty.Close()
	port, err := freePort()
	if err != nil {
		return err
	}
	link := filepath.Join(e.tmp, fmt.Sprintf("vport-%d", port))
	var ps []*proc
	defer func() { stopAll(ps) }()
	if b.relay != nil {
		p, err := b.relay(e, pty.Slave, link)
		if err != nil {
			return err
		}
		ps = append(ps, p)
	} else {
		if ps, err = b.server(e, pty.Slave, port); err != nil {
			return err
		}
		if err := waitListen(port, 5*time.Second, ps...); err != nil {
			return err
		}
		c, err := b.client(e, link, port)
		if err != nil {
			return err
		}
		ps = append(ps, c)
	}
	if err := waitPath(link, 5*time.Second, ps...); err != nil {
		return err
	}
	// The program keeps the port open for the whole run: gensiot exits when
	// the last program closes it.
	prog, err := openProgramEnd(link)
	if err != nil {
		return err
	}
	defer prog.Close()
	if err := syncPath(prog, pty.Master, 10*time.Second); err != nil {
		return err
	}
	var pids []int
	for _, p := range ps {
		pids = append(pids, p.Pid())
	}
	rtts, d2p, p2d, err := measurePath(e, prog, pty.Master, pids, ps, "program")
	if err != nil {
		return err
	}
	m.p50.add(b.name, ms(percentile(rtts, 0.50)))
	m.p99.add(b.name, ms(percentile(rtts, 0.99)))
	m.d2p.add(b.name, d2p.MBps())
	m.p2d.add(b.name, p2d.MBps())
	m.cpuD2P.add(b.name, 1000*d2p.CPUPerMiB())
	m.cpuP2D.add(b.name, 1000*p2d.CPUPerMiB())
	e.logf("  %-22s d->p %6.1f MB/s (%d B, crc ok)  p->d %6.1f MB/s (%d B, crc ok)  p50 %.3f ms p99 %.3f ms (%d rtts)",
		b.name, d2p.MBps(), d2p.Bytes, p2d.MBps(), p2d.Bytes, ms(percentile(rtts, 0.5)), ms(percentile(rtts, 0.99)), len(rtts))
	return nil
}

// attachReady says whether this sertun has the attach command.
func attachReady(e *env) (bool, string) {
	if e.sertun == "" {
		return false, e.why
	}
	p, err := e.start("sertun attach --help", e.sertun, "attach", "--help")
	if err != nil {
		return false, err.Error()
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.stop()
		return false, "sertun attach --help hangs"
	}
	if p.err != nil {
		return false, "sertun attach --help: " + p.err.Error()
	}
	return true, ""
}

func benchAttach(e *env) error {
	m := &attachMetrics{
		d2p:    newMetric("throughput device->program", "MB/s", "%.1f", false),
		p2d:    newMetric("throughput program->device", "MB/s", "%.1f", false),
		p50:    newMetric("1-byte round trip p50", "ms", "%.3f", true),
		p99:    newMetric("1-byte round trip p99", "ms", "%.3f", true),
		cpuD2P: newMetric("CPU per MiB device->program, both procs", "ms", "%.1f", true),
		cpuP2D: newMetric("CPU per MiB program->device, both procs", "ms", "%.1f", true),
	}
	notes := map[string]string{}
	ready, why := attachReady(e)
	if !ready {
		notes["sertun attach+share"] = "not available: " + why
	}
	failed := map[string]bool{}
	for run := 1; run <= e.runs; run++ {
		e.logf("attach: run %d/%d", run, e.runs)
		for _, b := range inTurn(attachBridges(e), run-1) {
			if failed[b.name] || (b.name == "sertun attach+share" && !ready) || e.skip(b.name) {
				continue
			}
			if err := attachRun(e, b, m); err != nil {
				failed[b.name] = true
				notes[b.name] = fmt.Sprintf("FAILED in run %d: %v", run, err)
				e.logf("  %s: %v", b.name, err)
			}
		}
	}
	cols := []string{"sertun attach+share", "gensiot+ser2net-tuned", "socat-pty+ser2net-raw"}
	if e.alt != "" {
		cols = append(cols, "sertun-alt")
	}
	cols = append(cols, directName)
	fmt.Printf("\n== attach: program -> virtual port -> TCP -> server -> pty device (echo) -> back (127.0.0.1; %d runs; median [min..max]) ==\n", e.runs)
	fmt.Printf("   the program is this tool on the link, raw; bulk %v per direction per run, byte count and CRC-32C verified; round trips for %v per run (at most %d)\n", e.window, e.rttCap, e.rtts)
	fmt.Println("   gensiot: gensiot -e -1 -i 'pty(link=L,raw)' 'telnet(rfc2217),tcp,...' to ser2net tuned; socat: socat pty,link=L,raw,echo=0 TCP:... to ser2net tuned with a raw tcp accepter")
	fmt.Println("   socat pty<->pty: socat FILE:PTY,raw,echo=0 pty,link=L,raw,echo=0, the device's pty joined to the program's by one relay (no network, no telnet, one process): what the two pty hops cost here")
	printTable(os.Stdout, cols, []ratio{{"sertun attach+share", "gensiot+ser2net-tuned", "sertun/gensiot"}, {"sertun attach+share", "socat-pty+ser2net-raw", "sertun/socat-pty"}, {"sertun attach+share", directName, "sertun/direct"}},
		[]*metric{m.d2p, m.p2d, m.p50, m.p99, m.cpuD2P, m.cpuP2D}, notes)
	if len(m.d2p.vals["sertun attach+share"]) > 0 {
		fmt.Println("\n   must-show (issue 3):")
		for _, t := range []*metric{m.d2p, m.p2d} {
			s, g := t.median("sertun attach+share"), t.median("gensiot+ser2net-tuned")
			v := "FAIL"
			if s >= 1.5*g {
				v = "ok  "
			}
			fmt.Printf("   %s %s >= 1.5 x gensiot+ser2net tuned: %.1f vs %.1f MB/s (%.2fx)\n", v, t.name, s, g, s/g)
		}
		s, g := m.p50.median("sertun attach+share"), m.p50.median("gensiot+ser2net-tuned")
		v := "FAIL"
		if s <= g {
			v = "ok  "
		}
		fmt.Printf("   %s round trip p50 <= gensiot+ser2net tuned: %.3f vs %.3f ms\n", v, s, g)
	}
	return nil
}
