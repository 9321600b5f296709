#!/usr/bin/env bash
# Where a CUDA round trip's time goes, hop by hop: runs the round-trip benchmark from a bundle of a
# build configured with -DATOLL_HOP_TRACE=ON (scripts/gpu/pack.sh), once with each GPU in a
# process of its own (the default) and once with the GPUs inside atolld, and prints
# scripts/hop_trace_report.py for each. Writes the logs, reports and raw points into OUT_DIR.
#
# Usage: scripts/gpu/trace_roundtrip.sh [BUNDLE_DIR] [OUT_DIR] [atoll_cuda_bench option...]
#   BUNDLE_DIR  default: gpu-bundle/ at the repository root
#   OUT_DIR     default: $OUT, else trace-results/
# The timings of a traced build are a little slower than a plain one's (each point reads the
# clock); compare traced runs with traced runs.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../lib/bundle_env.sh
. "$root/scripts/lib/bundle_env.sh"
bundle_enter "$root" "${1:-$root/gpu-bundle}"
out=${2:-${OUT:-$root/trace-results}}
shift $(($# > 2 ? 2 : $#))
mkdir -p "$out"

options=("$@")
[ ${#options[@]} -gt 0 ] || options=(--iterations 3000 --warmup 300 --rounds 1)
for mode in default none; do
  config='{}'
  [ $mode = none ] && config='{"isolate": "none"}'
  points=$out/points-$mode
  rm -rf "$points"
  mkdir -p "$points"
  ATOLL_HOP_TRACE_DIR=$points "$root/bench/run_cuda.sh" "$build" --scenarios roundtrip \
    --cuda-config "$config" "${options[@]}" >"$out/bench-$mode.log" 2>&1
  python3 "$root/scripts/hop_trace_report.py" "$points" --min-share 0.05 >"$out/report-$mode.txt"
  echo "== $mode: cuda config $config"
  grep -E 'p50' "$out/bench-$mode.log"
  cat "$out/report-$mode.txt"
done
tar -C "$out" -cJf "$out/points.tar.xz" points-default points-none
rm -rf "$out/points-default" "$out/points-none"
