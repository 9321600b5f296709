// Argument checks shared by the bundled cpu kernels. The daemon checks every request against the
// manifest before it runs, but a kernel is also a library anyone can call, so it checks again
// that it never reads or writes outside what it was given.
// Thread safety: KernelArgs is used by one launch on one thread.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "atoll/cpu_kernel.h"
#include "atoll/status.h"

namespace atl::accelerators {

class KernelArgs {
 public:
  // `kernel` names the kernel in messages: "vadd: argument 3 'size' is -1; ...".
  KernelArgs(const char* kernel, const atoll_cpu_arg* args, uint32_t arg_count, char* error,
             size_t error_size)
      : kernel_(kernel),
        args_(args),
        arg_count_(arg_count),
        error_(error),
        error_size_(error_size) {}

  // Each check returns true when it passes; otherwise it writes the message and status() is the
  // code to return from the kernel.
  bool Count(uint32_t expected, const char* signature) {
    if (arg_count_ == expected && (args_ != nullptr || expected == 0)) return true;
    return Fail("takes %u arguments %s, got %u", expected, signature, arg_count_);
  }

  // Reads scalar `index` as T, whose size must match exactly.
  template <typename T>
  bool Scalar(uint32_t index, const char* name, T* value) {
    const atoll_cpu_arg& arg = args_[index];
    if (arg.size_bytes != sizeof(T) || arg.data == nullptr) {
      return Fail("argument %u '%s' must be a scalar of %zu bytes, got %llu bytes", index, name,
                  sizeof(T), static_cast<unsigned long long>(arg.size_bytes));
    }
    // The backend aligns scalars, but memcpy keeps a kernel correct under any caller.
    std::memcpy(value, arg.data, sizeof(T));
    return true;
  }

  // Checks that array `index` holds at least `elements` values of T, aligned for T.
  template <typename T>
  bool Array(uint32_t index, const char* name, uint64_t elements, T** data) {
    const atoll_cpu_arg& arg = args_[index];
    if (elements > UINT64_MAX / sizeof(T) || arg.size_bytes < elements * sizeof(T)) {
      return Fail(
          "argument %u '%s' holds %llu bytes, fewer than the %llu elements of %zu bytes "
          "the other arguments call for",
          index, name, static_cast<unsigned long long>(arg.size_bytes),
          static_cast<unsigned long long>(elements), sizeof(T));
    }
    if (elements > 0 && arg.data == nullptr) {
      return Fail("argument %u '%s' is NULL", index, name);
    }
    if (reinterpret_cast<uintptr_t>(arg.data) % alignof(T) != 0) {
      return Fail(
          "argument %u '%s' is not aligned to %zu bytes; pass an offset that is a "
          "multiple of the element size",
          index, name, alignof(T));
    }
    *data = static_cast<T*>(arg.data);
    return true;
  }

  // Fails with INVALID_ARGUMENT and a message that starts with the kernel's name.
  __attribute__((format(printf, 2, 3))) bool Fail(const char* format, ...) {
    status_ = ATOLL_INVALID_ARGUMENT;
    if (error_ == nullptr || error_size_ == 0) return false;
    int prefix = std::snprintf(error_, error_size_, "%s: ", kernel_);
    if (prefix < 0 || static_cast<size_t>(prefix) >= error_size_) return false;
    va_list list;
    va_start(list, format);
    std::vsnprintf(error_ + prefix, error_size_ - prefix, format, list);
    va_end(list);
    return false;
  }

  int status() const { return status_; }

 private:
  const char* kernel_;
  const atoll_cpu_arg* args_;
  uint32_t arg_count_;
  char* error_;
  size_t error_size_;
  int status_ = ATOLL_OK;
};

// Whether [a, a + a_bytes) and [b, b + b_bytes) share a byte.
inline bool Overlap(const void* a, uint64_t a_bytes, const void* b, uint64_t b_bytes) {
  auto begin_a = reinterpret_cast<uintptr_t>(a);
  auto begin_b = reinterpret_cast<uintptr_t>(b);
  return a_bytes > 0 && b_bytes > 0 && begin_a < begin_b + b_bytes && begin_b < begin_a + a_bytes;
}

}  // namespace atl::accelerators
