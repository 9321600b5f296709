// A shared library with a kernel but without ATOLL_CPU_BINARY(): the backend must refuse it.
#include "atoll/cpu_kernel.h"

ATOLL_CPU_KERNEL(vadd) {
  (void)args;
  (void)arg_count;
  (void)error;
  (void)error_size;
  return 0;
}
