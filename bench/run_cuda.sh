#!/usr/bin/env bash
# Runs atoll_cuda_bench against a private atolld: a temporary socket, repository and
# configuration, the backends of the build tree, and the vector-cuda, testing-cuda and (cpu)
# testing accelerators installed. Needs a GPU; builds nothing: build first with
# `ninja -C BUILD_DIR atoll_cuda_bench`.
#
# Usage: bench/run_cuda.sh [BUILD_DIR] [--cuda-config JSON] [--daemon-arg ARG]... [bench options]
#   BUILD_DIR           the CMake build folder (default: build/ next to bench/)
#   --cuda-config JSON  the cuda backend's settings (default {}), e.g. '{"streams": 16}'
#   --daemon-arg ARG    pass ARG to atolld
#   --json FILE         write the results as JSON too; --quick for a smoke run; --help for the rest
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/../build
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  build=$1
  shift
fi
[ -d "$build" ] || { echo "$0: no build folder '$build'" >&2; exit 2; }
build=$(cd "$build" && pwd)

cuda_config='{}'
daemon_args=()
bench_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --cuda-config) [ $# -ge 2 ] || { echo "$0: --cuda-config needs a value" >&2; exit 2; }
                   cuda_config=$2; shift 2 ;;
    --cuda-config=*) cuda_config=${1#--cuda-config=}; shift ;;
    --daemon-arg) [ $# -ge 2 ] || { echo "$0: --daemon-arg needs a value" >&2; exit 2; }
                  daemon_args+=("$2"); shift 2 ;;
    --daemon-arg=*) daemon_args+=("${1#--daemon-arg=}"); shift ;;
    *) bench_args+=("$1"); shift ;;
  esac
done

bench=$build/bin/atoll_cuda_bench
for f in "$bench" "$build/bin/atolld" "$build/bin/atoll" \
         "$build/lib/atoll/backends/libatoll_backend_cuda.so" \
         "$build/accelerators/vector-cuda/bitstream.json" \
         "$build/accelerators/testing-cuda/bitstream.json" \
         "$build/accelerators/testing/bitstream.json"; do
  if [ ! -e "$f" ]; then
    echo "$0: missing $f; build with \`ninja -C $build atoll_cuda_bench\` (the testing-cuda" \
         "accelerator needs -DATOLL_BUILD_TESTS=ON, and nvcc)" >&2
    exit 2
  fi
done

for a in ${bench_args[@]+"${bench_args[@]}"}; do
  case $a in -h|--help) exec "$bench" --help ;; esac
done

# shellcheck source=../scripts/lib/private_daemon.sh
. "$here/../scripts/lib/private_daemon.sh"
tmp=$(mktemp -d /tmp/atoll-cuda-bench-XXXXXX)
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  private_daemon_stop
  rm -rf "$tmp"
}
trap cleanup EXIT
# The cpu backend runs testing.noop, the reference for the daemon's own cost; vector.addition
# has only its cuda version installed.
private_daemon_start "$build" "$tmp" "vector-cuda testing-cuda testing" --log-level warn \
  --backend "cuda=$cuda_config" \
  ${daemon_args[@]+"${daemon_args[@]}"}
pid=$PRIVATE_DAEMON_PID

git=$(git -C "$here/.." describe --always --dirty --abbrev=40 2>/dev/null || true)
status=0
"$bench" --build "$build" --daemon-pid "$pid" --daemon-config "$cuda_config" ${git:+--git "$git"} \
  ${bench_args[@]+"${bench_args[@]}"} || status=$?
if [ $status -ne 0 ] || [ -s "$tmp/atolld.log" ]; then
  echo "--- atolld log ---" >&2
  cat "$tmp/atolld.log" >&2
fi
exit $status
