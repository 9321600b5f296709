#!/usr/bin/env bash
# Builds Atoll with sanitizers and runs tests under them; any sanitizer report fails the run.
#   sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer, every test (build-asan)
#   sanitize.sh tsan   ThreadSanitizer, the concurrency tests (build-tsan)
# BUILD_DIR overrides the folder, JOBS the build's parallelism. Every sanitized process, the
# daemons the tests start and the clients they fork included, writes its reports under
# BUILD_DIR/sanitizer-reports/, which the script prints and counts at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
kind=${1:-}
case "$kind" in
  asan) sanitize=address,undefined; build=${BUILD_DIR:-$root/build-asan} ;;
  tsan) sanitize=thread; build=${BUILD_DIR:-$root/build-tsan} ;;
  *) echo "usage: $0 asan|tsan" >&2; exit 2 ;;
esac
jobs=${JOBS:-$(nproc)}

# What keeps the job inside CI's time on 2 cores, measured on src/daemon/engine.cpp with gcc 12:
# ASan+UBSan at -O1 -g compiles in 79 s, at -O0 -g1 in 31 s (UBSan's checks are what -O1 then
# optimises), and the build, not the tests, is most of the job; TSan compiles fast at -O1, which
# it needs to run at a usable speed. -g1 keeps file:line in every report. Without nvcc: GPU code is not host
# code the sanitizers could check (the cuda backend itself is still built and tested).
if [ "$kind" = asan ]; then optimise="-O0 -g1"; else optimise="-O1 -g1"; fi
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="$optimise" -DCMAKE_CXX_FLAGS_DEBUG="$optimise" \
  -DATOLL_SANITIZE="$sanitize" -DATOLL_BUILD_BENCH=OFF -DATOLL_NVCC=ATOLL_NVCC-NOTFOUND >/dev/null

reports=$build/sanitizer-reports
rm -rf "$reports"
mkdir -p "$reports"
export ASAN_OPTIONS="log_path=$reports/asan:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$root/scripts/ci/lsan.supp"
export TSAN_OPTIONS="log_path=$reports/tsan:halt_on_error=1:second_deadlock_stack=1:suppressions=$root/scripts/ci/tsan.supp"

status=0
if [ "$kind" = asan ]; then
  ninja -C "$build" -j"$jobs"
  (cd "$build" && ctest --output-on-failure --timeout 600 -j"$(nproc)") || status=$?
else
  # The tests where threads meet: the daemon's I/O thread and backend workers under pipelined,
  # multi-threaded, crashing and hostile clients; the cpu backend's concurrent launches; the
  # shared rings' producers and consumers; the engine's polling mutex.
  ninja -C "$build" -j"$jobs" end_to_end_test restart_test hostile_test isolation_test \
    atoll_soak cpu_backend_test atolld atoll-backend-host atoll_cli ring_test ring_channel_test \
    adaptive_mutex_test
  # fork() without exec in a multi-threaded process is outside what TSan supports.
  (cd "$build" && ctest --output-on-failure --timeout 600 -j"$(nproc)" \
    -R '^(EndToEnd|Restart|Hostile|HostileConnections|Isolation|CpuBackend[A-Za-z]*|Ring|RingChannel)\.|^soak_|^PollingOrNot/AdaptiveMutexTest\.' \
    -E 'CrashedClientsBuffersAndConnectionsAreReleased') || status=$?
fi

found=$(find "$reports" -type f | wc -l)
if [ "$found" -ne 0 ]; then
  echo "== $found sanitizer report(s):"
  for f in "$reports"/*; do echo "--- $f"; cat "$f"; done
  status=1
fi
echo "== sanitize $kind: $([ $status -eq 0 ] && echo clean || echo FAILED)"
exit $status
