// The `vector.int` accelerator on the cpu backend: int vector addition and subtraction. Results
// wrap around on overflow, as on an FPGA; the arithmetic is unsigned because signed overflow is
// undefined in C++.
#include <cstdint>

#include "atoll/cpu_kernel.h"
#include "common/elementwise.h"

ATOLL_CPU_BINARY()

ATOLL_CPU_KERNEL(vadd_int) {
  return atl::accelerators::Elementwise<int32_t>(
      "vadd_int", args, arg_count, error, error_size, [](int32_t a, int32_t b) {
        return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
      });
}

ATOLL_CPU_KERNEL(vsub_int) {
  return atl::accelerators::Elementwise<int32_t>(
      "vsub_int", args, arg_count, error, error_size, [](int32_t a, int32_t b) {
        return static_cast<int32_t>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b));
      });
}
