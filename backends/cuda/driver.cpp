#include "driver.h"

#include <dlfcn.h>

#include <string>

namespace atl::cuda {
namespace {

#define ATL_CUDA_STRING2(x) #x
// Expands cuda.h's renaming macros first: ATL_CUDA_STRING(cuMemAlloc) is "cuMemAlloc_v2".
#define ATL_CUDA_STRING(x) ATL_CUDA_STRING2(x)

template <typename T>
void Resolve(void* handle, const char* symbol, T* function) {
  *function = reinterpret_cast<T>(dlsym(handle, symbol));
}

}  // namespace

Driver::~Driver() {
  // The library stays loaded: the driver's own threads may outlive this table, and unloading
  // libcuda while they run is undefined.
}

std::string Driver::ErrorName(CUresult result) const {
  const char* name = nullptr;
  if (cuGetErrorName != nullptr && cuGetErrorName(result, &name) == CUDA_SUCCESS &&
      name != nullptr) {
    return name;
  }
  // The toolkit's stub library, and drivers older than a code, know no names.
  switch (result) {
#define ATL_CUDA_NAME(code) \
  case code:                \
    return #code;
    ATL_CUDA_NAME(CUDA_ERROR_NOT_INITIALIZED)
    ATL_CUDA_NAME(CUDA_ERROR_NO_DEVICE)
    ATL_CUDA_NAME(CUDA_ERROR_STUB_LIBRARY)
    ATL_CUDA_NAME(CUDA_ERROR_DEVICE_UNAVAILABLE)
    ATL_CUDA_NAME(CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE)
    ATL_CUDA_NAME(CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)
    ATL_CUDA_NAME(CUDA_ERROR_SYSTEM_NOT_READY)
    ATL_CUDA_NAME(CUDA_ERROR_OPERATING_SYSTEM)
    ATL_CUDA_NAME(CUDA_ERROR_UNKNOWN)
#undef ATL_CUDA_NAME
    default:
      return "CUDA error " + std::to_string(static_cast<int>(result));
  }
}

std::string Driver::Describe(CUresult result) const {
  std::string text = ErrorName(result);
  const char* description = nullptr;
  if (cuGetErrorString != nullptr && cuGetErrorString(result, &description) == CUDA_SUCCESS &&
      description != nullptr) {
    text += std::string(" (") + description + ")";
  }
  return text;
}

std::unique_ptr<Driver> LoadDriver(const std::string& path, std::string* problem) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* reason = dlerror();
    *problem = "the CUDA driver library '" + path + "' cannot be loaded (" +
               (reason != nullptr ? reason : "unknown dlopen error") +
               "): no NVIDIA driver is installed, or it is not on the library path";
    return nullptr;
  }
  auto driver = std::make_unique<Driver>();
  driver->handle = handle;
  driver->path = path;
#define ATL_CUDA_RESOLVE(name) Resolve(handle, ATL_CUDA_STRING(name), &driver->name);
  ATL_CUDA_REQUIRED_FUNCTIONS(ATL_CUDA_RESOLVE)
  ATL_CUDA_OPTIONAL_FUNCTIONS(ATL_CUDA_RESOLVE)
#undef ATL_CUDA_RESOLVE
#define ATL_CUDA_CHECK(name)                                                                    \
  if (driver->name == nullptr) {                                                                \
    *problem = "the CUDA driver library '" + path + "' lacks " ATL_CUDA_STRING(name) ": the " \
               "driver is too old for this backend (CUDA 12.0 or newer is needed)"; \
    return nullptr;                                                                             \
  }
  ATL_CUDA_REQUIRED_FUNCTIONS(ATL_CUDA_CHECK)
#undef ATL_CUDA_CHECK
  Resolve(handle, "cuCtxCreate_v2", &driver->cuCtxCreateV2);
  CUresult result = driver->cuInit(0);
  if (result != CUDA_SUCCESS) {
    *problem =
        "cuInit failed with " + driver->Describe(result) + " (driver library '" + path + "')";
    if (result == CUDA_ERROR_NO_DEVICE) *problem += ": no NVIDIA GPU is visible to this process";
    if (result == CUDA_ERROR_STUB_LIBRARY) {
      *problem += ": this is the CUDA toolkit's stub library, not a driver";
    }
    return nullptr;
  }
  if (driver->cuDriverGetVersion(&driver->version) != CUDA_SUCCESS) driver->version = 0;
  return driver;
}

CUresult Driver::CreateContext(CUcontext* context, CUdevice device) const {
  if (cuCtxCreate != nullptr) {
    CUresult result = cuCtxCreate(context, nullptr, 0, device);
    if (result != CUDA_ERROR_NOT_SUPPORTED || cuCtxCreateV2 == nullptr) return result;
  }
  return cuCtxCreateV2 != nullptr ? cuCtxCreateV2(context, 0, device) : CUDA_ERROR_NOT_SUPPORTED;
}

bool IsStickyError(CUresult result) {
  switch (result) {
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_TENSOR_MEMORY_LEAK:
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_NVLINK_UNCORRECTABLE:
    case CUDA_ERROR_CONTAINED:
    case CUDA_ERROR_CONTEXT_IS_DESTROYED:
    case CUDA_ERROR_EXTERNAL_DEVICE:
    case CUDA_ERROR_UNKNOWN:
      return true;
    default:
      return false;
  }
}

}  // namespace atl::cuda
