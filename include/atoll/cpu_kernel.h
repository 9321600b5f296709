/*
 * How to write a kernel for Atoll's cpu backend.
 *
 * A cpu binary is a shared library (`.so`). Each kernel that a manifest names, say "vadd", is an
 * exported C function `atoll_kernel_vadd` of type atoll_cpu_kernel_fn. The library also exports
 * `atoll_cpu_abi_version` returning ATOLL_CPU_ABI_VERSION.
 *
 * The daemon calls a kernel on one of the device's worker threads (its compute units), with the
 * arguments in manifest order, already checked against the manifest's signature: arrays point into
 * the client's shared buffer and carry their size in bytes; scalars point to their bytes. A kernel
 * may run on several threads at once with different arguments, so it keeps no unsynchronised state.
 */
#ifndef ATOLL_CPU_KERNEL_H_
#define ATOLL_CPU_KERNEL_H_

#include <stddef.h>
#include <stdint.h>

#include "atoll/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATOLL_CPU_ABI_VERSION 1u

typedef struct atoll_cpu_arg {
  const char* type; /* the manifest's type: "float*", "int", ... */
  void* data;
  uint64_t size_bytes;
} atoll_cpu_arg;

/* Returns 0 on success, or an atoll_status_code value with a message in `error` (up to
 * `error_size` bytes). */
typedef int (*atoll_cpu_kernel_fn)(const atoll_cpu_arg* args, uint32_t arg_count, char* error,
                                   size_t error_size);

#define ATOLL_CPU_KERNEL_PREFIX "atoll_kernel_"

#ifdef __cplusplus
#define ATOLL_CPU_EXTERN_C extern "C"
#else
#define ATOLL_CPU_EXTERN_C
#endif

/* Defines kernel NAME with the right linkage and signature. */
#define ATOLL_CPU_KERNEL(NAME)                                                       \
  ATOLL_CPU_EXTERN_C __attribute__((visibility("default"))) int atoll_kernel_##NAME( \
      const atoll_cpu_arg* args, uint32_t arg_count, char* error, size_t error_size)

/* Put once in each binary. */
#define ATOLL_CPU_BINARY()                                                                         \
  ATOLL_CPU_EXTERN_C __attribute__((visibility("default"))) uint32_t atoll_cpu_abi_version(void) { \
    return ATOLL_CPU_ABI_VERSION;                                                                  \
  }

#ifdef __cplusplus
}
#endif

#endif /* ATOLL_CPU_KERNEL_H_ */
