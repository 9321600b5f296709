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

tmp=$(mktemp -d /tmp/atoll-with-daemon-XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

export ATOLL_SOCKET=$tmp/atolld.sock
export ATOLL_REPOSITORY=$tmp/repository
for a in vector vector_int vision; do
  "$build/bin/atoll" install "$build/accelerators/$a" >/dev/null
done
"$build/bin/atolld" --socket "$ATOLL_SOCKET" --repository "$ATOLL_REPOSITORY" \
  --backend-dir "$build/lib/atoll/backends" 2>"$tmp/atolld.log" &
pid=$!
for _ in $(seq 200); do
  [ -S "$ATOLL_SOCKET" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/atolld.log" >&2; exit 1; }
  sleep 0.05
done
status=0
"$@" || status=$?
if [ $status -ne 0 ]; then
  echo "--- atolld log ---" >&2
  cat "$tmp/atolld.log" >&2
fi
exit $status
