// The CUDA driver API, loaded at run time with dlopen("libcuda.so.1"): the backend links no CUDA
// library, so atolld starts on machines without a GPU or driver and reports why it found none.
// cuda.h supplies only types and prototypes; every function is reached through this table.
//
// Thread safety: a loaded Driver is immutable and may be used from any thread.
#pragma once

#include <cuda.h>

#include <memory>
#include <string>

namespace atl::cuda {

// Required functions: the backend cannot run without them.
#define ATL_CUDA_REQUIRED_FUNCTIONS(X) \
  X(cuInit)                            \
  X(cuDriverGetVersion)                \
  X(cuGetErrorName)                    \
  X(cuGetErrorString)                  \
  X(cuDeviceGetCount)                  \
  X(cuDeviceGet)                       \
  X(cuDeviceGetName)                   \
  X(cuDeviceGetAttribute)              \
  X(cuDeviceTotalMem)                  \
  X(cuDeviceGetPCIBusId)               \
  X(cuDevicePrimaryCtxRetain)          \
  X(cuDevicePrimaryCtxRelease)         \
  X(cuDevicePrimaryCtxReset)           \
  X(cuCtxSetCurrent)                   \
  X(cuCtxDestroy)                      \
  X(cuCtxSynchronize)                  \
  X(cuStreamCreate)                    \
  X(cuStreamDestroy)                   \
  X(cuStreamSynchronize)               \
  X(cuEventCreate)                     \
  X(cuEventDestroy)                    \
  X(cuEventRecord)                     \
  X(cuEventQuery)                      \
  X(cuMemAlloc)                        \
  X(cuMemFree)                         \
  X(cuMemGetInfo)                      \
  X(cuMemHostRegister)                 \
  X(cuMemHostUnregister)               \
  X(cuMemHostGetDevicePointer)         \
  X(cuMemcpyHtoDAsync)                 \
  X(cuMemcpyDtoHAsync)                 \
  X(cuMemcpyDtoH)                      \
  X(cuModuleLoadDataEx)                \
  X(cuModuleUnload)                    \
  X(cuModuleGetFunction)               \
  X(cuFuncGetAttribute)                \
  X(cuLaunchKernel)                    \
  X(cuLinkCreate)                      \
  X(cuLinkAddData)                     \
  X(cuLinkComplete)                    \
  X(cuLinkDestroy)

// Optional functions: newer drivers only (NULL when the driver lacks them).
#define ATL_CUDA_OPTIONAL_FUNCTIONS(X) \
  X(cuCtxCreate)                       \
  X(cuDeviceGetUuid)                   \
  X(cuFuncGetParamInfo)                \
  X(cuModuleGetFunctionCount)          \
  X(cuModuleEnumerateFunctions)        \
  X(cuFuncGetName)

// cuda.h maps most names to versioned symbols (cuMemAlloc is cuMemAlloc_v2), so decltype gives
// the prototype of the symbol that is looked up. (## keeps the type's name unexpanded.)
#define ATL_CUDA_TYPE(name) using name##_fn = decltype(&::name);
ATL_CUDA_REQUIRED_FUNCTIONS(ATL_CUDA_TYPE)
ATL_CUDA_OPTIONAL_FUNCTIONS(ATL_CUDA_TYPE)
#undef ATL_CUDA_TYPE

struct Driver {
#define ATL_CUDA_FIELD(name) name##_fn name = nullptr;
  ATL_CUDA_REQUIRED_FUNCTIONS(ATL_CUDA_FIELD)
  ATL_CUDA_OPTIONAL_FUNCTIONS(ATL_CUDA_FIELD)
#undef ATL_CUDA_FIELD

  // cuCtxCreate before CUDA 12.5 (cuCtxCreate_v2), for drivers without cuCtxCreate_v4.
  CUresult (*cuCtxCreateV2)(CUcontext*, unsigned int, CUdevice) = nullptr;
  // Creates a context of its own on `device`, current on the calling thread.
  CUresult CreateContext(CUcontext* context, CUdevice device) const;

  int version = 0;  // cuDriverGetVersion: 13000 for CUDA 13.0
  std::string path;

  Driver() = default;
  ~Driver();
  Driver(const Driver&) = delete;
  Driver& operator=(const Driver&) = delete;

  // "CUDA_ERROR_ILLEGAL_ADDRESS".
  std::string ErrorName(CUresult result) const;
  // "CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)".
  std::string Describe(CUresult result) const;

  void* handle = nullptr;
};

// Loads the driver library at `path` ("libcuda.so.1" searches the library path) and calls
// cuInit(0). Returns nullptr with the reason in `problem` when the library is missing, lacks a
// required function, or cuInit fails (no GPU, a stub library, a driver older than the kernel
// module).
std::unique_ptr<Driver> LoadDriver(const std::string& path, std::string* problem);

// Whether `result` leaves the context unusable until it is reset (a fault in a kernel).
bool IsStickyError(CUresult result);

}  // namespace atl::cuda
