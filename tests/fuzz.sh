#!/bin/bash
# Fuzzes the QMP line parser (qmp_parse) and the Options splitter (options_split) for a
# short while, both at once, from the seeds in fuzz/corpus/ and the inputs that once failed
# (fuzz/regressions/). A failing input is left in fuzz/artifacts/<target>/. Installs
# cargo-fuzz if it is missing; runs on the stable toolchain.
#   tests/fuzz.sh                     # 30 s per target
#   FUZZ_SECONDS=300 tests/fuzz.sh
# What a run adds to the corpus stays in $FUZZ_TARGET_DIR/corpus/ (default fuzz/target), so
# the seeds stay a handful of files.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-30}
target_dir=${FUZZ_TARGET_DIR:-fuzz/target}
targets=(qmp_parse options_split)
# cargo-fuzz passes nightly-only flags (-Zsanitizer, sancov passes); this lets stable take
# them, so CI needs no second toolchain.
export RUSTC_BOOTSTRAP=1
# Unoptimised and without a sanitizer: the build is most of this script's time, and in
# safe Rust a sanitizer finds little that a panic does not. The README's long runs use
# cargo fuzz's defaults (optimised, AddressSanitizer).
flags=(--dev --sanitizer none --target-dir "$target_dir")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  # --debug: it only drives cargo and libFuzzer, and builds in about half the time.
  cargo install cargo-fuzz --version 0.13.2 --locked --debug
fi

cargo fuzz build "${flags[@]}"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
pids=()
for t in "${targets[@]}"; do
  # libFuzzer writes what it finds to the first directory and only reads the others.
  corpus=("$target_dir/corpus/$t" "fuzz/corpus/$t")
  [ -d "fuzz/regressions/$t" ] && corpus+=("fuzz/regressions/$t")
  mkdir -p "$target_dir/corpus/$t"
  cargo fuzz run "${flags[@]}" "$t" "${corpus[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$logs/$t" 2>&1 &
  pids+=($!)
done

failed=0
for i in "${!targets[@]}"; do
  t=${targets[$i]}
  if wait "${pids[$i]}"; then
    # e.g. "#319321  DONE   cov: 864 ft: 3888 corp: 470/31Kb lim: 647 exec/s: 5234 rss: 48Mb"
    awk -v t="$t" -v s="$seconds" '$2 == "DONE" {
      sub("#", "", $1)
      printf "%s: %s runs in %s s (%s/s), coverage %s edges %s features, corpus %s\n",
        t, $1, s, $12, $4, $6, $8
    }' "$logs/$t"
  else
    failed=1
    echo "== fuzz target $t FAILED:" >&2
    # From the panic to the failing input and how to rerun it, without backtrace frames.
    report=$(grep -v '^ *[0-9]*: \|^ *at ' "$logs/$t" |
      awk '/panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer/ {p = 1} /^Minimize/ {p = 0} p')
    if [ -n "$report" ]; then echo "$report"; else tail -n 40 "$logs/$t"; fi >&2
  fi
done
exit "$failed"
