#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang into build-fuzz and runs each for
# FUZZ_SECONDS (default 60) from its committed seed corpus. A crash, a sanitizer report, a leak
# or a timeout fails the run and leaves the input in BUILD_DIR/fuzz-artifacts/. New inputs go to
# BUILD_DIR/fuzz-corpus/, never into the committed corpus.
#   fuzz.sh [TARGET...]     TARGET: protocol, manifest, config (default: all three)
# Long runs: FUZZ_RUNS=10000000 fuzz.sh protocol  (runs that many inputs instead of a time).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}
jobs=${JOBS:-$(nproc)}
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -ne 0 ] || targets=(protocol manifest config)

# -g1: file:line in reports, at a fraction of full debug info's compile time.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DATOLL_FUZZ=ON \
  -DATOLL_BUILD_TESTS=OFF -DATOLL_BUILD_BENCH=OFF >/dev/null
ninja -C "$build" -j"$jobs" "${targets[@]/#/fuzz_}"

mkdir -p "$build/fuzz-artifacts"
for target in "${targets[@]}"; do
  corpus=$build/fuzz-corpus/$target
  mkdir -p "$corpus"
  dict=()
  [ -f "$root/fuzz/$target.dict" ] && dict=(-dict="$root/fuzz/$target.dict")
  limit=(-max_total_time="$seconds")
  [ -n "${FUZZ_RUNS:-}" ] && limit=(-runs="$FUZZ_RUNS")
  echo "== fuzz_$target (${FUZZ_RUNS:+$FUZZ_RUNS runs}$([ -n "${FUZZ_RUNS:-}" ] || echo "$seconds s"))"
  # The filter drops libFuzzer's progress lines; pipefail keeps the fuzzer's own exit status.
  "$build/fuzz/fuzz_$target" "${limit[@]}" "${dict[@]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$target-" \
    "$corpus" "$root/fuzz/corpus/$target" 2>&1 | (grep -v '^#[0-9]*.*\(NEW\|REDUCE\|pulse\)' || true)
done
echo "== fuzz: clean"
