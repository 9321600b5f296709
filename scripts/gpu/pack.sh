#!/usr/bin/env bash
# Packs what a GPU machine needs to run the CUDA and OpenCL tests and benchmarks of a build made here: the
# build's programs, plugins, accelerators and test binaries (debug info stripped), and the shared
# libraries they load that a plain Linux with an NVIDIA driver may lack (protobuf, spdlog, fmt,
# libarchive, ...), found with ldd. The GPU machine needs no compiler or -dev package: it runs
# scripts/gpu/run.sh on the bundle.
#
# Usage: scripts/gpu/pack.sh [BUILD_DIR] [BUNDLE_DIR]
#   BUILD_DIR   a build with the cuda backend, its accelerators and tests (default: build-cuda/)
#   BUNDLE_DIR  where to put the bundle (default: gpu-bundle/, ignored by git); replaced
# Build first: ninja -C BUILD_DIR atolld atoll_cli atoll_backend_cuda atoll_cuda_bench \
#   multi_gpu_bench cuda_unit_test cuda_backend_test cuda_gpu_test accelerators_test
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${1:-$root/build-cuda}
bundle=${2:-$root/gpu-bundle}
[ -d "$build" ] || { echo "$0: no build folder '$build'" >&2; exit 2; }
build=$(cd "$build" && pwd)

rm -rf "$bundle"
mkdir -p "$bundle/build" "$bundle/lib"
bundle=$(cd "$bundle" && pwd)
# Test binaries hold the absolute paths of the trees they were built in; run.sh recreates them.
echo "$build" >"$bundle/build-path"
source=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt")
echo "${source:-$root}" >"$bundle/source-path"

wanted=(bin/atolld bin/atoll-backend-host bin/atoll bin/atoll_cuda_bench bin/multi_gpu_bench bin/atoll_bench lib
        accelerators backends/cuda/testdata backends/cuda/cuda_unit_test backends/cuda/cuda_backend_test
        backends/cuda/cuda_gpu_test backends/opencl/opencl_backend_test
        tests/integration/opencl_test tests/integration/cuda_isolation_test)
present=()
for path in "${wanted[@]}"; do
  [ -e "$build/$path" ] && present+=("$path")
done
for required in bin/atolld lib/atoll/backends/libatoll_backend_cuda.so backends/cuda/cuda_gpu_test \
                accelerators/vector-cuda/vector.fatbin; do
  [ -e "$build/$required" ] || { echo "$0: $build/$required is missing; build it first" >&2; exit 2; }
done
tar -C "$build" --exclude=CMakeFiles --exclude='*.cmake' --exclude='*.o' --exclude=Makefile \
  -cf - "${present[@]}" | tar -C "$bundle/build" -xf -

# Host programs and libraries: x86-64 ELF files (e_machine 0x3e). Cubins are ELF too, for the GPU;
# they are left as they are.
elves=()
while IFS= read -r -d '' file; do
  if [ "$(head -c 4 "$file" | od -An -c | tr -d ' ')" = '177ELF' ] &&
     [ "$(od -An -tx1 -j18 -N2 "$file" | tr -d ' ')" = '3e00' ]; then
    elves+=("$file")
  fi
done < <(find "$bundle/build" -type f -print0)
for file in "${elves[@]}"; do
  strip --strip-debug "$file" 2>/dev/null || true
done

# Libraries every Linux with a driver has (or that the driver itself provides) stay out.
base='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libgcc_s|libstdc\+\+|libcuda\.so|libnvidia-ml)'
for file in "${elves[@]}"; do
  { ldd "$file" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}'
done | sort -u | while read -r name path; do
  if [[ ! $name =~ $base ]]; then cp -L "$path" "$bundle/lib/$name"; fi
done
echo "packed $(du -sh "$bundle" | cut -f1) into $bundle:" >&2
ls "$bundle/lib" >&2
