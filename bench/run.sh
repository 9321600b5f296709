#!/usr/bin/env bash
# Runs Atoll's benchmarks against a private atolld: a temporary socket, repository and
# configuration, the cpu backend of the build tree, the vector and testing accelerators installed.
# Builds nothing: build first with `ninja -C BUILD_DIR atoll_bench`.
#
# Usage: bench/run.sh [BUILD_DIR] [--daemon-arg ARG]... [atoll_bench options]
#   BUILD_DIR         the CMake build folder (default: build/ next to bench/)
#   --daemon-arg ARG  pass ARG to atolld, e.g. --daemon-arg=--backend=cpu={"spin_us":0}
#   --json FILE       write the results as JSON too; --quick for a smoke run; --help for the rest
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/../build
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  build=$1
  shift
fi
[ -d "$build" ] || { echo "$0: no build folder '$build'" >&2; exit 2; }
build=$(cd "$build" && pwd)

daemon_args=()
bench_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --daemon-arg) [ $# -ge 2 ] || { echo "$0: --daemon-arg needs a value" >&2; exit 2; }
                  daemon_args+=("$2"); shift 2 ;;
    --daemon-arg=*) daemon_args+=("${1#--daemon-arg=}"); shift ;;
    *) bench_args+=("$1"); shift ;;
  esac
done

bench=$build/bin/atoll_bench
for f in "$bench" "$build/bin/atolld" "$build/bin/atoll" "$build/lib/atoll/backends" \
         "$build/accelerators/vector/bitstream.json" "$build/accelerators/testing/bitstream.json"; do
  if [ ! -e "$f" ]; then
    echo "$0: missing $f; build with \`ninja -C $build atoll_bench\` (the testing accelerator" \
         "needs -DATOLL_BUILD_TESTS=ON)" >&2
    exit 2
  fi
done

# Help needs no daemon.
for a in ${bench_args[@]+"${bench_args[@]}"}; do
  case $a in -h|--help) exec "$bench" --help ;; esac
done

# shellcheck source=../scripts/lib/private_daemon.sh
. "$here/../scripts/lib/private_daemon.sh"
tmp=$(mktemp -d /tmp/atoll-bench-XXXXXX)
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  private_daemon_stop
  rm -rf "$tmp"
}
trap cleanup EXIT
private_daemon_start "$build" "$tmp" "vector testing" --log-level warn \
  ${daemon_args[@]+"${daemon_args[@]}"}
pid=$PRIVATE_DAEMON_PID

git=$(git -C "$here/.." describe --always --dirty --abbrev=40 2>/dev/null || true)
status=0
"$bench" --build "$build" --daemon-pid "$pid" ${git:+--git "$git"} \
  ${bench_args[@]+"${bench_args[@]}"} || status=$?
if [ $status -ne 0 ] || [ -s "$tmp/atolld.log" ]; then
  echo "--- atolld log ---" >&2
  cat "$tmp/atolld.log" >&2
fi
exit $status
