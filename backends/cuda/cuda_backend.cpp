// The `cuda` backend: runs CUDA kernels (cubin, fatbin or PTX) on NVIDIA GPUs through the driver
// API, which it loads at run time (driver.h): without a driver or a GPU it opens with no device
// and says why. Each GPU is a Device (device.h); its compute units are CUDA streams.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "atoll/backend.h"
#include "atoll/status.h"
#include "config.h"
#include "device.h"
#include "driver.h"
#include "host_registry.h"
#include "nvml.h"

namespace atl::cuda {
namespace {

int Fail(char* error, size_t error_size, int code, const std::string& message) {
  if (error != nullptr && error_size > 0) {
    size_t length = std::min(error_size - 1, message.size());
    std::memcpy(error, message.data(), length);
    error[length] = '\0';
  }
  return code;
}

uint64_t DefaultPinnedBytes() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page_size = ::sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return uint64_t{4} << 30;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size) / 4;
}

struct Backend {
  ~Backend() {
    // Launched work completes first (calling `done`), then client memory is unpinned while the
    // contexts that pinned it still exist, then the contexts go.
    for (auto& device : devices) device->Drain();
    registry.reset();
    devices.clear();
  }

  Config config;
  std::unique_ptr<Driver> driver;
  std::unique_ptr<Nvml> nvml;
  std::unique_ptr<JitCache> jit;
  std::unique_ptr<HostRegistry> registry;
  std::vector<std::unique_ptr<Device>> devices;
  // Why there is no GPU, or why configured GPUs are missing; "" when all are there.
  std::string problem;
};

std::string NoSuchDevice(const Backend& backend, uint32_t device) {
  std::string text = "device " + std::to_string(device) + " does not exist: the cuda backend has " +
                     std::to_string(backend.devices.size()) + " GPU(s)";
  if (!backend.problem.empty()) text += " (" + backend.problem + ")";
  return text;
}

// Opens every configured GPU, or only the `*only`-th of them (then number 0; see open_device).
int OpenDevices(const char* config_json, const uint32_t* only, uint32_t* device_total,
                void** backend, char* error, size_t error_size) {
  if (backend == nullptr) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, "open: `backend` is NULL");
  }
  *backend = nullptr;
  try {
    auto opened = std::make_unique<Backend>();
    std::string problem = ParseConfig(config_json != nullptr ? config_json : "{}", &opened->config);
    if (!problem.empty()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "cuda backend configuration: " + problem);
    }
    opened->config.own_process = only != nullptr;
    const Config& config = opened->config;
    opened->nvml = std::make_unique<Nvml>(config.nvml_library);
    opened->jit = std::make_unique<JitCache>(config.jit_cache_dir);
    opened->driver = LoadDriver(config.driver_library, &opened->problem);
    if (opened->driver != nullptr) {
      Backend* self = opened.get();
      opened->registry = std::make_unique<HostRegistry>(
          config.pinned_bytes.value_or(DefaultPinnedBytes()), [self](void* data, uint32_t owner) {
            if (owner < self->devices.size()) self->devices[owner]->Unpin(data);
          });
      int count = 0;
      CUresult result = opened->driver->cuDeviceGetCount(&count);
      if (result != CUDA_SUCCESS) {
        opened->problem = "cuDeviceGetCount failed with " + opened->driver->Describe(result);
        count = 0;
      } else if (count == 0) {
        opened->problem = "the CUDA driver lists no GPU";
      }
      std::vector<int> ordinals;
      if (config.devices.has_value()) {
        for (uint32_t ordinal : *config.devices) {
          if (static_cast<int>(ordinal) < count) {
            ordinals.push_back(static_cast<int>(ordinal));
          } else {
            if (!opened->problem.empty()) opened->problem += "; ";
            opened->problem += "configured device " + std::to_string(ordinal) +
                               " is not present: the driver lists " + std::to_string(count) +
                               " GPU(s)";
          }
        }
      } else {
        for (int ordinal = 0; ordinal < count; ++ordinal) ordinals.push_back(ordinal);
      }
      if (device_total != nullptr) *device_total = static_cast<uint32_t>(ordinals.size());
      if (only != nullptr) {
        if (*only >= ordinals.size()) {
          return Fail(error, error_size, ATOLL_NOT_FOUND,
                      "open_device: GPU " + std::to_string(*only) +
                          " does not exist: the cuda "
                          "backend has " +
                          std::to_string(ordinals.size()) +
                          (opened->problem.empty() ? "" : " (" + opened->problem + ")"));
        }
        ordinals = {ordinals[*only]};
      }
      for (int ordinal : ordinals) {
        auto device = std::make_unique<Device>(
            *opened->driver, opened->config, opened->registry.get(), opened->jit.get(),
            static_cast<uint32_t>(opened->devices.size()), ordinal);
        std::string failed = device->Start();
        if (!failed.empty()) {
          if (!opened->problem.empty()) opened->problem += "; ";
          opened->problem += failed;
          continue;
        }
        opened->devices.push_back(std::move(device));
      }
    }
    if (only != nullptr && opened->devices.empty()) {
      // No driver or no GPU: NOT_FOUND, as for a device past the last; else the GPU failed.
      const bool none = device_total != nullptr && *device_total == 0;
      return Fail(error, error_size, none ? ATOLL_NOT_FOUND : ATOLL_UNAVAILABLE,
                  "open_device: " + opened->problem);
    }
    if (!opened->problem.empty()) {
      // atolld logs what open returns only on failure; a missing GPU is not one, so say it here.
      std::fprintf(stderr, "atoll cuda backend: %zu GPU(s) opened; %s\n", opened->devices.size(),
                   opened->problem.c_str());
    }
    *backend = opened.release();
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cuda backend: out of memory in open");
  } catch (const std::system_error& e) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED,
                std::string("cuda backend: cannot start its threads: ") + e.what());
  }
}

