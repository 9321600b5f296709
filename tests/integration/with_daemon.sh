#!/usr/bin/env bash
# Runs a command against a temporary atolld: a private socket and repository, the cpu backend of
# the build tree, the bundled accelerators installed. Usage: with_daemon.sh COMMAND [ARGS...]
# The build folder is found from COMMAND's location (the nearest folder above it with a
# CMakeCache.txt), or given as ATOLL_BUILD_DIR.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

build=${ATOLL_BUILD_DIR:-}
if [ -z "$build" ]; then
  dir=$(cd "$(dirname "$(command -v "$1")")" && pwd)
  while [ "$dir" != / ] && [ ! -f "$dir/CMakeCache.txt" ]; do dir=$(dirname "$dir"); done
  [ -f "$dir/CMakeCache.txt" ] || { echo "$0: cannot find the build folder of $1" >&2; exit 2; }
  build=$dir
fi

# shellcheck source=../../scripts/lib/private_daemon.sh
. "$(dirname "$0")/../../scripts/lib/private_daemon.sh"
tmp=$(mktemp -d /tmp/atoll-with-daemon-XXXXXX)
cleanup() {
  private_daemon_stop
  rm -rf "$tmp"
}
trap cleanup EXIT
private_daemon_start "$build" "$tmp" "vector vector_int vision"
status=0
"$@" || status=$?
if [ $status -ne 0 ]; then
  echo "--- atolld log ---" >&2
  cat "$tmp/atolld.log" >&2
fi
exit $status
