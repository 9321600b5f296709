// The `vector` accelerator on the cpu backend: float vector addition and subtraction with the
// signature of InAccel's Coral vector bitstream.
#include <cstdint>

#include "atoll/cpu_kernel.h"
#include "common/elementwise.h"

ATOLL_CPU_BINARY()

ATOLL_CPU_KERNEL(vadd) {
  return atl::accelerators::Elementwise<float>("vadd", args, arg_count, error, error_size,
                                               [](float a, float b) { return a + b; });
}

ATOLL_CPU_KERNEL(vsub) {
  return atl::accelerators::Elementwise<float>("vsub", args, arg_count, error, error_size,
                                               [](float a, float b) { return a - b; });
}
