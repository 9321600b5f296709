#!/usr/bin/env bash
# From a fresh Debian 12 machine to a running Atoll: installs what is needed, builds, starts atolld
# on the cpu backend with the bundled accelerators installed, and runs the example program.
# The daemon keeps running afterwards; the script prints how to use and stop it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}

"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"

# A private socket and repository under the build folder, so nothing needs root.
state=$build/var
mkdir -p "$state"
export ATOLL_SOCKET=$state/atolld.sock
export ATOLL_REPOSITORY=$state/repository

if [ -f "$state/atolld.pid" ] && kill -0 "$(cat "$state/atolld.pid")" 2>/dev/null; then
  kill -TERM "$(cat "$state/atolld.pid")"
  while kill -0 "$(cat "$state/atolld.pid")" 2>/dev/null; do sleep 0.1; done
fi

for accelerator in vector vector_int vision mandelbrot; do
  "$build/bin/atoll" install "$build/accelerators/$accelerator" 2>&1 | grep -v "already installed" || true
done

"$build/bin/atolld" --socket "$ATOLL_SOCKET" --repository "$ATOLL_REPOSITORY" \
  </dev/null >"$state/atolld.log" 2>&1 &
echo $! >"$state/atolld.pid"
for _ in $(seq 100); do
  [ -S "$ATOLL_SOCKET" ] && break
  sleep 0.05
done
[ -S "$ATOLL_SOCKET" ] || { cat "$state/atolld.log" >&2; exit 1; }

echo
"$build/bin/atoll" devices
echo
"$build/bin/atoll" list
echo
"$build/bin/quickstart"
cat <<MSG

atolld is running (pid $(cat "$state/atolld.pid"), log $state/atolld.log). To use it:
  export ATOLL_SOCKET=$ATOLL_SOCKET ATOLL_REPOSITORY=$ATOLL_REPOSITORY
  $build/bin/atoll status
Stop it with: kill $(cat "$state/atolld.pid")
MSG
