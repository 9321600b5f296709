// Checks a request's arguments against a kernel's signature before anything runs.
// Pure function; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "common/status.h"
#include "repository/manifest.h"

namespace atl::repository {

// One argument of a request as the daemon received it, already in index order.
struct ArgValue {
  bool is_array = false;
  uint64_t size_bytes = 0;            // array range size, or scalar byte count
  const void* scalar_data = nullptr;  // scalars: the bytes
};

// OK when `args` match `kernel`: count, array vs scalar, scalar size, array size a multiple of the
// element size, and each `length` rule satisfied (the array holds at least that many elements;
// scalars used in a rule are read as signed or unsigned integers of their type; a negative value
// or an overflowing product is an error). Errors are INVALID_ARGUMENT and name the accelerator, the
// argument's index and manifest name, what was expected and what came:
// "vector.addition: argument 3 'size' must be a scalar of 4 bytes (int), got an array".
Status CheckSignature(std::string_view accelerator, const KernelSpec& kernel,
                      std::span<const ArgValue> args);

// A launch's work-items per dimension, from the kernel's "launch" block (dims 0: one work-item).
struct LaunchGeometry {
  uint32_t dims = 0;
  uint64_t global[3] = {0, 0, 0};
  uint32_t local[3] = {0, 0, 0};  // 0: the backend chooses
};

// Evaluates `kernel.launch` on a request's scalars. REQUIRES: CheckSignature(args) succeeded.
// INVALID_ARGUMENT when a size overflows 64 bits or a scalar it names is negative.
StatusOr<LaunchGeometry> EvaluateLaunch(std::string_view accelerator, const KernelSpec& kernel,
                                        std::span<const ArgValue> args);

}  // namespace atl::repository