int Open(const char* config_json, void** backend, char* error, size_t error_size) {
  return OpenDevices(config_json, nullptr, nullptr, backend, error, error_size);
}

int OpenDevice(const char* config_json, uint32_t device, uint32_t* device_total, void** backend,
               char* error, size_t error_size) {
  if (device_total != nullptr) *device_total = 0;
  return OpenDevices(config_json, &device, device_total, backend, error, error_size);
}

void Close(void* backend) { delete static_cast<Backend*>(backend); }

uint32_t DeviceCount(void* backend) {
  if (backend == nullptr) return 0;
  return static_cast<uint32_t>(static_cast<Backend*>(backend)->devices.size());
}

int DeviceInfo(void* backend, uint32_t device, atoll_backend_device_info_v1* info, char* error,
               size_t error_size) {
  auto* self = static_cast<Backend*>(backend);
  if (self == nullptr || info == nullptr) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "device_info: `backend` or `info` is NULL");
  }
  try {
    if (device >= self->devices.size()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, NoSuchDevice(*self, device));
    }
    if (info->struct_size < sizeof(atoll_backend_device_info_v1)) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "device_info: info->struct_size is " + std::to_string(info->struct_size) +
                      ", expected at least " +
                      std::to_string(sizeof(atoll_backend_device_info_v1)));
    }
    std::string message;
    int status = self->devices[device]->Info(*self->nvml, info, &message);
    return status == ATOLL_OK ? ATOLL_OK : Fail(error, error_size, status, message);
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cuda backend: out of memory");
  }
}

Program* AsProgram(void* handle) {
  auto* program = static_cast<Program*>(handle);
  return program != nullptr && program->magic == Program::kMagic ? program : nullptr;
}

int ProgramBinary(void* backend, uint32_t device, const char* path, const char* build_options,
                  void** program, char* error, size_t error_size) {
  auto* self = static_cast<Backend*>(backend);
  if (self == nullptr || program == nullptr || path == nullptr || path[0] == '\0') {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "program: `backend`, `program` or `path` is NULL or empty");
  }
  *program = nullptr;
  try {
    if (device >= self->devices.size()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, NoSuchDevice(*self, device));
    }
    Program* loaded = nullptr;
    std::string message;
    int status = self->devices[device]->LoadProgram(
        path, build_options != nullptr ? build_options : "", &loaded, &message);
    if (status != ATOLL_OK) return Fail(error, error_size, status, message);
    *program = loaded;
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cuda backend: out of memory");
  }
}

void ReleaseProgram(void* backend, void* program) {
  Program* loaded = AsProgram(program);
  if (backend == nullptr || loaded == nullptr) return;
  loaded->device->ReleaseProgram(loaded);
}

