#!/usr/bin/env bash
# Runs the whole CUDA suite and the CUDA benchmarks on a machine with an NVIDIA GPU, from a bundle
# made by scripts/gpu/pack.sh on the build machine: the cuda backend's unit, plugin and GPU tests,
# the bundled accelerators on every backend (the cuda row included), then bench/run_cuda.sh three
# times (the defaults; the request rate with 16 streams; the round trip with zero-copy). Prints a summary last; writes every log
# and the benchmarks' JSON into OUT_DIR/gpu-results.tar.gz, plus summary.txt and bench.json.
#
# With --multi-gpu it runs only bench/run_multi_gpu.sh instead (throughput over 1, 2, 4... GPUs of
# the host against N x one GPU, and two weighted tenants across all of them), for a host with
# several GPUs; it writes summary.txt, multi_gpu.json and gpu-results.tar.gz the same way.
#
# Usage: scripts/gpu/run.sh [BUNDLE_DIR] [OUT_DIR]
#        scripts/gpu/run.sh --multi-gpu [BUNDLE_DIR [OUT_DIR [BENCH_OPTION...]]]
#   BUNDLE_DIR    default: gpu-bundle/ at the repository root
#   OUT_DIR       default: $OUT, else gpu-results/
#   BENCH_OPTION  passed to multi_gpu_bench, e.g. --quick or --gpus 1,2
# Exit status: 0 when every test passed (skips count as passes only without a GPU); with
# --multi-gpu, the benchmark's (3: no usable GPU).
set -uo pipefail

multi_gpu=0
if [ "${1:-}" = --multi-gpu ]; then
  multi_gpu=1
  shift
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../lib/bundle_env.sh
. "$root/scripts/lib/bundle_env.sh"
bundle_enter "$root" "${1:-$root/gpu-bundle}"
out=${2:-${OUT:-$root/gpu-results}}
mkdir -p "$out"
work=$(mktemp -d /tmp/atoll-gpu-XXXXXX)

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm); $(nproc) cores"
  nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id,temperature.gpu,power.draw \
    --format=csv,noheader 2>&1 || echo "nvidia-smi: not available"
  echo "source: $(git -C "$root" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
} | tee "$work/machine.txt"

# excerpt TITLE STATUS LOG SED_SCRIPT LINES: the part of a benchmark's log the summary shows: what
# SED_SCRIPT prints when it succeeded, else its last LINES lines.
excerpt() {
  echo "$1 (exit $2):"
  if [ "$2" -eq 0 ]; then sed -n "$4" "$3"; else tail -"$5" "$3"; fi
}

# finish JSON STATUS: hands work/summary.txt, work/JSON and every log (gpu-results.tar.gz) to
# OUT_DIR, prints the summary and exits with STATUS.
finish() {
  cp "$work/summary.txt" "$out/summary.txt"
  [ -f "$work/$1" ] && cp "$work/$1" "$out/$1"
  tar -C "$work" -czf "$out/gpu-results.tar.gz" .
  rm -rf "$work"
  cat "$out/summary.txt"
  exit "$2"
}

# The multi-GPU benchmark alone.
if [ $multi_gpu -eq 1 ]; then
  echo "=== multi-GPU benchmark" >&2
  "$root/bench/run_multi_gpu.sh" "$build" --json "$work/multi_gpu.json" "${@:3}" \
    >"$work/multi_gpu.log" 2>&1
  multi_status=$?
  {
    cat "$work/machine.txt"
    echo
    excerpt "multi-GPU benchmark" $multi_status "$work/multi_gpu.log" \
      '/^multi_gpu_bench /p; /^(a) Scaling\|^(b) Tenants/,$p' 40
  } >"$work/summary.txt"
  finish multi_gpu.json $multi_status
fi

failed=0
summary=()
run_test() {
  local name=$1 binary=$2
  shift 2
  echo "=== $name" >&2
  local started=$SECONDS
  timeout 300 "$binary" --gtest_color=no "$@" >"$work/$name.log" 2>&1
  local status=$?
  local passed skipped failures
  # Each test's own line ends with its time; gtest's closing lists repeat the names without it.
  passed=$(grep -cE '^\[       OK \] .* \([0-9]+ ms\)$' "$work/$name.log")
  skipped=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "$work/$name.log")
  failures=$(grep -cE '^\[  FAILED  \] .* \([0-9]+ ms\)$' "$work/$name.log")
  summary+=("$(printf '%-22s exit %3d  passed %3d  skipped %3d  failed %3d  (%d s)' "$name" \
              "$status" "$passed" "$skipped" "$failures" $((SECONDS - started)))")
  [ $status -eq 0 ] || failed=1
  grep -E '^\[  (FAILED|SKIPPED) \]|Failure$|^/.*: (Failure|error)' "$work/$name.log" | head -40 >&2
}
run_test cuda_unit_test "$build/backends/cuda/cuda_unit_test"
run_test cuda_backend_test "$build/backends/cuda/cuda_backend_test"
run_test cuda_gpu_test "$build/backends/cuda/cuda_gpu_test"
if [ -x "$build/tests/integration/cuda_isolation_test" ]; then
  run_test cuda_isolation_test "$build/tests/integration/cuda_isolation_test"
fi
if [ -x "$build/accelerators/accelerators_test" ]; then
  run_test accelerators_test "$build/accelerators/accelerators_test"
fi

echo "=== benchmarks" >&2
"$root/bench/run_cuda.sh" "$build" --json "$work/bench.json" >"$work/bench.log" 2>&1
bench_status=$?
"$root/bench/run_cuda.sh" "$build" --cuda-config '{"streams": 16}' --scenarios rate \
  --json "$work/bench_rate_16_streams.json" >"$work/bench_rate_16_streams.log" 2>&1
rate_status=$?
"$root/bench/run_cuda.sh" "$build" --cuda-config '{"zero_copy_bytes": 65536}' \
  --scenarios roundtrip --json "$work/bench_roundtrip_zero_copy.json" \
  >"$work/bench_roundtrip_zero_copy.log" 2>&1
zero_copy_status=$?
# The same round trip and rate with the GPUs inside atolld ("isolate": "none"), against the
# default process per GPU.
"$root/bench/run_cuda.sh" "$build" --cuda-config '{"isolate": "none"}' --scenarios roundtrip,rate \
  --json "$work/bench_in_process.json" >"$work/bench_in_process.log" 2>&1
in_process_status=$?

{
  cat "$work/machine.txt"
  echo
  printf '%s\n' "${summary[@]}"
  echo
  excerpt "benchmarks" $bench_status "$work/bench.log" '/^(a)/,$p' 40
  echo
  excerpt "request rate with 16 streams" $rate_status "$work/bench_rate_16_streams.log" \
    '/^(c)/,$p' 20
  echo
  excerpt "round trip with zero_copy_bytes 65536" $zero_copy_status \
    "$work/bench_roundtrip_zero_copy.log" '/^(a) Round/,/^floor/p' 20
  echo
  excerpt "GPUs inside atolld (isolate none)" $in_process_status "$work/bench_in_process.log" \
    '/^(a)/,$p' 40
} >"$work/summary.txt"
finish bench.json $((failed | bench_status))
