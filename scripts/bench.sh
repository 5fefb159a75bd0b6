#!/usr/bin/env bash
# bench.sh: sertun against the tools people use today, in one run, on the
# same kind of device end (a pty pair held by the bench, which plays the
# device on the master side).
#
#   share   sertun share (defaults, rfc2217 listener) vs ser2net defaults,
#           ser2net tuned and a socat raw relay: throughput each way, 1-byte
#           round trip p50/p99, CPU per MiB, RSS idle/under load, RSS per
#           extra client.
#   attach  program -> sertun attach -> sertun share -> device echo -> back,
#           vs gensiot's pty client in front of ser2net tuned and a socat pty
#           to ser2net's raw port.
#   tunnel  sertun tunnel over sertun cable: goodput share of line rate,
#           echo latency idle and under bulk, vs a bare socat relay.
#
# Every figure is measured BENCH_RUNS times (default 7) and printed as the
# median with min and max: the machine is shared and noisy. BENCH_QUICK=1
# makes every run shorter (for a smoke test, not for numbers).
# BENCH_SECTIONS="share attach tunnel" picks sections; BENCH_VERBOSE=1 logs
# each run (and the tunnel's --stats); BENCH_SERTUN_ALT=/path/to/sertun adds
# a "sertun-alt" column to the share and attach tables, to A/B a change in
# one run. Everything binds to 127.0.0.1 and everything started is stopped
# on exit. Needs: go, ser2net, socat, gensiot (Debian: ser2net socat
# gensio-bin).
set -euo pipefail

cd "$(dirname "$0")/.."
runs=${BENCH_RUNS:-7}
sections=${BENCH_SECTIONS:-share attach tunnel}
flags=(-runs "$runs")
if [[ ${BENCH_QUICK:-0} != 0 ]]; then
	flags+=(-window 500ms -rtts 500 -rtt-cap 500ms -quick)
fi
if [[ ${BENCH_VERBOSE:-0} != 0 ]]; then
	flags+=(-v)
fi
if [[ -n ${BENCH_SERTUN_ALT:-} ]]; then
	flags+=(-sertun-alt "$BENCH_SERTUN_ALT")
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sertun-bench.XXXXXX")
child=""
cleanup() {
	if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
		kill -TERM "$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

for bin in ser2net socat gensiot; do
	command -v "$bin" >/dev/null || {
		echo "bench.sh: $bin is missing (Debian: apt-get install -y ser2net socat gensio-bin)" >&2
		exit 1
	}
done

go build -o "$tmp/benchtool" ./scripts/benchtool
if err=$(go build -o "$tmp/sertun" ./cmd/sertun 2>&1); then
	flags+=(-sertun "$tmp/sertun")
else
	echo "bench.sh: sertun does not build, its columns show n/a:" >&2
	echo "$err" | head -5 >&2
	flags+=(-sertun-missing "go build ./cmd/sertun failed")
fi

echo "sertun bench: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -r), $(go version | cut -d' ' -f3)"
echo "peers: $(ser2net -v 2>&1 | head -1), $(socat -V 2>/dev/null | sed -n 's/^socat version \([^ ]*\).*/socat \1/p'), gensio $(dpkg-query -W -f '${Version}' gensio-bin 2>/dev/null || echo '?')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
start=$SECONDS
for s in $sections; do
	"$tmp/benchtool" "$s" "${flags[@]}" &
	child=$!
	wait "$child"
	child=""
done
echo
echo "bench took $((SECONDS - start)) s; load after: $(cut -d' ' -f1-3 /proc/loadavg)"
