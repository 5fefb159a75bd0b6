//go:build linux

package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// server is an RFC 2217 or raw TCP server under test in front of a pty.
type server struct {
	name   string
	telnet bool // clients speak telnet to it
	// start runs it on device dev, listening on 127.0.0.1:port.
	start func(e *env, dev string, port int) ([]*proc, error)
}

const (
	ser2netDefaults = iota
	ser2netTuned
	ser2netRawTuned
)

func ser2netConfig(kind, port int, dev string) string {
	switch kind {
	case ser2netDefaults:
		return fmt.Sprintf(`connection: &bench
  accepter: telnet(rfc2217),tcp,127.0.0.1,%d
  connector: serialdev(nouucplock),%s,115200n81,local
  options:
    kickolduser: true
`, port, dev)
	case ser2netTuned:
		return fmt.Sprintf(`connection: &bench
  accepter: telnet(rfc2217,readbuf=65536,writebuf=65536),tcp(nodelay,readbuf=65536),127.0.0.1,%d
  connector: serialdev(nouucplock,readbuf=65536),%s,115200n81,local
  options:
    kickolduser: true
    chardelay: false
    dev-to-net-bufsize: 65536
    net-to-dev-bufsize: 65536
`, port, dev)
	default:
		return fmt.Sprintf(`connection: &bench
  accepter: tcp(nodelay,readbuf=65536),127.0.0.1,%d
  connector: serialdev(nouucplock,readbuf=65536),%s,115200n81,local
  options:
    kickolduser: true
    chardelay: false
    dev-to-net-bufsize: 65536
    net-to-dev-bufsize: 65536
`, port, dev)
	}
}

func startSer2net(e *env, kind, port int, dev string) ([]*proc, error) {
	name := fmt.Sprintf("ser2net-%d", port)
	cfg := filepath.Join(e.tmp, name+".yaml")
	if err := os.WriteFile(cfg, []byte(ser2netConfig(kind, port, dev)), 0o644); err != nil {
		return nil, err
	}
	p, err := e.start("ser2net", "ser2net", "-n", "-u", "-P", filepath.Join(e.tmp, name+".pid"), "-c", cfg)
	if err != nil {
		return nil, err
	}
	return []*proc{p}, nil
}

func shareServers(e *env) []server {
	s := []server{
		{name: "sertun", telnet: true, start: func(e *env, dev string, port int) ([]*proc, error) {
			p, err := e.start("sertun share", e.sertun, "share", dev, "127.0.0.1:"+strconv.Itoa(port))
			return []*proc{p}, err
		}},
		{name: "ser2net-defaults", telnet: true, start: func(e *env, dev string, port int) ([]*proc, error) {
			return startSer2net(e, ser2netDefaults, port, dev)
		}},
		{name: "ser2net-tuned", telnet: true, start: func(e *env, dev string, port int) ([]*proc, error) {
			return startSer2net(e, ser2netTuned, port, dev)
		}},
		{name: "socat", telnet: false, start: func(e *env, dev string, port int) ([]*proc, error) {
			p, err := e.start("socat", "socat",
				fmt.Sprintf("TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr", port),
				"FILE:"+dev+",raw,echo=0")
			return []*proc{p}, err
		}},
	}
	if e.alt != "" {
		s = append(s, server{name: "sertun-alt", telnet: true, start: func(e *env, dev string, port int) ([]*proc, error) {
			p, err := e.start("sertun-alt share", e.alt, "share", dev, "127.0.0.1:"+strconv.Itoa(port))
			return []*proc{p}, err
		}})
	}
	return s
}

type shareMetrics struct {
	d2n, n2d, p50, p99, cpuD2N, cpuN2D, rssIdle, rssLoad, perClient *metric
}

func newShareMetrics() *shareMetrics {
	return &shareMetrics{
		d2n:       newMetric("throughput device->net", "MB/s", "%.1f", false),
		n2d:       newMetric("throughput net->device", "MB/s", "%.1f", false),
		p50:       newMetric("1-byte round trip p50", "ms", "%.3f", true),
		p99:       newMetric("1-byte round trip p99", "ms", "%.3f", true),
		cpuD2N:    newMetric("CPU per MiB device->net", "ms", "%.1f", true),
		cpuN2D:    newMetric("CPU per MiB net->device", "ms", "%.1f", true),
		rssIdle:   newMetric("RSS idle, 1 client", "MiB", "%.1f", true),
		rssLoad:   newMetric("RSS under load", "MiB", "%.1f", true),
		perClient: newMetric("RSS per extra idle client", "KiB", "%.0f", true),
	}
}

