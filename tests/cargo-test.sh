#!/bin/bash
# `cargo test --workspace` with its test binaries run TEST_JOBS at a time (default 2), not one
# after another: most binaries hold one or two tests that spend their time waiting on guests
# booting under TCG, so one at a time leaves a core idle (measured: 782 s of binaries, each
# using 0.4 to 1.4 cores). Each binary runs as cargo test runs it (in its package's
# directory, with --show-output: what tests print is part of the record); its output is
# printed whole when it ends, with its time. The binaries that measure a guest's share of a
# CPU or time a relay to the millisecond (SOLO) run after the others, alone: a neighbour
# would take that share. The exit status
# is non-zero if any failed.
#   tests/cargo-test.sh [TEXT]    (only the binaries whose name holds TEXT; run by tests/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${TEST_JOBS:-2}
# privilege: a spinning guest must get 70 % of a CPU, then its limit of 30 %; capture: each
# frame stamped within 10 ms of when the test's own relay saw it.
SOLO=(privilege capture)
filter=${1:-}
logs=$(mktemp -d /tmp/gns3-qemud-tests.XXXXXX)
trap 'rm -rf "$logs"' EXIT

# The test binaries as cargo builds them: "executable<TAB>package directory<TAB>name".
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics |
	python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m.get("executable"):
        src = m["target"]["src_path"]
        name = m["target"]["name"] if m["target"]["kind"] != ["lib"] else m["target"]["name"] + " (unit)"
        print(m["executable"], os.path.dirname(m["manifest_path"]), name, sep="\t")
' | awk -F'\t' -v f="$filter" 'index($3, f)' >"$logs/binaries"
# The workspace's programs too (gns3-qemuctl, the compute, the supervisor), which the tests
# would otherwise build on first use, under a neighbour measuring its guest.
cargo build --workspace --locked --bins
[ -s "$logs/binaries" ] || {
	echo "cargo-test: no test binary${filter:+ matches '$filter'}" >&2
	exit 1
}

# run_one INDEX: runs line INDEX of the list; its log and its status in files of its own.
run_one() {
	local exe dir name start
	IFS=$'\t' read -r exe dir name < <(sed -n "$1p" "$logs/binaries")
	start=$SECONDS
	(cd "$dir" && "$exe" --show-output) >"$logs/$1.log" 2>&1
	echo $? >"$logs/$1.rc"
	{
		echo "     Running $name ($exe): $((SECONDS - start)) s"
		cat "$logs/$1.log"
	} >"$logs/$1.out"
	# Whole, not interleaved with another binary's.
	flock "$logs/print.lock" cat "$logs/$1.out"
}
export -f run_one
export logs
solo() { printf '%s\n' "${SOLO[@]}" | grep -qx -- "$1"; }
: >"$logs/shared"
: >"$logs/alone"
i=0
while IFS=$'\t' read -r _ _ name; do
	i=$((i + 1))
	if solo "$name"; then echo "$i" >>"$logs/alone"; else echo "$i" >>"$logs/shared"; fi
done <"$logs/binaries"
xargs -P "$jobs" -I{} bash -c 'run_one {}' <"$logs/shared"
xargs -P 1 -I{} bash -c 'run_one {}' <"$logs/alone"

failed=0
while IFS= read -r rc; do
	[ "$(cat "$rc")" = 0 ] || {
		failed=$((failed + 1))
		echo "FAILED: $(sed -n "$(basename "$rc" .rc)p" "$logs/binaries" | cut -f3)"
	}
done < <(ls "$logs"/*.rc)
[ "$failed" -eq 0 ] || {
	echo "cargo-test: $failed test binaries failed (their output above)"
	exit 1
}
echo "cargo-test: $(wc -l <"$logs/binaries") test binaries passed, $jobs at a time"
