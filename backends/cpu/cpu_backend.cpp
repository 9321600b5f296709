// The `cpu` backend: runs kernels of cpu binaries (shared libraries built with atoll/cpu_kernel.h)
// on worker threads of the host. Each device is a set of compute units; each compute unit is one
// worker thread with its own queue (compute_unit.h).

#include <dlfcn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "atoll/backend.h"
#include "atoll/cpu_kernel.h"
#include "atoll/status.h"
#include "compute_unit.h"
#include "host_info.h"
#include "kernel.h"

namespace atl::cpu {
namespace {

constexpr const char* kAbiVersionSymbol = "atoll_cpu_abi_version";
constexpr const char* kConfigExample = R"({"devices": 1, "compute_units": 2, "spin_us": 50})";
constexpr const char* kFields =
    "\"devices\", \"compute_units\", \"spin_us\", \"binaries_at_once\", \"program_delay_ms\", "
    "\"compute_units_by_manifest\" and \"platform_name\"";

uint32_t DefaultSpinMicroseconds() {
  long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 2 ? 50 : 0;
}

struct Config {
  uint32_t devices = 1;
  uint32_t compute_units = 2;
  // How long a worker polls for the next launch before it sleeps. Waking a sleeping worker costs
  // about 7 us from launch to done on an idle 16-core host, most of a request's 10 us budget;
  // polling costs about 1 us. 50 us covers a client that sends its next request when the last
  // one completes, through the daemon; workers poll only while launches do arrive that quickly.
  // With 2 cores or fewer a polling worker takes the core the client and the I/O thread need:
  // measured there, it doubled daemon CPU per request and worsened p99 without helping p50, so
  // the default is then 0.
  uint32_t spin_us = DefaultSpinMicroseconds();
  // Simulated devices, to test scheduling policies on any host: how many binaries a device holds
  // at once (1 behaves like an FPGA; 0 = no limit), how long loading one takes (the calling
  // thread sleeps, as it waits for an FPGA to be programmed), and the platform name each device
  // reports (one for all, or one per device), so that binaries for "other platforms" can be told
  // apart. With compute_units_by_manifest a kernel runs on as many compute units as its manifest
  // lists names, as on an FPGA.
  uint32_t binaries_at_once = 0;
  uint32_t program_delay_ms = 0;
  bool compute_units_by_manifest = false;
  std::vector<std::string> platform_names;  // empty: the host's machine name
};

struct Device {
  std::vector<std::unique_ptr<ComputeUnit>> compute_units;
  std::string platform_name;
};

struct Program {
  Program(std::string binary, uint32_t on_device) : path(std::move(binary)), device(on_device) {}
  ~Program() {
    if (handle != nullptr) dlclose(handle);
  }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  void* handle = nullptr;
  std::string path;
  uint32_t device;
  std::map<std::string, std::unique_ptr<Kernel>, std::less<>> kernels;
};

struct Backend {
  ~Backend() {
    for (Device& device : devices) {
      for (auto& compute_unit : device.compute_units) compute_unit->RequestStop();
    }
    // Joins the workers, which run what they still hold, before the code they run is unloaded.
    devices.clear();
    programs.clear();
  }