int FindKernel(void* backend, void* program, const char* name, const char* const* arg_types,
               uint32_t arg_count, void** kernel, char* error, size_t error_size) {
  Program* loaded = AsProgram(program);
  if (backend == nullptr || kernel == nullptr || name == nullptr || name[0] == '\0') {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "kernel: `backend`, `kernel` or `name` is NULL or empty");
  }
  *kernel = nullptr;
  if (loaded == nullptr) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "kernel: unknown program handle; pass one that program() returned");
  }
  if (arg_types == nullptr && arg_count > 0) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "kernel: `arg_types` is NULL with arguments");
  }
  try {
    Kernel* found = nullptr;
    std::string message;
    int status = loaded->device->FindKernel(loaded, name, arg_types, arg_count, &found, &message);
    if (status != ATOLL_OK) return Fail(error, error_size, status, message);
    *kernel = found;
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cuda backend: out of memory");
  }
}

int Launch(void* backend, uint32_t device, uint32_t compute_unit, void* kernel,
           const atoll_backend_arg_v1* args, uint32_t arg_count,
           const atoll_backend_geometry_v1* geometry, atoll_backend_done_fn done, void* user,
           char* error, size_t error_size) {
  auto* self = static_cast<Backend*>(backend);
  auto* launched = static_cast<Kernel*>(kernel);
  if (self == nullptr || done == nullptr || (args == nullptr && arg_count > 0)) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "launch: `backend` or `done` is NULL, or `args` is NULL with arguments");
  }
  if (launched == nullptr || launched->magic != Kernel::kMagic) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "launch: `kernel` is not a handle that kernel() returned");
  }
  try {
    if (device >= self->devices.size()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, NoSuchDevice(*self, device));
    }
    Device* target = self->devices[device].get();
    if (launched->program->device != target) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "launch: kernel '" + launched->name + "' was loaded on GPU " +
                      std::to_string(launched->program->device->index()) + ", not GPU " +
                      std::to_string(device));
    }
    std::string message;
    int status =
        target->Launch(compute_unit, launched, args, arg_count, geometry, done, user, &message);
    return status == ATOLL_OK ? ATOLL_OK : Fail(error, error_size, status, message);
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED,
                "cuda backend: out of memory queueing a launch");
  }
}

int RegisterMemory(void* backend, void* data, uint64_t size_bytes, char* error, size_t error_size) {
  auto* self = static_cast<Backend*>(backend);
  if (self == nullptr || data == nullptr || size_bytes == 0) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "register_memory: `backend` or `data` is NULL, or the size is 0");
  }
  if (self->devices.empty()) {
    return Fail(error, error_size, ATOLL_FAILED_PRECONDITION,
                "register_memory: the cuda backend has no GPU (" + self->problem + ")");
  }
  try {
    std::string message;
    // Pinned in the first GPU's context, and PORTABLE, so every GPU copies from it at full speed.
    int status = self->devices.front()->RegisterMemory(data, size_bytes, &message);
    return status == ATOLL_OK ? ATOLL_OK : Fail(error, error_size, status, message);
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cuda backend: out of memory");
  }
}

void UnregisterMemory(void* backend, void* data) {
  auto* self = static_cast<Backend*>(backend);
  if (self == nullptr || self->registry == nullptr || data == nullptr) return;
  self->registry->Remove(data);
}

}  // namespace
}  // namespace atl::cuda

extern "C" ATOLL_BACKEND_EXPORT const atoll_backend_v1* atoll_backend_get_v1(void) {
  static const atoll_backend_v1 table = {
      .abi_version = ATOLL_BACKEND_ABI_VERSION,
      .struct_size = sizeof(atoll_backend_v1),
      .name = "cuda",
      .open = atl::cuda::Open,
      .close = atl::cuda::Close,
      .device_count = atl::cuda::DeviceCount,
      .device_info = atl::cuda::DeviceInfo,
      .program = atl::cuda::ProgramBinary,
      .release_program = atl::cuda::ReleaseProgram,
      .kernel = atl::cuda::FindKernel,
      .launch = atl::cuda::Launch,
      .register_memory = atl::cuda::RegisterMemory,
      .unregister_memory = atl::cuda::UnregisterMemory,
      .open_device = atl::cuda::OpenDevice,
      // A kernel fault poisons every context of the process: a process per GPU contains it.
      .isolate_by_default = 1,
      // Small single-pass arrays are read in place (single_pass_zero_copy_bytes).
      .accepts_single_pass = 1,
  };
  return &table;
}
