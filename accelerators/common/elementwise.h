// The body of the vector kernels: c[i] = op(a[i], b[i]) for i < size, with the signature of
// InAccel's vector bitstream: (T* a, T* b, T* c, int size).
#pragma once

#include <cstdint>

#include "common/kernel_args.h"

namespace atl::accelerators {

// Any of a, b and c may be the same array: each element is read before it is written.
template <typename T, typename Op>
int Elementwise(const char* kernel, const atoll_cpu_arg* args, uint32_t arg_count, char* error,
                size_t error_size, Op op) {
  KernelArgs in(kernel, args, arg_count, error, error_size);
  int32_t size = 0;
  const T* a = nullptr;
  const T* b = nullptr;
  T* c = nullptr;
  if (!in.Count(4, "(a, b, c, size)") || !in.Scalar(3, "size", &size)) return in.status();
  if (size < 0) {
    in.Fail("argument 3 'size' is %d; it must be 0 or more", size);
    return in.status();
  }
  uint64_t n = static_cast<uint64_t>(size);
  if (!in.Array(0, "a", n, &a) || !in.Array(1, "b", n, &b) || !in.Array(2, "c", n, &c)) {
    return in.status();
  }
  for (uint64_t i = 0; i < n; ++i) c[i] = op(a[i], b[i]);
  return ATOLL_OK;
}

}  // namespace atl::accelerators