  HostInfo host;
  uint32_t binaries_at_once = 0;
  uint32_t program_delay_ms = 0;
  bool compute_units_by_manifest = false;
  std::vector<Device> devices;
  std::mutex programs_mutex;
  std::map<const void*, std::unique_ptr<Program>> programs;  // guarded by programs_mutex
};

int Fail(char* error, size_t error_size, int code, std::string_view message) {
  if (error != nullptr && error_size > 0) {
    size_t length = std::min(message.size(), error_size - 1);
    std::memcpy(error, message.data(), length);
    error[length] = '\0';
  }
  return code;
}

template <size_t N>
void CopyString(char (&destination)[N], std::string_view source) {
  size_t length = std::min(source.size(), N - 1);
  std::memcpy(destination, source.data(), length);
  destination[length] = '\0';
}

// Returns "" when `value` is an integer in [low, high] (stored in `out`), else what is wrong.
std::string ReadInteger(const nlohmann::json& value, const char* field, int64_t low, int64_t high,
                        uint32_t* out) {
  std::string expected = "\"" + std::string(field) + "\" must be an integer from " +
                         std::to_string(low) + " to " + std::to_string(high) + ", got " +
                         value.dump();
  if (!value.is_number_integer()) return expected;
  if (value.is_number_unsigned()) {
    uint64_t number = value.get<uint64_t>();
    if (number > static_cast<uint64_t>(high) || static_cast<int64_t>(number) < low) {
      return expected;
    }
    *out = static_cast<uint32_t>(number);
    return "";
  }
  int64_t number = value.get<int64_t>();
  if (number < low || number > high) return expected;
  *out = static_cast<uint32_t>(number);
  return "";
}

// Returns "" when `text` is a valid configuration (stored in `config`), else what is wrong.
std::string ParseConfig(const char* text, Config* config) {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return std::string("not valid JSON (") + e.what() + "); expected an object such as " +
           kConfigExample;
  }
  if (!object.is_object()) {
    return std::string("expected a JSON object such as ") + kConfigExample + ", got " +
           object.type_name();
  }
  for (const auto& [key, value] : object.items()) {
    std::string problem;
    if (key == "devices") {
      problem = ReadInteger(value, "devices", 1, 64, &config->devices);
    } else if (key == "compute_units") {
      problem = ReadInteger(value, "compute_units", 1, 256, &config->compute_units);
    } else if (key == "spin_us") {
      problem = ReadInteger(value, "spin_us", 0, 1000, &config->spin_us);
    } else if (key == "binaries_at_once") {
      problem = ReadInteger(value, "binaries_at_once", 0, 64, &config->binaries_at_once);
    } else if (key == "program_delay_ms") {
      problem = ReadInteger(value, "program_delay_ms", 0, 600000, &config->program_delay_ms);
    } else if (key == "compute_units_by_manifest") {
      if (value.is_boolean()) {
        config->compute_units_by_manifest = value.get<bool>();
      } else {
        problem = "\"compute_units_by_manifest\" must be true or false, got " + value.dump();
      }
    } else if (key == "platform_name") {
      const std::string expected =
          "\"platform_name\" must be a non-empty string of at most 63 characters, or an array "
          "of them with one per device, got " +
          value.dump();
      std::vector<nlohmann::json> names;
      if (value.is_array()) {
        names.assign(value.begin(), value.end());
      } else {
        names.push_back(value);
      }
      if (names.empty()) problem = expected;
      for (const auto& name : names) {
        if (!name.is_string() || name.get<std::string>().empty() ||
            name.get<std::string>().size() > 63) {
          problem = expected;
          break;
        }
        config->platform_names.push_back(name.get<std::string>());
      }
    } else {
      // A misspelt field would otherwise be ignored silently.
      problem = "unknown field \"" + key + "\"; the cpu backend's fields are " + kFields;
    }
    if (!problem.empty()) return problem;
  }
  if (config->platform_names.size() > 1 && config->platform_names.size() != config->devices) {
    return "\"platform_name\" lists " + std::to_string(config->platform_names.size()) +
           " names but there are " + std::to_string(config->devices) +
           " devices; give one name for all, or one per device";
  }
  return "";
}

std::string NoSuchDevice(size_t devices, uint32_t device) {
  return "device " + std::to_string(device) + " does not exist: the cpu backend has " +
         std::to_string(devices) + " (set \"devices\" in its configuration)";
}

std::string NoSuchDevice(const Backend& backend, uint32_t device) {
  return NoSuchDevice(backend.devices.size(), device);
}

// Opens every configured device, or only device `*only` (then number 0; see open_device).
int OpenDevices(const char* config_json, const uint32_t* only, uint32_t* device_total,
                void** backend, char* error, size_t error_size) {
  if (backend == nullptr) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, "open: `backend` is NULL");
  }
  *backend = nullptr;
  Config config;
  try {
    // The contract passes "{}" when there is no configuration; NULL is taken to mean the same.
    std::string problem = ParseConfig(config_json != nullptr ? config_json : "{}", &config);
    if (!problem.empty()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "cpu backend configuration: " + problem);
    }
    if (device_total != nullptr) *device_total = config.devices;
    if (only != nullptr && *only >= config.devices) {
      return Fail(error, error_size, ATOLL_NOT_FOUND,
                  "open_device: " + NoSuchDevice(config.devices, *only));
    }
    auto opened = std::make_unique<Backend>();
    opened->host = ReadHostInfo();
    opened->binaries_at_once = config.binaries_at_once;
    opened->program_delay_ms = config.program_delay_ms;
    opened->compute_units_by_manifest = config.compute_units_by_manifest;
    const uint32_t first = only != nullptr ? *only : 0;
    const uint32_t count = only != nullptr ? 1 : config.devices;
    opened->devices.resize(count);
    for (uint32_t i = 0; i < count; ++i) {
      const uint32_t d = first + i;  // the device's number among all configured ones
      opened->devices[i].platform_name = config.platform_names.empty() ? opened->host.machine
                                         : config.platform_names.size() == 1
                                             ? config.platform_names[0]
                                             : config.platform_names[d];
      for (uint32_t c = 0; c < config.compute_units; ++c) {
        opened->devices[i].compute_units.push_back(
            std::make_unique<ComputeUnit>("atoll-cpu" + std::to_string(d) + "." + std::to_string(c),
                                          int64_t{config.spin_us} * 1000));
      }
    }
    *backend = opened.release();
    return ATOLL_OK;
  } catch (const std::system_error& e) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED,
                "cpu backend: cannot start " + std::to_string(config.devices) + " x " +
                    std::to_string(config.compute_units) + " worker threads (" + e.what() +
                    "); configure fewer \"devices\" or \"compute_units\"");
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cpu backend: out of memory in open");
  }
}

