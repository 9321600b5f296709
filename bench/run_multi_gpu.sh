#!/usr/bin/env bash
# Runs multi_gpu_bench: fractal.mandelbrot through atolld's cuda backend on 1, 2, 4... GPUs of this
# host (throughput against N x one GPU), then two tenants with weights 1:1 and 1:3 on all of them
# (shares against weights; needs root, to run clients as other users). The benchmark starts its
# own atolld for each configuration, on a temporary socket and repository with the build's
# backends and accelerators/mandelbrot-cuda installed. Builds nothing: build first with
# `ninja -C BUILD_DIR multi_gpu_bench`.
#
# Usage: bench/run_multi_gpu.sh [BUILD_DIR] [bench options]
#   BUILD_DIR   the CMake build folder (default: build/ next to bench/)
#   --json FILE write the results as JSON too; --quick for a smoke run; --help for the rest
# Exit status: the benchmark's: 0 when it ran (targets are reported, never asserted), 2 for a
# usage error or a missing file, 3 when the host has no usable NVIDIA GPU, 1 for other failures.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/../build
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  build=$1
  shift
fi
[ -d "$build" ] || { echo "$0: no build folder '$build'" >&2; exit 2; }
build=$(cd "$build" && pwd)

bench=$build/bin/multi_gpu_bench
if [ ! -x "$bench" ]; then
  echo "$0: missing $bench; build with \`ninja -C $build multi_gpu_bench\` (needs the cuda" \
       "backend and nvcc)" >&2
  exit 2
fi
git=$(git -C "$here/.." describe --always --dirty --abbrev=40 2>/dev/null || true)
exec "$bench" --build "$build" ${git:+--git "$git"} "$@"
