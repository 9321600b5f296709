#!/usr/bin/env bash
# Installs what is needed, builds with warnings as errors, checks formatting and runs every test.
# Tests that need hardware this machine lacks are skipped with their reason and counted.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}

"$root/scripts/install-deps.sh"

echo "== formatting"
mapfile -t sources < <(cd "$root" && git ls-files '*.cpp' '*.h' '*.hpp' '*.c' | grep -v '^include/inaccel/\(coral\|rpc\|shm\)$')
(cd "$root" && clang-format --dry-run -Werror "${sources[@]}")

echo "== build"
"$root/scripts/build.sh" -DATOLL_WERROR=ON

echo "== tests"
cd "$build"
ctest --output-on-failure --timeout 300 -j"$(nproc)"