int Open(const char* config_json, void** backend, char* error, size_t error_size) {
  return OpenDevices(config_json, nullptr, nullptr, backend, error, error_size);
}

int OpenDevice(const char* config_json, uint32_t device, uint32_t* device_total, void** backend,
               char* error, size_t error_size) {
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
                      std::to_string(sizeof(atoll_backend_device_info_v1)) +
                      "; set it to sizeof(atoll_backend_device_info_v1) before the call");
    }
    // Only the v1 fields are written: a newer daemon's larger struct keeps its extra fields.
    atoll_backend_device_info_v1 filled{};
    filled.struct_size = info->struct_size;
    CopyString(filled.vendor, "atoll");
    CopyString(filled.name, self->host.cpu_model);
    CopyString(filled.platform_vendor, "atoll");
    CopyString(filled.platform_name, self->devices[device].platform_name);
    CopyString(filled.platform_version, "1");
    filled.global_memory_bytes = self->host.memory_bytes;
    filled.temperature_c = -1;
    filled.power_mw = -1;
    filled.compute_units = static_cast<uint32_t>(self->devices[device].compute_units.size());
    filled.binaries_at_once = self->binaries_at_once;
    filled.compute_units_by_binary = self->compute_units_by_manifest ? 1 : 0;
    std::memcpy(info, &filled, sizeof(filled));
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cpu backend: out of memory");
  }
}

