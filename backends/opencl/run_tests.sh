#!/usr/bin/env bash
# Runs the opencl suite of a built tree on this machine's OpenCL devices: the backend's unit tests,
# the bundled accelerators on every backend, the daemon-level opencl tests and, with --bench, the
# opencl benchmark scenario. Builds nothing: build first, e.g.
#   cmake -S . -B build -G Ninja && ninja -C build opencl_backend_test accelerators_test \
#     opencl_test atoll_bench
#
# Usage: backends/opencl/run_tests.sh BUILD_DIR [--platform NAME] [--bench]
#   --platform NAME  use only the OpenCL platform whose ICD file in /etc/OpenCL/vendors matches
#                    NAME (nvidia, pocl, intel, xilinx...): the tests then run on its devices
#   --bench          also run bench/run.sh --scenarios opencl (about 20 s)
# Exit status: 0 when every test passed or skipped (skips say why), else 1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 1 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
build=$(cd "$1" && pwd)
shift
bench=false
while [ $# -gt 0 ]; do
  case $1 in
    --platform)
      [ $# -ge 2 ] || { echo "$0: --platform needs a name" >&2; exit 2; }
      # ocl-icd loads only the vendor files OCL_ICD_VENDORS names.
      mapfile -t icd < <(ls /etc/OpenCL/vendors/*.icd 2>/dev/null | grep -i -- "$2" || true)
      if [ ${#icd[@]} -eq 0 ]; then
        echo "$0: no ICD file in /etc/OpenCL/vendors matches '$2':" \
             "$(ls /etc/OpenCL/vendors 2>/dev/null | tr '\n' ' ')" >&2
        exit 2
      fi
      export OCL_ICD_VENDORS=${icd[0]}
      shift 2 ;;
    --bench) bench=true; shift ;;
    *) echo "$0: unknown option $1" >&2; exit 2 ;;
  esac
done

echo "== OpenCL devices${OCL_ICD_VENDORS:+ (OCL_ICD_VENDORS=$OCL_ICD_VENDORS)}"
if command -v clinfo >/dev/null; then clinfo -l || true; else echo "(clinfo not installed)"; fi

status=0
run() {
  local binary=$build/$1
  shift
  if [ ! -x "$binary" ]; then
    echo "$0: missing $binary; build it first" >&2
    status=1
    return
  fi
  echo "== $(basename "$binary") $*"
  "$binary" "$@" || status=1
}
run backends/opencl/opencl_backend_test
run accelerators/accelerators_test --gtest_filter='*/opencl'
run tests/integration/opencl_test
if $bench; then
  echo "== bench/run.sh --scenarios opencl"
  "$here/../../bench/run.sh" "$build" --scenarios opencl || status=1
fi
exit $status
