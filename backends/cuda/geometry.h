// Launch geometry: how a request's work-items (the manifest's "launch" block evaluated by the
// daemon) become a CUDA grid of thread blocks. Pure code (no CUDA): unit-tested without a GPU.
#pragma once

#include <cstdint>
#include <string>

#include "atoll/backend.h"

namespace atl::cuda {

// What the GPU allows, from cuDeviceGetAttribute.
struct DeviceLimits {
  uint32_t max_threads_per_block = 1024;
  uint32_t max_block[3] = {1024, 1024, 64};
  uint64_t max_grid[3] = {2147483647u, 65535u, 65535u};
};

// cuLaunchKernel's grid and block.
struct LaunchShape {
  uint32_t grid[3] = {1, 1, 1};
  uint32_t block[3] = {1, 1, 1};
  bool empty = false;  // a global size of 0: nothing to run
};

// Threads per block when the manifest leaves the choice to the backend.
inline constexpr uint32_t kDefaultBlockThreads = 256;

// Computes the grid and block for `geometry`:
//  - dims 0: one thread (<<<1, 1>>>).
//  - block: `local` where given (a 0 along a dimension counts as 1 when another dimension is
//    given); when all of `local` is 0, up to kDefaultBlockThreads threads (and at most
//    `kernel_max_threads`) spread over the dimensions in order, x first, each taking at most its
//    global size.
//  - grid: ceil(global / block) along each dimension, so the kernel must ignore threads past its
//    data.
// A global size of 0 along any dimension gives `empty`. Returns "" on success, else why the
// geometry cannot run on this GPU.
std::string ComputeLaunchShape(const atoll_backend_geometry_v1& geometry,
                               const DeviceLimits& limits, uint32_t kernel_max_threads,
                               LaunchShape* shape);

}  // namespace atl::cuda