// A cpu binary is already machine code: there is nothing to build, so build options are ignored.
int ProgramBinary(void* backend, uint32_t device, const char* path, const char* /*build_options*/,
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
    std::string binary = path;
    // Without a slash dlopen would search the library path and could load an unrelated library.
    std::string load_path = binary.find('/') == std::string::npos ? "./" + binary : binary;
    struct stat file;
    if (stat(load_path.c_str(), &file) != 0) {
      int saved = errno;
      int code = (saved == ENOENT || saved == ENOTDIR) ? ATOLL_NOT_FOUND
                 : saved == EACCES                     ? ATOLL_PERMISSION_DENIED
                                                       : ATOLL_INTERNAL;
      return Fail(error, error_size, code,
                  "binary '" + binary + "' cannot be opened: " + std::strerror(saved));
    }
    if (!S_ISREG(file.st_mode)) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "binary '" + binary + "' is not a regular file; a cpu binary is a .so file");
    }
    if (self->binaries_at_once != 0) {
      // A simulated FPGA holds only so many binaries: the daemon must release one first.
      std::lock_guard<std::mutex> lock(self->programs_mutex);
      uint32_t held = 0;
      for (const auto& [handle, loaded] : self->programs) held += loaded->device == device ? 1 : 0;
      if (held >= self->binaries_at_once) {
        return Fail(error, error_size, ATOLL_FAILED_PRECONDITION,
                    "device " + std::to_string(device) + " already holds " + std::to_string(held) +
                        " binaries (\"binaries_at_once\" is " +
                        std::to_string(self->binaries_at_once) + "); release one first");
      }
    }
    if (self->program_delay_ms != 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(self->program_delay_ms));
    }
    // Allocated first, so that no failure after dlopen can leak the library.
    auto loaded = std::make_unique<Program>(binary, device);
    void* handle = dlopen(load_path.c_str(), RTLD_NOW | RTLD_LOCAL);
    loaded->handle = handle;
    if (handle == nullptr) {
      const char* reason = dlerror();
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "binary '" + binary + "' cannot be loaded as a shared library: " +
                      (reason != nullptr ? reason : "unknown dlopen error") +
                      "; a cpu binary is a .so of kernels built with atoll/cpu_kernel.h");
    }
    dlerror();
    void* symbol = dlsym(handle, kAbiVersionSymbol);
    if (symbol == nullptr) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "binary '" + binary +
                      "' does not export atoll_cpu_abi_version, so it is not an Atoll cpu "
                      "binary: add ATOLL_CPU_BINARY() to one of its sources (see "
                      "atoll/cpu_kernel.h)");
    }
    uint32_t version = reinterpret_cast<uint32_t (*)(void)>(symbol)();
    if (version != ATOLL_CPU_ABI_VERSION) {
      return Fail(error, error_size, ATOLL_FAILED_PRECONDITION,
                  "binary '" + binary + "' was built for cpu kernel ABI version " +
                      std::to_string(version) + ", but this backend runs version " +
                      std::to_string(ATOLL_CPU_ABI_VERSION) +
                      ": rebuild it against this Atoll's atoll/cpu_kernel.h");
    }
    std::lock_guard<std::mutex> lock(self->programs_mutex);
    Program* raw = loaded.get();
    self->programs.emplace(raw, std::move(loaded));
    *program = raw;
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cpu backend: out of memory");
  }
}

void ReleaseProgram(void* backend, void* program) {
  auto* self = static_cast<Backend*>(backend);
  if (self == nullptr) return;
  std::lock_guard<std::mutex> lock(self->programs_mutex);
  self->programs.erase(program);
}

