/*
 * The C ABI between atolld and a backend plugin: the only header a backend needs.
 *
 * A backend is a shared library exporting `atoll_backend_get_v1`, which returns a table of C
 * functions. The daemon dlopens every plugin of its backend folders, checks `abi_version` and
 * `struct_size`, and skips (and logs) a plugin that fails to load or open; the daemon lives on.
 * No C++ object or exception crosses this boundary.
 *
 * A backend never sees tenants or requests: the daemon schedules, then asks the backend to launch a
 * kernel on one compute unit of one device, with arguments already checked against the manifest.
 *
 * Errors: calls that can fail return an atoll_status_code value (0 is success) and write a
 * NUL-terminated message into `error` (at most `error_size` bytes, truncated if longer).
 *
 * Threads: open/close are called once, from the daemon's main thread. Every other call may come
 * from any daemon thread, concurrently, and must be thread-safe; calls marked "must not block"
 * return without waiting for device work.
 */
#ifndef ATOLL_BACKEND_H_
#define ATOLL_BACKEND_H_

#include <stddef.h>
#include <stdint.h>

#include "atoll/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 2: program() takes build options, kernel() the manifest's argument types, launch() a geometry. */
#define ATOLL_BACKEND_ABI_VERSION 2u
#define ATOLL_BACKEND_EXPORT __attribute__((visibility("default")))

/* Identity and telemetry of one device. Strings are NUL-terminated; unknown numbers are -1. */
typedef struct atoll_backend_device_info_v1 {
  uint32_t struct_size; /* set by the daemon to sizeof(this struct) before the call */
  char vendor[64];      /* who made the device: "NVIDIA Corporation", "Xilinx", "atoll" */
  char name[128];       /* product: "NVIDIA H100 80GB HBM3", "host CPU" */
  /* The platform binaries must be built for; a manifest's platform block is matched against it. */
  char platform_vendor[64];  /* "nvidia", "xilinx", "atoll" */
  char platform_name[64];    /* "sm_90", "u250", "x86_64" */
  char platform_version[64]; /* "13.0", "xdma_201830.2", "1" */
  char pci_id[32];           /* "0000:3b:00.0", or "" */
  char serial[64];           /* or "" */
  int64_t global_memory_bytes;
  int64_t temperature_c;
  int64_t power_mw;
  uint32_t compute_units;    /* compute units that may run kernels at once */
  uint32_t binaries_at_once; /* binaries the device holds at once (1 for an FPGA; 0 = no limit) */
  /* Nonzero: a binary decides how many of `compute_units` a kernel may use, one per symbol its
   * manifest lists for the kernel (an FPGA binary holds that many instances of it); the daemon
   * then runs a kernel only on compute units numbered below that count. Zero: every compute unit
   * runs every kernel. */
  uint32_t compute_units_by_binary;
} atoll_backend_device_info_v1;

typedef enum atoll_backend_arg_kind {
  ATOLL_BACKEND_ARG_ARRAY = 1,
  ATOLL_BACKEND_ARG_SCALAR = 2
} atoll_backend_arg_kind;

/* What the kernel does with an array: decides what is uploaded and downloaded. */
typedef enum atoll_backend_access {
  ATOLL_BACKEND_ACCESS_READ = 1,
  ATOLL_BACKEND_ACCESS_WRITE = 2,
  ATOLL_BACKEND_ACCESS_READ_WRITE = 3,
  /* Or'd in when the manifest marks the array "single_pass": the kernel touches each element at
   * most once, so reading and writing it in place in host memory (zero-copy) costs no more than
   * one copy. Only backends whose table sets accepts_single_pass see it. */
  ATOLL_BACKEND_ACCESS_SINGLE_PASS = 4
} atoll_backend_access;

/* One argument of a launch, in kernel order. `type` is the manifest's type ("float*", "int").
 * Arrays: `data` points into host memory shared with the client (registered with
 * register_memory when the backend provides it) and stays valid until `done` is called. Scalars:
 * `data` points to `size_bytes` bytes valid only during the launch call: copy them. */
typedef struct atoll_backend_arg_v1 {
  uint32_t kind;   /* atoll_backend_arg_kind */
  uint32_t access; /* atoll_backend_access; arrays only */
  const char* type;
  void* data;
  uint64_t size_bytes;
} atoll_backend_arg_v1;

/* How many work-items a launch runs: the manifest kernel's "launch" block evaluated on the
 * request's scalars. `dims` 0 means one work-item (an OpenCL task, the way FPGA kernels run; a
 * CUDA <<<1, 1>>>); the cpu backend calls its kernel once and ignores the geometry. For d < dims,
 * `global[d]` is the number of work-items (CUDA: threads) along d, and `local[d]` the work-group
 * (CUDA: block) size, 0 when the backend chooses. A backend may round a global size up to a
 * multiple of the local size, so NDRange kernels must ignore work-items past their data. For a
 * backend that runs work-items, a global size of 0 along any dimension means there is nothing to
 * run: it completes the launch successfully without running the kernel. */
typedef struct atoll_backend_geometry_v1 {
  uint32_t dims; /* 0 to 3 */
  uint32_t local[3];
  uint64_t global[3];
} atoll_backend_geometry_v1;

