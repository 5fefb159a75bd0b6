#!/usr/bin/env bash
# The whole check of the tree, as CI runs it: test peers, vet (Linux, Windows,
# macOS), gofmt, the tests under the race detector (the interop tests against
# pyserial, gensio, ser2net, socat and telnet included), and short fuzz runs.
# Every step runs even after a failure, so that one run shows every problem;
# the script exits non-zero if any step failed.
set -euo pipefail

cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

failed=()
# check NAME CMD...: runs CMD, noting NAME if it fails.
check() {
	local name=$1
	shift
	if ! "$@"; then
		failed+=("$name")
		echo "FAILED: $name" >&2
	fi
}

# The interop tests run real peers from Debian packages. Install the missing
# ones (apt-get update only when something is missing).
install_peers() {
	local pkgs=(ser2net python3-serial socat gensio-bin telnet)
	local missing=()
	if ! command -v dpkg >/dev/null 2>&1; then
		echo "not a Debian system: install ${pkgs[*]} yourself; the interop tests skip missing peers (and fail in CI)"
		return 0
	fi
	for p in "${pkgs[@]}"; do
		dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
	done
	for bin in ser2net socat gensiot telnet /usr/bin/python3; do
		command -v "$bin" >/dev/null 2>&1 || echo "note: $bin not found on PATH"
	done
	if [ ${#missing[@]} -eq 0 ]; then
		echo "test peers installed"
		return 0
	fi
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || { echo "need root to install: ${missing[*]}" >&2; return 1; }
		sudo=(sudo)
	fi
	echo "installing test peers: ${missing[*]}"
	"${sudo[@]}" apt-get update -qq
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

step "test peers"
install_peers

step "go vet"
check "go vet (linux)" go vet ./...
check "go vet (windows)" env GOOS=windows go vet ./...
check "go vet (darwin)" env GOOS=darwin go vet ./...

step "gofmt"
unformatted=$(gofmt -l . 2>&1 || true)
if [ -n "$unformatted" ]; then
	echo "not gofmt'ed (run gofmt -w on them):" >&2
	echo "$unformatted" >&2
	failed+=(gofmt)
fi

step "go test -race"
# The interop tests run the sertun binary they build and external peers,
# which go test's cache cannot see: they always run (-count=1).
mapfile -t pkgs < <(go list -e ./... | grep -v '/scripts/interop$')
check "go test" go test -race -timeout 5m "${pkgs[@]}"
check "interop tests" go test -race -count=1 -timeout 5m ./scripts/interop/

step "fuzz"
# fuzz PKG NAME SECONDS. On a loaded machine go's fuzz coordinator can stop
# with "context deadline exceeded" when the time is up although nothing
# failed; such a run, with no failing input written, is tried once more.
fuzz() {
	local out
	if out=$(go test -run '^$' -fuzz "^$2\$" -fuzztime "$3s" "$1" 2>&1); then
		echo "$out" | tail -n 2
		return 0
	fi
	if grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
		echo "$2: the fuzz coordinator timed out with no failing input; once more"
		go test -run '^$' -fuzz "^$2\$" -fuzztime "$3s" "$1" 2>&1 | tail -n 2
		return "${PIPESTATUS[0]}"
	fi
	echo "$out"
	return 1
}
# Every FuzzXxx in the tree, for a few seconds each; the total stays near
# three minutes however many targets there are.
mapfile -t targets < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Z0-9_]' . |
	while read -r f; do
		for name in $(grep -oE '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2); do
			echo "./$(dirname "${f#./}") $name"
		done
	done | sort -u)
if [ ${#targets[@]} -eq 0 ]; then
	echo "no fuzz targets"
else
	per=$((150 / ${#targets[@]}))
	((per > 10)) && per=10
	((per < 2)) && per=2
	for t in "${targets[@]}"; do
		read -r pkg name <<<"$t"
		echo "-- $name ($pkg, ${per}s)"
		check "fuzz $name" fuzz "$pkg" "$name" "$per"
	done
fi

if [ ${#failed[@]} -gt 0 ]; then
	step "FAILED: ${failed[*]}"
	exit 1
fi
step "all checks passed"
