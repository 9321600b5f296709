#include "geometry.h"

#include <algorithm>
#include <cstdint>
#include <string>

namespace atl::cuda {

std::string ComputeLaunchShape(const atoll_backend_geometry_v1& geometry,
                               const DeviceLimits& limits, uint32_t kernel_max_threads,
                               LaunchShape* shape) {
  *shape = LaunchShape{};
  const uint32_t dims = geometry.dims;
  if (dims > 3) {
    return "the launch geometry has " + std::to_string(dims) + " dimensions; CUDA has at most 3";
  }
  const char* axis[3] = {"x", "y", "z"};
  uint32_t max_threads =
      std::min(limits.max_threads_per_block,
               kernel_max_threads == 0 ? limits.max_threads_per_block : kernel_max_threads);
  for (uint32_t d = 0; d < dims; ++d) {
    if (geometry.global[d] == 0) shape->empty = true;
  }
  if (dims == 0 || shape->empty) return "";

  bool local_given = false;
  for (uint32_t d = 0; d < dims; ++d) local_given = local_given || geometry.local[d] != 0;
  if (local_given) {
    uint64_t threads = 1;
    for (uint32_t d = 0; d < dims; ++d) {
      uint32_t local = std::max<uint32_t>(1, geometry.local[d]);
      if (local > limits.max_block[d]) {
        return "the local (block) size " + std::to_string(local) + " along " + axis[d] +
               " is more than this GPU allows (" + std::to_string(limits.max_block[d]) + ")";
      }
      shape->block[d] = local;
      threads *= local;
    }
    if (threads > max_threads) {
      return "the local (block) size has " + std::to_string(threads) +
             " threads; this kernel runs at most " + std::to_string(max_threads) +
             " per block on this GPU";
    }
  } else {
    uint32_t remaining = std::min(kDefaultBlockThreads, max_threads);
    for (uint32_t d = 0; d < dims; ++d) {
      uint64_t take = std::min<uint64_t>(
          {geometry.global[d], remaining, static_cast<uint64_t>(limits.max_block[d])});
      shape->block[d] = static_cast<uint32_t>(std::max<uint64_t>(1, take));
      remaining = std::max<uint32_t>(1, remaining / shape->block[d]);
    }
  }
  for (uint32_t d = 0; d < dims; ++d) {
    uint64_t blocks =
        geometry.global[d] / shape->block[d] + (geometry.global[d] % shape->block[d] != 0 ? 1 : 0);
    if (blocks > limits.max_grid[d]) {
      return "the global size " + std::to_string(geometry.global[d]) + " along " + axis[d] +
             " needs " + std::to_string(blocks) + " blocks of " + std::to_string(shape->block[d]) +
             " threads, more than this GPU allows (" + std::to_string(limits.max_grid[d]) + ")";
    }
    shape->grid[d] = static_cast<uint32_t>(blocks);
  }
  return "";
}

}  // namespace atl::cuda
