#!/usr/bin/env bash
# Runs Atoll's benchmarks against a private atolld: a temporary socket, repository and
# configuration, the cpu backend of the build tree, the vector and testing accelerators installed.
# The opencl scenario runs against a second private atolld whose only backend is opencl, with
# vector-opencl installed. Builds nothing: build first with `ninja -C BUILD_DIR atoll_bench`.
#
# Usage: bench/run.sh [BUILD_DIR] [--daemon-arg ARG]... [atoll_bench options]
#   BUILD_DIR         the CMake build folder (default: build/ next to bench/)
#   --daemon-arg ARG  pass ARG to atolld, e.g. --daemon-arg=--backend=cpu={"spin_us":0}
#   --scenarios LIST  roundtrip,threads,processes,devices,tenants,reprogram and, when the build
#                     has the opencl backend, opencl (the default is all of them); devices,
#                     tenants and reprogram start daemons of their own
#   --json FILE       write the results as JSON too (the opencl scenario's to FILE with -opencl
#                     before .json when both daemons run); --quick for a smoke run; --help for
#                     the rest
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$here/../build
if [ $# -gt 0 ] && [[ $1 != -* ]]; then
  build=$1
  shift
fi
[ -d "$build" ] || { echo "$0: no build folder '$build'" >&2; exit 2; }
build=$(cd "$build" && pwd)

opencl_plugin=$build/lib/atoll/backends/libatoll_backend_opencl.so
scenarios=roundtrip,threads,processes,devices,tenants,reprogram
[ -e "$opencl_plugin" ] && scenarios=$scenarios,opencl
json=
daemon_args=()
bench_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --daemon-arg) [ $# -ge 2 ] || { echo "$0: --daemon-arg needs a value" >&2; exit 2; }
                  daemon_args+=("$2"); shift 2 ;;
    --daemon-arg=*) daemon_args+=("${1#--daemon-arg=}"); shift ;;
    --scenarios) [ $# -ge 2 ] || { echo "$0: --scenarios needs a value" >&2; exit 2; }
                 scenarios=$2; shift 2 ;;
    --scenarios=*) scenarios=${1#--scenarios=}; shift ;;
    --json) [ $# -ge 2 ] || { echo "$0: --json needs a value" >&2; exit 2; }
            json=$2; shift 2 ;;
    --json=*) json=${1#--json=}; shift ;;
    *) bench_args+=("$1"); shift ;;
  esac
done

# The cpu daemon's scenarios, and whether the opencl daemon runs.
cpu_scenarios=
opencl=false
IFS=, read -ra wanted <<<"$scenarios"
for s in "${wanted[@]}"; do
  case $s in
    opencl) opencl=true ;;
    '') ;;
    *) cpu_scenarios=${cpu_scenarios:+$cpu_scenarios,}$s ;;
  esac
done

bench=$build/bin/atoll_bench
required=("$bench" "$build/bin/atolld" "$build/bin/atoll" "$build/lib/atoll/backends")
[ -n "$cpu_scenarios" ] && required+=("$build/accelerators/vector/bitstream.json"
                                      "$build/accelerators/testing/bitstream.json")
$opencl && required+=("$opencl_plugin" "$build/accelerators/vector-opencl/bitstream.json")
for f in "${required[@]}"; do
  if [ ! -e "$f" ]; then
    echo "$0: missing $f; build with \`ninja -C $build atoll_bench\` (the testing accelerator" \
         "needs -DATOLL_BUILD_TESTS=ON, the opencl scenario the OpenCL headers)" >&2
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
git=$(git -C "$here/.." describe --always --dirty --abbrev=40 2>/dev/null || true)
status=0

# run_bench STATE_DIR SCENARIOS JSON: atoll_bench against the running private daemon.
run_bench() {
  local state=$1 list=$2 out=$3 rc=0
  "$bench" --build "$build" --daemon-pid "$PRIVATE_DAEMON_PID" ${git:+--git "$git"} \
    --scenarios "$list" ${out:+--json "$out"} ${bench_args[@]+"${bench_args[@]}"} || rc=$?
  if [ $rc -ne 0 ] || [ -s "$state/atolld.log" ]; then
    echo "--- atolld log ---" >&2
    cat "$state/atolld.log" >&2
  fi
  [ $rc -eq 0 ] || status=$rc
}

if [ -n "$cpu_scenarios" ]; then
  mkdir -p "$tmp/cpu"
  # The cpu figures are the cpu backend's alone: no OpenCL runtime threads beside it.
  cpu_only=()
  [ -e "$opencl_plugin" ] && cpu_only=(--backend 'opencl={"enabled": false}')
  private_daemon_start "$build" "$tmp/cpu" "vector testing" --log-level warn \
    ${cpu_only[@]+"${cpu_only[@]}"} ${daemon_args[@]+"${daemon_args[@]}"}
  run_bench "$tmp/cpu" "$cpu_scenarios" "$json"
  private_daemon_stop
fi

if $opencl; then
  opencl_json=$json
  [ -n "$json" ] && [ -n "$cpu_scenarios" ] && opencl_json=${json%.json}-opencl.json
  mkdir -p "$tmp/opencl"
  # Only the opencl backend, so vector.addition runs on OpenCL; no disk cache left behind.
  private_daemon_start "$build" "$tmp/opencl" "vector-opencl" --log-level warn \
    --backend 'cpu={"enabled": false}' --backend 'opencl={"cache_dir": ""}' \
    ${daemon_args[@]+"${daemon_args[@]}"}
  run_bench "$tmp/opencl" opencl "$opencl_json"
  private_daemon_stop
fi
exit $status