/* Called exactly once per successful launch, from any backend thread, when the kernel has ended
 * and its outputs are in host memory. `status` is an atoll_status_code value; `message` is "" on
 * success and is valid only during the call. May be called before launch returns. */
typedef void (*atoll_backend_done_fn)(void* user, int status, const char* message);

typedef struct atoll_backend_v1 {
  uint32_t abi_version; /* ATOLL_BACKEND_ABI_VERSION */
  uint32_t struct_size; /* sizeof(atoll_backend_v1) as the backend was built */
  const char* name;     /* "cpu", "opencl", "cuda": the manifest's platform.backend */

  /* Opens the backend with its JSON configuration object ("{}" when none) and enumerates
   * devices. A backend with no device opens fine and reports 0 devices. May block. */
  int (*open)(const char* config_json, void** backend, char* error, size_t error_size);
  /* Waits for launched work to finish (calling its `done`), then frees everything. */
  void (*close)(void* backend);

  uint32_t (*device_count)(void* backend);
  /* Fills `info` (whose struct_size the daemon set). Must not block on device work. */
  int (*device_info)(void* backend, uint32_t device, atoll_backend_device_info_v1* info,
                     char* error, size_t error_size);

  /* Loads the binary at `path` onto `device` and returns a program handle. `build_options` is the
   * manifest's "buildOptions" ("" when none): compiler options for a binary built from source
   * (OpenCL C, PTX); backends that build nothing ignore it. May block (an FPGA takes seconds, a
   * source build as long as the compiler needs). The daemon never programs a device while one of
   * its compute units runs. */
  int (*program)(void* backend, uint32_t device, const char* path, const char* build_options,
                 void** program, char* error, size_t error_size);
  /* Unloads a program; the daemon calls it only when no launch of it is in flight. */
  void (*release_program)(void* backend, void* program);
  /* Looks up kernel `name` (the manifest's kernel name) in a program. `arg_types` are the
   * manifest's argument types in order ("float*", "int"), so a backend that can see the kernel's
   * own signature (OpenCL's clGetKernelArgInfo, CUDA's cuFuncGetParamInfo) refuses a mismatch
   * here, naming the argument, instead of failing later. The handle lives as long as the
   * program. */
  int (*kernel)(void* backend, void* program, const char* name, const char* const* arg_types,
                uint32_t arg_count, void** kernel, char* error, size_t error_size);

  /* Starts `kernel` on compute unit `compute_unit` (< device_info.compute_units) of `device`.
   * Must not block on device work. The daemon launches at most one kernel per compute unit at a
   * time. On success `done(user, ...)` is called exactly once; on failure it is never called. */
  int (*launch)(void* backend, uint32_t device, uint32_t compute_unit, void* kernel,
                const atoll_backend_arg_v1* args, uint32_t arg_count,
                const atoll_backend_geometry_v1* geometry, atoll_backend_done_fn done, void* user,
                char* error, size_t error_size);

  /* Optional (NULL when the backend needs none): told once per client buffer when the daemon
   * maps it and when it unmaps it, so a GPU backend can pin it for fast copies. */
  int (*register_memory)(void* backend, void* data, uint64_t size_bytes, char* error,
                         size_t error_size);
  void (*unregister_memory)(void* backend, void* data);

  /* Fields below were appended within ABI version 2: the daemon reads them only when the table's
   * struct_size covers them, so plugins built before them still load. */

  /* Optional (NULL when the backend cannot): opens the backend like `open`, but with only device
   * `device` of those `open` would enumerate; that device is then number 0 (device_count is 1).
   * Writes how many devices `open` would enumerate into `*device_total`, also when `device` is
   * past them: then it returns ATOLL_NOT_FOUND and opens nothing. The daemon calls it in a
   * process of its own per device (atoll-backend-host), so a fault that poisons a process, as a
   * CUDA kernel fault does, takes down one device's process, which the daemon restarts. In such a
   * process, device_info returning ATOLL_UNAVAILABLE means the device can no longer run kernels:
   * the process ends and the daemon starts a fresh one. */
  int (*open_device)(const char* config_json, uint32_t device, uint32_t* device_total,
                     void** backend, char* error, size_t error_size);
  /* Nonzero: the daemon runs each device in its own process unless its configuration says
   * `"isolate": "none"`. For backends whose faults outlive the request (CUDA). */
  uint32_t isolate_by_default;
  /* Nonzero: launch() accepts ATOLL_BACKEND_ACCESS_SINGLE_PASS in an array's access. Without it
   * the daemon leaves the flag out, so access is one of READ, WRITE, READ_WRITE. */
  uint32_t accepts_single_pass;
} atoll_backend_v1;

/* The smallest table the daemon accepts: every field up to unregister_memory. */
#define ATOLL_BACKEND_V1_MIN_SIZE \
  (offsetof(atoll_backend_v1, unregister_memory) + sizeof(void (*)(void*, void*)))

/* The one symbol a backend exports. Returns a table with static lifetime. */
typedef const atoll_backend_v1* (*atoll_backend_get_v1_fn)(void);
#define ATOLL_BACKEND_ENTRY_V1 "atoll_backend_get_v1"

#ifdef __cplusplus
}
#endif

#endif /* ATOLL_BACKEND_H_ */
