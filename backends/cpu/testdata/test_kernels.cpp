// Kernels that let cpu_backend_test reach every path of the backend: scalar and type copying,
// counting, waiting, and each way a kernel can fail.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "atoll/cpu_kernel.h"
#include "atoll/status.h"

ATOLL_CPU_BINARY()

namespace {

int Error(char* error, size_t error_size, int code, const char* message) {
  std::snprintf(error, error_size, "%s", message);
  return code;
}

}  // namespace

// args[0]: a byte array; then any scalars, whose bytes are written back to back into args[0].
// Fails with INTERNAL when a scalar is not aligned for any type, which the backend promises.
ATOLL_CPU_KERNEL(echo_scalars) {
  if (arg_count < 1) return Error(error, error_size, ATOLL_INVALID_ARGUMENT, "needs an output");
  auto* out = static_cast<unsigned char*>(args[0].data);
  uint64_t used = 0;
  for (uint32_t i = 1; i < arg_count; ++i) {
    if (reinterpret_cast<uintptr_t>(args[i].data) % alignof(max_align_t) != 0) {
      return Error(error, error_size, ATOLL_INTERNAL, "scalar not aligned");
    }
    if (used + args[i].size_bytes > args[0].size_bytes) {
      return Error(error, error_size, ATOLL_OUT_OF_RANGE, "output too small");
    }
    std::memcpy(out + used, args[i].data, args[i].size_bytes);
    used += args[i].size_bytes;
  }
  return ATOLL_OK;
}

// args[0]: a char array that receives the type names of all arguments joined by ','.
ATOLL_CPU_KERNEL(echo_types) {
  if (arg_count < 1) return Error(error, error_size, ATOLL_INVALID_ARGUMENT, "needs an output");
  auto* out = static_cast<char*>(args[0].data);
  uint64_t used = 0;
  for (uint32_t i = 0; i < arg_count; ++i) {
    uint64_t length = std::strlen(args[i].type);
    if (used + length + 2 > args[0].size_bytes) {
      return Error(error, error_size, ATOLL_OUT_OF_RANGE, "output too small");
    }
    if (i > 0) out[used++] = ',';
    std::memcpy(out + used, args[i].type, length);
    used += length;
  }
  out[used] = '\0';
  return ATOLL_OK;
}

// args[0]: uint32_t counters; args[1]: uint32_t index. Increments counters[index] atomically.
ATOLL_CPU_KERNEL(count) {
  if (arg_count != 2 || args[1].size_bytes != 4) {
    return Error(error, error_size, ATOLL_INVALID_ARGUMENT, "count(counters, index)");
  }
  uint32_t index;
  std::memcpy(&index, args[1].data, sizeof(index));
  if ((uint64_t{index} + 1) * 4 > args[0].size_bytes) {
    return Error(error, error_size, ATOLL_OUT_OF_RANGE, "index past the counters");
  }
  __atomic_fetch_add(static_cast<uint32_t*>(args[0].data) + index, 1u, __ATOMIC_RELAXED);
  return ATOLL_OK;
}

// args[0]: one int flag. Waits until another thread sets it to non-zero.
ATOLL_CPU_KERNEL(wait_flag) {
  if (arg_count != 1 || args[0].size_bytes < 4) {
    return Error(error, error_size, ATOLL_INVALID_ARGUMENT, "wait_flag(flag)");
  }
  auto* flag = static_cast<int*>(args[0].data);
  while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) == 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return ATOLL_OK;
}

// args[0]: uint32_t microseconds to sleep.
ATOLL_CPU_KERNEL(sleep_us) {
  if (arg_count != 1 || args[0].size_bytes != 4) {
    return Error(error, error_size, ATOLL_INVALID_ARGUMENT, "sleep_us(microseconds)");
  }
  uint32_t microseconds;
  std::memcpy(&microseconds, args[0].data, sizeof(microseconds));
  std::this_thread::sleep_for(std::chrono::microseconds(microseconds));
  return ATOLL_OK;
}

// args[0]: int code. Returns it with a message.
ATOLL_CPU_KERNEL(fail) {
  if (arg_count != 1 || args[0].size_bytes != 4) {
    return Error(error, error_size, ATOLL_INVALID_ARGUMENT, "fail(code)");
  }
  int code;
  std::memcpy(&code, args[0].data, sizeof(code));
  std::snprintf(error, error_size, "failing on purpose with code %d", code);
  return code;
}

// Returns FAILED_PRECONDITION and leaves the message empty.
ATOLL_CPU_KERNEL(fail_silently) {
  (void)args;
  (void)arg_count;
  (void)error;
  (void)error_size;
  return ATOLL_FAILED_PRECONDITION;
}

ATOLL_CPU_KERNEL(throw_exception) {
  (void)args;
  (void)arg_count;
  (void)error;
  (void)error_size;
  throw std::runtime_error("thrown on purpose");
}
