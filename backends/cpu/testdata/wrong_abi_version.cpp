// A cpu binary built for a future kernel ABI: the backend must refuse it.
#include "atoll/cpu_kernel.h"

extern "C" __attribute__((visibility("default"))) uint32_t atoll_cpu_abi_version(void) {
  return ATOLL_CPU_ABI_VERSION + 1;
}