// connectClient dials the server and wraps the connection for its protocol.
func connectClient(addr string, telnet bool, ps []*proc) (end, net.Conn, error) {
	c, err := dialRetry(addr, 5*time.Second, ps...)
	if err != nil {
		return nil, nil, err
	}
	if telnet {
		return newTelnetConn(c), c, nil
	}
	return c, c, nil
}

// shareRun measures one server once, on a fresh pty and a fresh process.
func shareRun(e *env, s server, m *shareMetrics) error {
	pty, err := openPty()
	if err != nil {
		return err
	}
	defer pty.Close()
	port, err := freePort()
	if err != nil {
		return err
	}
	ps, err := s.start(e, pty.Slave, port)
	if err != nil {
		return err
	}
	defer stopAll(ps)
	if err := waitListen(port, 5*time.Second, ps...); err != nil {
		return err
	}
	client, conn, err := connectClient(fmt.Sprintf("127.0.0.1:%d", port), s.telnet, ps)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := syncPath(client, pty.Master, 5*time.Second); err != nil {
		return err
	}
	pids := []int{ps[0].Pid()}
	idle, err := rssSum(pids)
	if err != nil {
		return err
	}
	rtts, d2n, n2d, err := measurePath(e, client, pty.Master, pids, ps, "net")
	if err != nil {
		return err
	}
	m.p50.add(s.name, ms(percentile(rtts, 0.50)))
	m.p99.add(s.name, ms(percentile(rtts, 0.99)))
	m.d2n.add(s.name, d2n.MBps())
	m.n2d.add(s.name, n2d.MBps())
	m.cpuD2N.add(s.name, 1000*d2n.CPUPerMiB())
	m.cpuN2D.add(s.name, 1000*n2d.CPUPerMiB())
	m.rssIdle.add(s.name, float64(idle)/1024)
	m.rssLoad.add(s.name, float64(max(d2n.RSSMax, n2d.RSSMax))/1024)
	e.logf("  %-18s d->n %6.1f MB/s (%d B, crc ok)  n->d %6.1f MB/s (%d B, crc ok)  p50 %.3f ms p99 %.3f ms (%d rtts)  cpu %.1f/%.1f ms/MiB  rss %d/%d KiB",
		s.name, d2n.MBps(), d2n.Bytes, n2d.MBps(), n2d.Bytes, ms(percentile(rtts, 0.5)), ms(percentile(rtts, 0.99)), len(rtts),
		1000*d2n.CPUPerMiB(), 1000*n2d.CPUPerMiB(), idle, max(d2n.RSSMax, n2d.RSSMax))
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// clientCost measures what each extra idle client costs a server in shared
// mode: (RSS with N clients - RSS with 1) / (N-1).
func clientCost(e *env, name string, argv func(dev string, port int) []string, m *shareMetrics) error {
	pty, err := openPty()
	if err != nil {
		return err
	}
	defer pty.Close()
	port, err := freePort()
	if err != nil {
		return err
	}
	p, err := e.start(name, argv(pty.Slave, port)...)
	if err != nil {
		return err
	}
	defer p.stop()
	if err := waitListen(port, 5*time.Second, p); err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	first, conn, err := connectClient(addr, true, []*proc{p})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := syncPath(first, pty.Master, 5*time.Second); err != nil {
		return err
	}
	settle := func() { time.Sleep(300 * time.Millisecond) }
	settle()
	rss1, err := rssKiB(p.Pid())
	if err != nil {
		return err
	}
	for i := 1; i < e.clients; i++ {
		c, conn, err := connectClient(addr, true, []*proc{p})
		if err != nil {
			return err
		}
		defer conn.Close()
		// A reader answers the server's negotiation, as a real client would.
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	settle()
	if !p.alive() {
		return p.failure()
	}
	rssN, err := rssKiB(p.Pid())
	if err != nil {
		return err
	}
	m.perClient.add(name, float64(rssN-rss1)/float64(e.clients-1))
	e.logf("  %-18s RSS %d KiB with 1 client, %d KiB with %d", name, rss1, rssN, e.clients)
	return nil
}

func benchShare(e *env) error {
	servers := shareServers(e)
	m := newShareMetrics()
	notes := map[string]string{}
	if e.sertun == "" {
		notes["sertun"] = "not available: " + e.why
	}
	failed := map[string]bool{}
	for run := 1; run <= e.runs; run++ {
		e.logf("share: run %d/%d", run, e.runs)
		for _, s := range inTurn(servers, run-1) {
			if failed[s.name] || (s.name == "sertun" && e.sertun == "") || e.skip(s.name) {
				continue
			}
			if err := shareRun(e, s, m); err != nil {
				failed[s.name] = true
				notes[s.name] = fmt.Sprintf("FAILED in run %d: %v", run, err)
				e.logf("  %s: %v", s.name, err)
			}
		}
		if e.sertun != "" && !failed["sertun --shared"] && !e.skip("sertun") {
			err := clientCost(e, "sertun", func(dev string, port int) []string {
				return []string{e.sertun, "share", "--shared", dev, "127.0.0.1:" + strconv.Itoa(port)}
			}, m)
			if err != nil {
				failed["sertun --shared"] = true
				notes["sertun"] += fmt.Sprintf(" per-client figure FAILED: %v", err)
			}
		}
	}
	cols := []string{"sertun", "ser2net-defaults", "ser2net-tuned", "socat"}
	if e.alt != "" {
		cols = append(cols, "sertun-alt")
	}
	fmt.Printf("\n== share: one client through the server to a pty device (127.0.0.1; %d runs; median [min..max]; ↑ higher is better, ↓ lower) ==\n", e.runs)
	fmt.Printf("   bulk: %v per direction per run, random bytes incl. 0xFF (IAC-escaped toward the device), every run's byte count and CRC-32C verified\n", e.window)
	fmt.Printf("   round trip: client writes 1 byte to TCP, the device end echoes it, for %v per run (at most %d); CPU = utime+stime of the server from /proc\n", e.rttCap, e.rtts)
	fmt.Printf("   per extra client: sertun share --shared, (RSS with %d idle clients - RSS with 1)/%d\n", e.clients, e.clients-1)
	fmt.Println("   sertun: sertun share PTY 127.0.0.1:PORT (defaults: telnet + RFC 2217 listener, one client)")
	fmt.Println("   ser2net-defaults: ser2net -n -u, accepter telnet(rfc2217),tcp; connector serialdev(nouucplock),PTY,115200n81,local")
	fmt.Println("   ser2net-tuned: the tuned config of shared/peers.md (readbuf/writebuf 65536, nodelay, chardelay: false, 64 KiB bufsizes)")
	fmt.Println("   socat: socat TCP-LISTEN:PORT,bind=127.0.0.1,reuseaddr FILE:PTY,raw,echo=0 (no telnet)")
	fmt.Println("   the client speaks minimal telnet to the RFC 2217 servers: agrees to BINARY and SGA, refuses every other option (COM-PORT too), strips commands, undoubles IAC")
	printTable(os.Stdout, cols, []ratio{{"sertun", "ser2net-tuned", "sertun/ser2net-tuned"}, {"sertun", "socat", "sertun/socat"}},
		[]*metric{m.d2n, m.n2d, m.p50, m.p99, m.cpuD2N, m.cpuN2D, m.rssIdle, m.rssLoad, m.perClient}, notes)
	printShareTargets(m, notes)
	return nil
}

func printShareTargets(m *shareMetrics, notes map[string]string) {
	fmt.Println("\n   must-show (issue 2), sertun share on its defaults:")
	check := func(what string, ok bool, detail string) {
		if strings.Contains(detail, "NaN") {
			fmt.Printf("   n/a  %s: reference not measured\n", what)
			return
		}
		verdict := "FAIL"
		if ok {
			verdict = "ok  "
		}
		fmt.Printf("   %s %s: %s\n", verdict, what, detail)
	}
	if len(m.d2n.vals["sertun"]) == 0 {
		fmt.Println("   (sertun not measured)")
		return
	}
	for _, t := range []*metric{m.d2n, m.n2d} {
		s, tu, so := t.median("sertun"), t.median("ser2net-tuned"), t.median("socat")
		check(t.name+" >= ser2net tuned", s >= tu, fmt.Sprintf("%.1f vs %.1f MB/s", s, tu))
		check(t.name+" >= 0.9 x socat", s >= 0.9*so, fmt.Sprintf("%.1f vs %.1f MB/s (%.2fx)", s, so, s/so))
	}
	s, tu := m.p50.median("sertun"), m.p50.median("ser2net-tuned")
	check("round trip p50 <= ser2net tuned", s <= tu, fmt.Sprintf("%.3f vs %.3f ms", s, tu))
	for _, t := range []*metric{m.cpuD2N, m.cpuN2D} {
		s, tu := t.median("sertun"), t.median("ser2net-tuned")
		check(t.name+" <= ser2net tuned", s <= tu, fmt.Sprintf("%.1f vs %.1f ms/MiB", s, tu))
	}
	r := m.rssIdle.median("sertun")
	check("RSS idle < 10 MiB", r < 10, fmt.Sprintf("%.1f MiB", r))
	if len(m.perClient.vals["sertun"]) > 0 {
		fmt.Printf("   info each extra idle client costs sertun %.0f KiB\n", m.perClient.median("sertun"))
	}
}