// A cpu kernel's symbol carries no types to check the manifest's against, so they are not used.
int FindKernel(void* backend, void* program, const char* name, const char* const* /*arg_types*/,
               uint32_t /*arg_count*/, void** kernel, char* error, size_t error_size) {
  auto* self = static_cast<Backend*>(backend);
  if (self == nullptr || kernel == nullptr || name == nullptr || name[0] == '\0') {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "kernel: `backend`, `kernel` or `name` is NULL or empty");
  }
  *kernel = nullptr;
  try {
    std::lock_guard<std::mutex> lock(self->programs_mutex);
    auto found = self->programs.find(program);
    if (found == self->programs.end()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "kernel: unknown program handle; pass one that program() returned and "
                  "release_program() has not released");
    }
    Program& loaded = *found->second;
    auto existing = loaded.kernels.find(std::string_view(name));
    if (existing != loaded.kernels.end()) {
      *kernel = existing->second.get();
      return ATOLL_OK;
    }
    std::string symbol_name = std::string(ATOLL_CPU_KERNEL_PREFIX) + name;
    dlerror();
    void* symbol = dlsym(loaded.handle, symbol_name.c_str());
    if (symbol == nullptr) {
      return Fail(error, error_size, ATOLL_NOT_FOUND,
                  "binary " + loaded.path + " has no kernel '" + name +
                      "' (expected exported symbol " + symbol_name + ")");
    }
    auto created = std::make_unique<Kernel>();
    created->function = reinterpret_cast<atoll_cpu_kernel_fn>(symbol);
    created->name = name;
    created->binary = loaded.path;
    *kernel = created.get();
    loaded.kernels.emplace(name, std::move(created));
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "cpu backend: out of memory");
  }
}

// A cpu kernel is one call that walks its data itself, so the geometry is ignored.
int Launch(void* backend, uint32_t device, uint32_t compute_unit, void* kernel,
           const atoll_backend_arg_v1* args, uint32_t arg_count,
           const atoll_backend_geometry_v1* /*geometry*/, atoll_backend_done_fn done, void* user,
           char* error, size_t error_size) {
  auto* self = static_cast<Backend*>(backend);
  const auto* launched = static_cast<const Kernel*>(kernel);
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
    auto& compute_units = self->devices[device].compute_units;
    if (compute_unit >= compute_units.size()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "compute unit " + std::to_string(compute_unit) + " does not exist: device " +
                      std::to_string(device) + " has " + std::to_string(compute_units.size()) +
                      " (set \"compute_units\" in the cpu backend's configuration)");
    }
    for (uint32_t i = 0; i < arg_count; ++i) {
      const atoll_backend_arg_v1& arg = args[i];
      if (arg.kind != ATOLL_BACKEND_ARG_ARRAY && arg.kind != ATOLL_BACKEND_ARG_SCALAR) {
        return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                    "launch of kernel '" + launched->name + "': argument " + std::to_string(i) +
                        " has kind " + std::to_string(arg.kind) +
                        ", neither array (1) nor scalar (2)");
      }
      if (arg.data == nullptr && arg.size_bytes > 0) {
        return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                    "launch of kernel '" + launched->name + "': argument " + std::to_string(i) +
                        " has " + std::to_string(arg.size_bytes) + " bytes at NULL");
      }
    }
    compute_units[compute_unit]->Launch(launched, args, arg_count, done, user);
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED,
                "cpu backend: out of memory queueing a launch");
  }
}

}  // namespace
}  // namespace atl::cpu

extern "C" ATOLL_BACKEND_EXPORT const atoll_backend_v1* atoll_backend_get_v1(void) {
  static const atoll_backend_v1 table = {
      .abi_version = ATOLL_BACKEND_ABI_VERSION,
      .struct_size = sizeof(atoll_backend_v1),
      .name = "cpu",
      .open = atl::cpu::Open,
      .close = atl::cpu::Close,
      .device_count = atl::cpu::DeviceCount,
      .device_info = atl::cpu::DeviceInfo,
      .program = atl::cpu::ProgramBinary,
      .release_program = atl::cpu::ReleaseProgram,
      .kernel = atl::cpu::FindKernel,
      .launch = atl::cpu::Launch,
      // Kernels read client memory in place, so there is nothing to pin.
      .register_memory = nullptr,
      .unregister_memory = nullptr,
      .open_device = atl::cpu::OpenDevice,
      .isolate_by_default = 0,
      .accepts_single_pass = 0,
  };
  return &table;
}
