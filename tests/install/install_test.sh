#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds programs against it with find_package and
# pkg-config, as a user would. Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
source=$2
tmp=$(mktemp -d /tmp/atoll-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
for f in bin/atolld bin/atoll include/atoll/atoll.h include/atoll/atoll.hpp include/atoll/backend.h \
         include/inaccel/coral include/inaccel/coral.h lib/atoll/backends/libatoll_backend_cpu.so \
         share/atoll/accelerators/vector/bitstream.json share/atoll/accelerators/vector/vector.so; do
  [ -e "$tmp/prefix/$f" ] || { echo "missing from the install: $f" >&2; exit 1; }
done
cmake -S "$source/tests/install/consumer" -B "$tmp/consumer" -G Ninja \
  -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
ninja -C "$tmp/consumer" >/dev/null
export ATOLL_SOCKET=$tmp/none.sock
LD_LIBRARY_PATH=$(dirname "$(find "$tmp/prefix" -name 'libatoll.so' | head -1)") "$tmp/consumer/consumer_cmake"
"$tmp/consumer/consumer_static"
libdir=$(dirname "$(find "$tmp/prefix" -name atoll.pc | head -1)")
PKG_CONFIG_PATH=$libdir pkg-config --cflags --libs atoll >/dev/null
g++ -std=c++17 "$source/tests/install/consumer/consumer.cpp" -o "$tmp/consumer_pc" \
  $(PKG_CONFIG_PATH=$libdir pkg-config --cflags --libs atoll)
LD_LIBRARY_PATH=$(dirname "$(find "$tmp/prefix" -name 'libatoll.so' | head -1)") "$tmp/consumer_pc"
# The installed daemon finds its plugin beside itself and runs a bundled accelerator.
export ATOLL_SOCKET=$tmp/atolld.sock ATOLL_REPOSITORY=$tmp/repository
"$tmp/prefix/bin/atoll" install "$tmp/prefix/share/atoll/accelerators/vector" >/dev/null
"$tmp/prefix/bin/atolld" 2>"$tmp/atolld.log" &
pid=$!
for _ in $(seq 100); do [ -S "$ATOLL_SOCKET" ] && break; sleep 0.05; done
printf '\x00\x00\x80\x3f' >"$tmp/one.bin"
"$tmp/prefix/bin/atoll" run -q vector.addition "@$tmp/one.bin" "@$tmp/one.bin" "@$tmp/two.bin" 1
kill -TERM $pid; wait $pid
[ "$(od -An -tx1 "$tmp/two.bin" | tr -d ' ')" = "00000040" ] || { echo "1+1 != 2" >&2; exit 1; }
echo "install test passed"
