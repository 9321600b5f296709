// The `opencl` backend: runs OpenCL C source (built when a device is programmed) and device
// binaries (PoCL binaries, Xilinx .xclbin, Intel FPGA .aocx) on the devices of any OpenCL platform
// the ICD loader finds. One Atoll device per OpenCL device, each with its own context; one in-order
// command queue and one cl_kernel per compute unit. A launch enqueues uploads, the kernel and
// downloads without waiting and completes from the runtime's event callback.

#include <CL/cl.h>
#include <CL/cl_ext.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "arg_types.h"
#include "atoll/backend.h"
#include "atoll/status.h"
#include "cl_errors.h"
#include "program_cache.h"

namespace atl::opencl {
namespace {

constexpr const char* kConfigExample =
    R"({"platforms": ["pocl"], "device_types": ["gpu"], "devices": [0], "compute_units": 2, )"
    R"("cache_dir": "/var/cache/atoll/opencl"})";
constexpr uint32_t kDefaultComputeUnits = 2;
constexpr uint32_t kMaxComputeUnits = 64;
// Room left for a build log in an error message: the daemon's error buffer is 1024 bytes.
constexpr size_t kBuildLogBytes = 600;

// ---- Small helpers ------------------------------------------------------------------------------

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

std::string Lower(std::string_view text) {
  std::string lower(text);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower;
}

std::string Trim(std::string text) {
  while (!text.empty() &&
         (std::isspace(static_cast<unsigned char>(text.back())) != 0 || text.back() == '\0')) {
    text.pop_back();
  }
  size_t begin = 0;
  while (begin < text.size() && std::isspace(static_cast<unsigned char>(text[begin])) != 0) {
    ++begin;
  }
  return text.substr(begin);
}

// "CL_INVALID_BINARY (-42)"
std::string Named(cl_int code) { return ErrorName(code) + " (" + std::to_string(code) + ")"; }

std::string PlatformString(cl_platform_id platform, cl_platform_info what) {
  size_t size = 0;
  if (clGetPlatformInfo(platform, what, 0, nullptr, &size) != CL_SUCCESS || size == 0) return "";
  std::string value(size, '\0');
  if (clGetPlatformInfo(platform, what, size, value.data(), nullptr) != CL_SUCCESS) return "";
  return Trim(value);
}

std::string DeviceString(cl_device_id device, cl_device_info what) {
  size_t size = 0;
  if (clGetDeviceInfo(device, what, 0, nullptr, &size) != CL_SUCCESS || size == 0) return "";
  std::string value(size, '\0');
  if (clGetDeviceInfo(device, what, size, value.data(), nullptr) != CL_SUCCESS) return "";
  return Trim(value);
}

template <typename T>
std::optional<T> DeviceValue(cl_device_id device, cl_device_info what) {
  T value{};
  if (clGetDeviceInfo(device, what, sizeof(value), &value, nullptr) != CL_SUCCESS) {
    return std::nullopt;
  }
  return value;
}

// The short platform vendor manifests name in "platform.vendor": "pocl", "xilinx", "nvidia",
// "intel", "amd", else the vendor's first word in lower case.
std::string ShortVendor(const std::string& platform_name, const std::string& platform_vendor) {
  std::string text = Lower(platform_name + " " + platform_vendor);
  struct Known {
    const char* needle;
    const char* vendor;
  };
  // Xilinx before AMD: XRT platforms of AMD-branded cards still say Xilinx, and drive FPGAs.
  static const Known kKnown[] = {{"portable computing language", "pocl"},
                                 {"pocl", "pocl"},
                                 {"xilinx", "xilinx"},
                                 {"nvidia", "nvidia"},
                                 {"intel", "intel"},
                                 {"advanced micro devices", "amd"},
                                 {"amd", "amd"},
                                 {"apple", "apple"},
                                 {"rusticl", "mesa"},
                                 {"clover", "mesa"},
                                 {"mesa", "mesa"}};
  for (const Known& known : kKnown) {
    if (text.find(known.needle) != std::string::npos) return known.vendor;
  }
  std::string first;
  for (char c : Lower(platform_vendor)) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0) {
      first += c;
    } else if (!first.empty()) {
      break;
    }
  }
  return first.empty() ? "unknown" : first;
}

// ---- Configuration ------------------------------------------------------------------------------

// One entry of "platforms" or "devices": an index, or text matched without regard to case.
struct Selector {
  bool is_index = false;
  uint64_t index = 0;
  std::string text;

  std::string Show() const { return is_index ? std::to_string(index) : "\"" + text + "\""; }
};

struct Config {
  std::optional<std::vector<Selector>> platforms;
  std::optional<std::vector<Selector>> devices;
  cl_device_type device_types = CL_DEVICE_TYPE_ALL;
  uint32_t compute_units = kDefaultComputeUnits;
  // Absent: true for accelerators (FPGAs), whose binaries hold a fixed number of kernel instances.
  std::optional<bool> compute_units_by_manifest;
  std::optional<std::string> cache_dir;  // absent: the default; "": no disk cache
};

std::string ReadSelectors(const nlohmann::json& value, const char* field,
                          std::optional<std::vector<Selector>>* out) {
  std::string expected = std::string("\"") + field +
                         "\" must be a list of indices (0, 1, ...) and names, got " + value.dump();
  if (!value.is_array()) return expected;
  std::vector<Selector> selectors;
  for (const auto& item : value) {
    Selector selector;
    if (item.is_number_unsigned()) {
      selector.is_index = true;
      selector.index = item.get<uint64_t>();
    } else if (item.is_string() && !item.get<std::string>().empty()) {
      selector.text = item.get<std::string>();
    } else {
      return expected;
    }
    selectors.push_back(std::move(selector));
  }
  *out = std::move(selectors);
  return "";
}

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
    if (key == "platforms") {
      problem = ReadSelectors(value, "platforms", &config->platforms);
    } else if (key == "devices") {
      problem = ReadSelectors(value, "devices", &config->devices);
    } else if (key == "device_types") {
      static const std::pair<const char*, cl_device_type> kTypes[] = {
          {"cpu", CL_DEVICE_TYPE_CPU},
          {"gpu", CL_DEVICE_TYPE_GPU},
          {"accelerator", CL_DEVICE_TYPE_ACCELERATOR},
          {"custom", CL_DEVICE_TYPE_CUSTOM}};
      std::string expected =
          "\"device_types\" must be a non-empty list of \"cpu\", \"gpu\", \"accelerator\" and "
          "\"custom\", got " +
          value.dump();
      if (!value.is_array() || value.empty()) {
        problem = expected;
      } else {
        config->device_types = 0;
        for (const auto& item : value) {
          bool known = false;
          for (const auto& [name, type] : kTypes) {
            if (item.is_string() && item.get<std::string>() == name) {
              config->device_types |= type;
              known = true;
            }
          }
          if (!known) {
            problem = expected;
            break;
          }
        }
      }
    } else if (key == "compute_units") {
      if (!value.is_number_unsigned() || value.get<uint64_t>() < 1 ||
          value.get<uint64_t>() > kMaxComputeUnits) {
        problem = "\"compute_units\" must be an integer from 1 to " +
                  std::to_string(kMaxComputeUnits) + ", got " + value.dump();
      } else {
        config->compute_units = value.get<uint32_t>();
      }
    } else if (key == "compute_units_by_manifest") {
      if (!value.is_boolean()) {
        problem = "\"compute_units_by_manifest\" must be true or false, got " + value.dump();
      } else {
        config->compute_units_by_manifest = value.get<bool>();
      }
    } else if (key == "cache_dir") {
      if (value.is_null()) {
        config->cache_dir = "";
      } else if (value.is_string()) {
        config->cache_dir = value.get<std::string>();
      } else {
        problem = "\"cache_dir\" must be a folder path, or \"\" or null for no disk cache, got " +
                  value.dump();
      }
    } else {
      // A misspelt field would otherwise be ignored silently.
      problem = "unknown field \"" + key +
                "\"; the opencl backend's fields are \"platforms\", \"device_types\", "
                "\"devices\", \"compute_units\", \"compute_units_by_manifest\" and \"cache_dir\"";
    }
    if (!problem.empty()) return problem;
  }
  return "";
}

std::string DefaultCacheDir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/atoll/opencl";
  return "/var/cache/atoll/opencl";
}

void Warn(const std::string& message) {
  std::fprintf(stderr, "atoll opencl backend: warning: %s\n", message.c_str());
  std::fflush(stderr);
}

// ---- Devices ------------------------------------------------------------------------------------

// Device buffers of one compute unit kept between launches: creating and releasing a cl_mem per
// argument and launch cost as much as the whole round trip of a small kernel on NVIDIA's OpenCL.
// A buffer is taken back only by a request of exactly its size, and every reuse is fully
// overwritten (uploaded, or cleared for write-only arrays) before a kernel reads it, so no
// request sees another's data.
class BufferPool {
 public:
  static constexpr size_t kMaxBuffers = 16;
  static constexpr size_t kMaxBytes = size_t{64} << 20;

  BufferPool() = default;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool() {
    for (const auto& [size, mem] : free_) clReleaseMemObject(mem);
  }

  // A kept buffer of `size` bytes, or nullptr.
  cl_mem Take(size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = free_.size(); i-- > 0;) {
      if (free_[i].first != size) continue;
      cl_mem mem = free_[i].second;
      free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
      bytes_ -= size;
      return mem;
    }
    return nullptr;
  }

  // Keeps `mem` for a later launch, dropping the oldest kept buffers beyond the bounds; a buffer
  // larger than the byte bound is released at once.
  void Give(size_t size, cl_mem mem) {
    std::vector<cl_mem> released;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (size > kMaxBytes) {
        released.push_back(mem);
      } else {
        free_.emplace_back(size, mem);
        bytes_ += size;
        while (free_.size() > kMaxBuffers || bytes_ > kMaxBytes) {
          released.push_back(free_.front().second);
          bytes_ -= free_.front().first;
          free_.erase(free_.begin());
        }
      }
    }
    for (cl_mem m : released) clReleaseMemObject(m);
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<size_t, cl_mem>> free_;  // oldest first; guarded by mutex_
  size_t bytes_ = 0;                             // guarded by mutex_
};

struct Device {
  Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device() {
    pools.clear();
    for (cl_command_queue queue : queues) clReleaseCommandQueue(queue);
    if (context != nullptr) clReleaseContext(context);
  }

  std::string Describe() const { return "device " + std::to_string(index) + " (" + name + ")"; }

  void MarkLost(const std::string& reason) {
    std::lock_guard<std::mutex> lock(lost_mutex);
    if (!lost.load(std::memory_order_relaxed)) lost_reason = reason;
    lost.store(true, std::memory_order_release);
  }

  std::string LostMessage() {
    std::lock_guard<std::mutex> lock(lost_mutex);
    return Describe() + " was lost (" + lost_reason +
           ") and takes no more work; restart atolld once the device works again";
  }

  uint32_t index = 0;
  cl_platform_id platform = nullptr;
  cl_device_id id = nullptr;
  cl_context context = nullptr;
  std::vector<cl_command_queue> queues;            // one per compute unit
  std::vector<std::unique_ptr<BufferPool>> pools;  // one per compute unit
  cl_device_type type = 0;
  bool compute_units_by_manifest = false;

  std::string vendor, name, platform_vendor, platform_name, platform_version, pci_id;
  // What a built program depends on, for the program cache's key.
  std::string identity;
  int64_t global_memory_bytes = -1;
  // Kernels can work on the client's memory in place: CL_MEM_USE_HOST_PTR over it needs no copy.
  bool zero_copy = false;
  uint64_t base_align_bytes = 4096;
  bool compiler_available = true;

  std::atomic<bool> lost{false};
  std::mutex lost_mutex;
  std::string lost_reason;  // guarded by lost_mutex
};

// Xilinx names a device after its shell, "xilinx_u250_xdma_201830_2"; InAccel's manifests name
// the same platform {"name": "u250", "version": "xdma_201830.2"}, so that is what is reported.
void XilinxPlatform(const std::string& device_name, std::string* name, std::string* version) {
  std::string rest = device_name;
  if (rest.rfind("xilinx_", 0) == 0) rest = rest.substr(7);
  size_t cut = rest.find('_');
  if (cut == std::string::npos) {
    *name = rest;
    return;
  }
  *name = rest.substr(0, cut);
  std::string shell = rest.substr(cut + 1);
  size_t last = shell.rfind('_');
  if (last != std::string::npos && last + 1 < shell.size() &&
      std::all_of(shell.begin() + static_cast<ptrdiff_t>(last) + 1, shell.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; })) {
    shell[last] = '.';
  }
  *version = shell;
}

std::string PciId(cl_device_id device) {
  char text[32] = "";
  // cl_khr_pci_bus_info, then NVIDIA's own query; other devices report none.
  struct PciBusInfo {
    cl_uint domain, bus, device, function;
  };
  if (auto info = DeviceValue<PciBusInfo>(device, 0x410F /* CL_DEVICE_PCI_BUS_INFO_KHR */)) {
    std::snprintf(text, sizeof(text), "%04x:%02x:%02x.%x", info->domain & 0xffff, info->bus & 0xff,
                  info->device & 0x1f, info->function & 0x7);
    return text;
  }
  auto bus = DeviceValue<cl_uint>(device, 0x4008 /* CL_DEVICE_PCI_BUS_ID_NV */);
  auto slot = DeviceValue<cl_uint>(device, 0x4009 /* CL_DEVICE_PCI_SLOT_ID_NV */);
  if (bus && slot) {
    cl_uint domain =
        DeviceValue<cl_uint>(device, 0x400A /* CL_DEVICE_PCI_DOMAIN_ID_NV */).value_or(0);
    std::snprintf(text, sizeof(text), "%04x:%02x:%02x.%x", domain & 0xffff, *bus & 0xff,
                  (*slot >> 3) & 0x1f, *slot & 0x7);
    return text;
  }
  return "";
}

void CL_CALLBACK OnContextError(const char* message, const void*, size_t, void* user) {
  auto* device = static_cast<Device*>(user);
  std::fprintf(stderr, "atoll opencl backend: %s reports: %s\n", device->Describe().c_str(),
               message != nullptr ? message : "(no message)");
}

// Opens `id` as Atoll device `index`: context, queues and what device_info reports. Returns "" or
// what failed.
std::string OpenDevice(cl_platform_id platform, cl_device_id id, uint32_t index,
                       const Config& config, Device* device) {
  const uint32_t compute_units = config.compute_units;
  device->index = index;
  device->platform = platform;
  device->id = id;
  device->type = DeviceValue<cl_device_type>(id, CL_DEVICE_TYPE).value_or(CL_DEVICE_TYPE_DEFAULT);
  device->compute_units_by_manifest =
      config.compute_units_by_manifest.value_or((device->type & CL_DEVICE_TYPE_ACCELERATOR) != 0);
  device->vendor = DeviceString(id, CL_DEVICE_VENDOR);
  device->name = DeviceString(id, CL_DEVICE_NAME);
  std::string platform_name = PlatformString(platform, CL_PLATFORM_NAME);
  std::string platform_vendor = PlatformString(platform, CL_PLATFORM_VENDOR);
  std::string driver_version = DeviceString(id, CL_DRIVER_VERSION);
  std::string device_version = DeviceString(id, CL_DEVICE_VERSION);
  device->platform_vendor = ShortVendor(platform_name, platform_vendor);
  device->platform_name = device->name;
  device->platform_version = driver_version.empty() ? device_version : driver_version;
  if (device->platform_vendor == "xilinx") {
    XilinxPlatform(device->name, &device->platform_name, &device->platform_version);
  }
  device->pci_id = PciId(id);
  device->identity = platform_name + "\n" + PlatformString(platform, CL_PLATFORM_VERSION) + "\n" +
                     device->name + "\n" + device_version + "\n" + driver_version;
  if (auto memory = DeviceValue<cl_ulong>(id, CL_DEVICE_GLOBAL_MEM_SIZE)) {
    device->global_memory_bytes = static_cast<int64_t>(*memory);
  }
  // Deprecated since OpenCL 2.0 but still answered; CPU devices share host memory whatever
  // they report.
  bool unified = DeviceValue<cl_bool>(id, CL_DEVICE_HOST_UNIFIED_MEMORY).value_or(CL_FALSE) != 0;
  device->zero_copy = unified || (device->type & CL_DEVICE_TYPE_CPU) != 0;
  if (auto bits = DeviceValue<cl_uint>(id, CL_DEVICE_MEM_BASE_ADDR_ALIGN); bits && *bits >= 8) {
    device->base_align_bytes = *bits / 8;
  }
  device->compiler_available =
      DeviceValue<cl_bool>(id, CL_DEVICE_COMPILER_AVAILABLE).value_or(CL_TRUE) != 0;

  cl_int status = CL_SUCCESS;
  cl_context_properties properties[] = {CL_CONTEXT_PLATFORM,
                                        reinterpret_cast<cl_context_properties>(platform), 0};
  device->context = clCreateContext(properties, 1, &id, OnContextError, device, &status);
  if (device->context == nullptr || status != CL_SUCCESS) {
    device->context = nullptr;
    return "clCreateContext failed with " + Named(status);
  }
  for (uint32_t unit = 0; unit < compute_units; ++unit) {
    // clCreateCommandQueue (OpenCL 1.2) rather than ...WithProperties (2.0): FPGA runtimes are 1.2.
    cl_command_queue queue = clCreateCommandQueue(device->context, id, 0, &status);
    if (queue == nullptr || status != CL_SUCCESS) {
      return "clCreateCommandQueue for compute unit " + std::to_string(unit) + " failed with " +
             Named(status);
    }
    device->queues.push_back(queue);
    device->pools.push_back(std::make_unique<BufferPool>());
  }
  return "";
}

// ---- Programs and kernels -----------------------------------------------------------------------

struct Program;

struct Kernel {
  static constexpr uint64_t kMagic = 0x6b6c636c6c6f7461ull;  // "atollclk"

  Kernel() = default;
  Kernel(const Kernel&) = delete;
  Kernel& operator=(const Kernel&) = delete;
  ~Kernel() {
    magic = 0;
    for (cl_kernel kernel : per_unit) clReleaseKernel(kernel);
  }

  // "argument 2 'c'", or "argument 2" when the binary kept no names.
  std::string Argument(uint32_t i) const {
    std::string text = "argument " + std::to_string(i);
    if (i < args.size() && !args[i].name.empty()) text += " '" + args[i].name + "'";
    return text;
  }

  uint64_t magic = kMagic;
  Device* device = nullptr;
  Program* program = nullptr;
  std::string name;
  std::string binary;  // the file it came from, for messages
  // clSetKernelArg changes a cl_kernel for every thread: each compute unit has its own.
  std::vector<cl_kernel> per_unit;
  cl_uint arg_count = 0;
  std::vector<ArgInfo> args;  // empty when the binary describes no arguments
  size_t work_group_size = 0;
};

struct Program {
  Program() = default;
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  ~Program() {
    kernels.clear();
    if (program != nullptr) clReleaseProgram(program);
  }

  Device* device = nullptr;
  cl_program program = nullptr;
  std::string path;
  // Argument descriptions kept with a cached build, used when the runtime has none.
  KernelSignatures signatures;
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<Kernel>, std::less<>> kernels;  // guarded by mutex
};

// ---- The backend --------------------------------------------------------------------------------

struct Backend {
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;
  ~Backend() {
    WaitForLaunches();
    programs.clear();
    devices.clear();
  }

  // Waits until every launch has called its `done`. A `done` may launch again, so the queues are
  // drained until nothing is in flight.
  void WaitForLaunches() {
    for (;;) {
      for (auto& device : devices) {
        for (cl_command_queue queue : device->queues) clFinish(queue);
      }
      std::unique_lock<std::mutex> lock(flight_mutex);
      if (flight_done.wait_for(lock, std::chrono::milliseconds(100),
                               [this] { return in_flight == 0; })) {
        return;
      }
    }
  }

  void Started() {
    std::lock_guard<std::mutex> lock(flight_mutex);
    ++in_flight;
  }
  void Ended() {
    std::lock_guard<std::mutex> lock(flight_mutex);
    if (--in_flight == 0) flight_done.notify_all();
  }

  std::vector<std::unique_ptr<Device>> devices;
  ProgramCache cache{""};
  std::mutex programs_mutex;
  std::map<const void*, std::unique_ptr<Program>> programs;  // guarded by programs_mutex

  std::mutex flight_mutex;
  std::condition_variable flight_done;
  uint64_t in_flight = 0;  // guarded by flight_mutex
};

bool Matches(const Selector& selector, uint64_t index, const std::vector<std::string>& names) {
  if (selector.is_index) return selector.index == index;
  std::string wanted = Lower(selector.text);
  for (const std::string& name : names) {
    std::string lower = Lower(name);
    if (lower == wanted || lower.find(wanted) != std::string::npos) return true;
  }
  return false;
}

struct Candidate {
  cl_platform_id platform;
  cl_device_id device;
  std::string name;
};

// The devices `config` selects, in platform order. Returns "" or what is wrong.
std::string SelectDevices(const Config& config, std::vector<Candidate>* selected) {
  cl_uint count = 0;
  cl_int status = clGetPlatformIDs(0, nullptr, &count);
  // The ICD loader answers CL_PLATFORM_NOT_FOUND_KHR when no vendor is installed.
  if (status != CL_SUCCESS && status != -1001) {
    return "clGetPlatformIDs failed with " + Named(status);
  }
  std::vector<cl_platform_id> platforms(status == CL_SUCCESS ? count : 0);
  if (!platforms.empty() &&
      (status = clGetPlatformIDs(count, platforms.data(), nullptr)) != CL_SUCCESS) {
    return "clGetPlatformIDs failed with " + Named(status);
  }
  std::string available;
  std::vector<cl_platform_id> chosen;
  for (size_t p = 0; p < platforms.size(); ++p) {
    std::string name = PlatformString(platforms[p], CL_PLATFORM_NAME);
    std::string vendor = PlatformString(platforms[p], CL_PLATFORM_VENDOR);
    std::string short_vendor = ShortVendor(name, vendor);
    available += (available.empty() ? "" : ", ") + std::to_string(p) + ": \"" + name + "\" (" +
                 short_vendor + ")";
    bool wanted = !config.platforms;
    if (config.platforms) {
      for (const Selector& s : *config.platforms) {
        wanted = wanted || Matches(s, p, {name, vendor, short_vendor});
      }
    }
    if (wanted) chosen.push_back(platforms[p]);
  }
  if (config.platforms) {
    for (const Selector& s : *config.platforms) {
      bool found = false;
      for (size_t p = 0; p < platforms.size(); ++p) {
        std::string name = PlatformString(platforms[p], CL_PLATFORM_NAME);
        std::string vendor = PlatformString(platforms[p], CL_PLATFORM_VENDOR);
        found = found || Matches(s, p, {name, vendor, ShortVendor(name, vendor)});
      }
      if (!found) {
        return "\"platforms\": " + s.Show() + " matches no OpenCL platform; " +
               (platforms.empty() ? std::string("the ICD loader finds none (is a vendor's .icd "
                                                "file in /etc/OpenCL/vendors?)")
                                  : "the platforms are " + available);
      }
    }
  }
  std::vector<Candidate> devices;
  for (cl_platform_id platform : chosen) {
    cl_uint n = 0;
    status = clGetDeviceIDs(platform, config.device_types, 0, nullptr, &n);
    if (status == CL_DEVICE_NOT_FOUND || n == 0) continue;
    if (status != CL_SUCCESS) return "clGetDeviceIDs failed with " + Named(status);
    std::vector<cl_device_id> ids(n);
    status = clGetDeviceIDs(platform, config.device_types, n, ids.data(), nullptr);
    if (status != CL_SUCCESS) return "clGetDeviceIDs failed with " + Named(status);
    for (cl_device_id id : ids) devices.push_back({platform, id, DeviceString(id, CL_DEVICE_NAME)});
  }
  if (!config.devices) {
    *selected = std::move(devices);
    return "";
  }
  for (const Selector& s : *config.devices) {
    bool found = false;
    for (size_t d = 0; d < devices.size(); ++d) {
      if (!Matches(s, d, {devices[d].name})) continue;
      found = true;
      bool already = std::any_of(selected->begin(), selected->end(),
                                 [&](const Candidate& c) { return c.device == devices[d].device; });
      if (!already) selected->push_back(devices[d]);
    }
    if (!found) {
      std::string listed;
      for (size_t d = 0; d < devices.size(); ++d) {
        listed +=
            (listed.empty() ? "" : ", ") + std::to_string(d) + ": \"" + devices[d].name + "\"";
      }
      return "\"devices\": " + s.Show() + " matches no device of the selected platforms; " +
             (devices.empty() ? std::string("they have none") : "they have " + listed);
    }
  }
  return "";
}

int Open(const char* config_json, void** backend, char* error, size_t error_size) {
  if (backend == nullptr) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, "open: `backend` is NULL");
  }
  *backend = nullptr;
  try {
    Config config;
    // The contract passes "{}" when there is no configuration; NULL is taken to mean the same.
    std::string problem = ParseConfig(config_json != nullptr ? config_json : "{}", &config);
    if (!problem.empty()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "opencl backend configuration: " + problem);
    }
    std::vector<Candidate> candidates;
    problem = SelectDevices(config, &candidates);
    if (!problem.empty()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "opencl backend configuration: " + problem);
    }
    auto opened = std::make_unique<Backend>();
    for (const Candidate& candidate : candidates) {
      auto device = std::make_unique<Device>();
      uint32_t index = static_cast<uint32_t>(opened->devices.size());
      problem = OpenDevice(candidate.platform, candidate.device, index, config, device.get());
      if (!problem.empty()) {
        // One broken device must not keep the others from working.
        Warn("skipping OpenCL device \"" + candidate.name + "\": " + problem);
        continue;
      }
      opened->devices.push_back(std::move(device));
    }
    std::string cache_dir = config.cache_dir.value_or(DefaultCacheDir());
    if (!cache_dir.empty()) {
      problem = PrepareCacheFolder(cache_dir);
      if (!problem.empty()) {
        Warn("built programs are not cached on disk (" + problem +
             "); set \"cache_dir\" to a writable folder, or to \"\" to silence this");
        cache_dir.clear();
      }
    }
    opened->cache = ProgramCache(cache_dir);
    *backend = opened.release();
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED,
                "opencl backend: out of memory in open");
  }
}

void Close(void* backend) { delete static_cast<Backend*>(backend); }

uint32_t DeviceCount(void* backend) {
  if (backend == nullptr) return 0;
  return static_cast<uint32_t>(static_cast<Backend*>(backend)->devices.size());
}

std::string NoSuchDevice(const Backend& backend, uint32_t device) {
  return "device " + std::to_string(device) + " does not exist: the opencl backend has " +
         std::to_string(backend.devices.size()) +
         " (see \"platforms\", \"device_types\" and \"devices\" in its configuration)";
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
    const Device& d = *self->devices[device];
    // Only the v1 fields are written: a newer daemon's larger struct keeps its extra fields.
    atoll_backend_device_info_v1 filled{};
    filled.struct_size = info->struct_size;
    CopyString(filled.vendor, d.vendor);
    CopyString(filled.name, d.name);
    CopyString(filled.platform_vendor, d.platform_vendor);
    CopyString(filled.platform_name, d.platform_name);
    CopyString(filled.platform_version, d.platform_version);
    CopyString(filled.pci_id, d.pci_id);
    filled.global_memory_bytes = d.global_memory_bytes;
    // OpenCL has no query for these.
    filled.temperature_c = -1;
    filled.power_mw = -1;
    filled.compute_units = static_cast<uint32_t>(d.queues.size());
    // An FPGA holds one bitstream at a time; GPUs and CPUs keep any number of programs.
    filled.binaries_at_once = (d.type & CL_DEVICE_TYPE_ACCELERATOR) != 0 ? 1 : 0;
    filled.compute_units_by_binary = d.compute_units_by_manifest ? 1 : 0;
    std::memcpy(info, &filled, sizeof(filled));
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "opencl backend: out of memory");
  }
}

// What a binary looks like, for messages and for choosing how to load it.
enum class Format { kSource, kPocl, kXclbin, kElf, kSpirv, kOther };

bool EndsWith(const std::string& text, std::string_view suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

Format Classify(const std::string& path, const std::string& content) {
  auto starts = [&](std::string_view magic) {
    return content.size() >= magic.size() && content.compare(0, magic.size(), magic) == 0;
  };
  if (starts(std::string_view("poclbin\0", 8))) return Format::kPocl;
  if (starts("xclbin2")) return Format::kXclbin;
  if (starts("\x7f"
             "ELF"))
    return Format::kElf;
  if (starts("\x03\x02\x23\x07")) return Format::kSpirv;
  if (EndsWith(path, ".cl")) return Format::kSource;
  // NVIDIA's runtime takes PTX, which is text, as a binary.
  if (EndsWith(path, ".ptx")) return Format::kOther;
  // Text without NUL bytes is OpenCL C, whatever the file is called.
  if (content.find('\0') == std::string::npos) return Format::kSource;
  return Format::kOther;
}

const char* Describe(Format format) {
  switch (format) {
    case Format::kSource:
      return "OpenCL C source";
    case Format::kPocl:
      return "a PoCL binary";
    case Format::kXclbin:
      return "a Xilinx .xclbin";
    case Format::kElf:
      return "an ELF image (an Intel FPGA .aocx or another vendor's binary)";
    case Format::kSpirv:
      return "a SPIR-V module";
    case Format::kOther:
      break;
  }
  return "a device binary";
}

std::string BuildLog(cl_program program, cl_device_id device) {
  size_t size = 0;
  if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, 0, nullptr, &size) !=
          CL_SUCCESS ||
      size == 0) {
    return "";
  }
  std::string log(size, '\0');
  if (clGetProgramBuildInfo(program, device, CL_PROGRAM_BUILD_LOG, size, log.data(), nullptr) !=
      CL_SUCCESS) {
    return "";
  }
  log = Trim(log);
  // The first errors are the ones that explain the rest.
  if (log.size() > kBuildLogBytes) log = log.substr(0, kBuildLogBytes) + " [...]";
  return log;
}

// Builds `program` for `device`; returns "" or the failure with its log.
std::string Build(cl_program program, const Device& device, const std::string& options,
                  cl_int* status) {
  *status = clBuildProgram(program, 1, &device.id, options.c_str(), nullptr, nullptr);
  if (*status == CL_SUCCESS) return "";
  std::string log = BuildLog(program, device.id);
  return Named(*status) + (log.empty() ? std::string(" with no build log") : ":\n" + log);
}

// The kernels of a built program and their arguments, for the program cache.
KernelSignatures ReadSignatures(cl_program program) {
  KernelSignatures signatures;
  size_t size = 0;
  if (clGetProgramInfo(program, CL_PROGRAM_KERNEL_NAMES, 0, nullptr, &size) != CL_SUCCESS) {
    return signatures;
  }
  std::string names(size, '\0');
  if (clGetProgramInfo(program, CL_PROGRAM_KERNEL_NAMES, size, names.data(), nullptr) !=
      CL_SUCCESS) {
    return signatures;
  }
  names = Trim(names);
  size_t begin = 0;
  while (begin < names.size()) {
    size_t end = names.find(';', begin);
    if (end == std::string::npos) end = names.size();
    std::string name = names.substr(begin, end - begin);
    begin = end + 1;
    cl_int status = CL_SUCCESS;
    cl_kernel kernel = clCreateKernel(program, name.c_str(), &status);
    if (kernel == nullptr) continue;
    cl_uint count = 0;
    std::vector<ArgInfo> args;
    bool complete =
        clGetKernelInfo(kernel, CL_KERNEL_NUM_ARGS, sizeof(count), &count, nullptr) == CL_SUCCESS;
    for (cl_uint i = 0; complete && i < count; ++i) {
      ArgInfo arg;
      size_t length = 0;
      complete =
          clGetKernelArgInfo(kernel, i, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof(arg.address),
                             &arg.address, nullptr) == CL_SUCCESS &&
          clGetKernelArgInfo(kernel, i, CL_KERNEL_ARG_TYPE_NAME, 0, nullptr, &length) == CL_SUCCESS;
      if (!complete) break;
      arg.type_name.assign(length, '\0');
      clGetKernelArgInfo(kernel, i, CL_KERNEL_ARG_TYPE_NAME, length, arg.type_name.data(), nullptr);
      arg.type_name = Trim(arg.type_name);
      if (clGetKernelArgInfo(kernel, i, CL_KERNEL_ARG_NAME, 0, nullptr, &length) == CL_SUCCESS) {
        arg.name.assign(length, '\0');
        clGetKernelArgInfo(kernel, i, CL_KERNEL_ARG_NAME, length, arg.name.data(), nullptr);
        arg.name = Trim(arg.name);
      }
      args.push_back(std::move(arg));
    }
    clReleaseKernel(kernel);
    if (complete) signatures[name] = std::move(args);
  }
  return signatures;
}

std::optional<std::vector<unsigned char>> ReadBinary(cl_program program) {
  size_t size = 0;
  if (clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof(size), &size, nullptr) !=
          CL_SUCCESS ||
      size == 0) {
    return std::nullopt;
  }
  std::vector<unsigned char> binary(size);
  unsigned char* pointer = binary.data();
  if (clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof(pointer), &pointer, nullptr) !=
      CL_SUCCESS) {
    return std::nullopt;
  }
  return binary;
}

cl_program FromBinary(const Device& device, const unsigned char* data, size_t size,
                      cl_int* status) {
  cl_int binary_status = CL_SUCCESS;
  cl_program program = clCreateProgramWithBinary(device.context, 1, &device.id, &size, &data,
                                                 &binary_status, status);
  if (*status == CL_SUCCESS && binary_status != CL_SUCCESS) *status = binary_status;
  if (program != nullptr && *status != CL_SUCCESS) {
    clReleaseProgram(program);
    program = nullptr;
  }
  return program;
}

// Builds OpenCL C `source` for `device`, through the program cache. On failure returns nullptr
// with the status code and message set.
cl_program BuildSource(Backend& backend, const Device& device, const std::string& binary,
                       const std::string& source, const std::string& build_options,
                       KernelSignatures* signatures, int* code, std::string* message) {
  if (!device.compiler_available) {
    *code = ATOLL_FAILED_PRECONDITION;
    *message = "'" + binary + "' is OpenCL C source, but " + device.Describe() +
               " has no compiler; install a binary built for it";
    return nullptr;
  }
  // Argument descriptions are what lets kernel() check the manifest's types.
  std::string options = build_options;
  if (options.find("-cl-kernel-arg-info") == std::string::npos) {
    options += options.empty() ? "-cl-kernel-arg-info" : " -cl-kernel-arg-info";
  }
  std::string key;
  cl_int status = CL_SUCCESS;
  if (backend.cache.enabled()) {
    key = ProgramCache::Key({device.identity, options, source});
    if (std::optional<CachedProgram> cached = backend.cache.Load(key)) {
      cl_program program =
          FromBinary(device, cached->binary.data(), cached->binary.size(), &status);
      if (program != nullptr && Build(program, device, options, &status).empty()) {
        *signatures = std::move(cached->kernels);
        return program;
      }
      // A damaged or stale entry (a driver update the identity missed) is rebuilt below.
      if (program != nullptr) clReleaseProgram(program);
    }
  }
  const char* text = source.c_str();
  size_t length = source.size();
  cl_program program = clCreateProgramWithSource(device.context, 1, &text, &length, &status);
  if (program == nullptr || status != CL_SUCCESS) {
    *code = StatusOf(status);
    *message = "clCreateProgramWithSource for '" + binary + "' failed with " + Named(status);
    return nullptr;
  }
  std::string problem = Build(program, device, options, &status);
  if (!problem.empty()) {
    clReleaseProgram(program);
    *code = status == CL_INVALID_BUILD_OPTIONS ? ATOLL_INVALID_ARGUMENT : StatusOf(status);
    if (status == CL_INVALID_BUILD_OPTIONS) {
      *message = "the compiler of " + device.Describe() + " refuses the build options \"" +
                 options + "\" of '" + binary +
                 "' (fix the manifest's \"buildOptions\"): " + problem;
    } else {
      *message = "'" + binary + "' does not build for " + device.Describe() + ": " + problem;
      // Some compilers (NVIDIA's) report an unknown option as a failed build, not as
      // CL_INVALID_BUILD_OPTIONS: say where the options came from either way.
      if (!options.empty()) {
        *message += "\n(built with the manifest's \"buildOptions\" \"" + options + "\")";
      }
    }
    return nullptr;
  }
  if (backend.cache.enabled() && !key.empty()) {
    if (std::optional<std::vector<unsigned char>> built = ReadBinary(program)) {
      CachedProgram entry{std::move(*built), ReadSignatures(program)};
      std::string stored = backend.cache.Store(key, entry);
      if (!stored.empty()) Warn("cannot cache the build of '" + binary + "': " + stored);
    }
  }
  return program;
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
    Device& target = *self->devices[device];
    if (target.lost.load(std::memory_order_acquire)) {
      return Fail(error, error_size, ATOLL_UNAVAILABLE, target.LostMessage());
    }
    std::string binary = path;
    struct stat file;
    if (stat(path, &file) != 0) {
      int saved = errno;
      int code = (saved == ENOENT || saved == ENOTDIR) ? ATOLL_NOT_FOUND
                 : saved == EACCES                     ? ATOLL_PERMISSION_DENIED
                                                       : ATOLL_INTERNAL;
      return Fail(error, error_size, code,
                  "binary '" + binary + "' cannot be opened: " + std::strerror(saved));
    }
    if (!S_ISREG(file.st_mode)) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "binary '" + binary +
                      "' is not a regular file; an opencl binary is a .cl source or a device "
                      "binary (.xclbin, .aocx, a PoCL binary)");
    }
    int read_error = 0;
    std::optional<std::string> read = ReadWholeFile(binary, &read_error);
    if (!read) {
      return Fail(error, error_size,
                  read_error == EACCES ? ATOLL_PERMISSION_DENIED : ATOLL_INTERNAL,
                  "binary '" + binary + "' cannot be read: " + std::strerror(read_error));
    }
    const std::string& content = *read;
    if (content.empty()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, "binary '" + binary + "' is empty");
    }
    Format format = Classify(binary, content);
    if (format == Format::kSpirv) {
      return Fail(error, error_size, ATOLL_UNIMPLEMENTED,
                  "binary '" + binary +
                      "' is a SPIR-V module, which the opencl backend does not load; install its "
                      "OpenCL C source (.cl) or a binary built for the device");
    }
    auto loaded = std::make_unique<Program>();
    loaded->device = &target;
    loaded->path = binary;
    std::string options = build_options != nullptr ? build_options : "";
    if (format == Format::kSource) {
      int code = ATOLL_OK;
      std::string message;
      loaded->program = BuildSource(*self, target, binary, content, options, &loaded->signatures,
                                    &code, &message);
      if (loaded->program == nullptr) return Fail(error, error_size, code, message);
    } else {
      // Loading an FPGA binary is what programs the card: it may take seconds.
      cl_int status = CL_SUCCESS;
      loaded->program = FromBinary(target, reinterpret_cast<const unsigned char*>(content.data()),
                                   content.size(), &status);
      if (loaded->program == nullptr) {
        if (MeansDeviceLost(status)) target.MarkLost("loading '" + binary + "' failed");
        std::string why = status == CL_INVALID_BINARY
                              ? ", so it was built for another device or platform; build it for "
                                "this one, or give its manifest a \"platform\" block naming the "
                                "device it was built for"
                              : "";
        return Fail(error, error_size, StatusOf(status),
                    "binary '" + binary + "' (" + Describe(format) + ") does not load on " +
                        target.Describe() + ": clCreateProgramWithBinary failed with " +
                        Named(status) + why);
      }
      std::string problem = Build(loaded->program, target, options, &status);
      if (!problem.empty() && status == CL_INVALID_BINARY) {
        // NVIDIA's platform accepts any bytes in clCreateProgramWithBinary and refuses them here.
        return Fail(error, error_size, StatusOf(status),
                    "binary '" + binary + "' (" + Describe(format) + ") does not load on " +
                        target.Describe() +
                        ": clBuildProgram failed with CL_INVALID_BINARY, so it was built for "
                        "another device or platform; build it for this one, or give its manifest "
                        "a \"platform\" block naming the device it was built for: " +
                        problem);
      }
      if (!problem.empty()) {
        return Fail(error, error_size, StatusOf(status),
                    "binary '" + binary + "' (" + Describe(format) + ") does not build for " +
                        target.Describe() + ": " + problem);
      }
    }
    std::lock_guard<std::mutex> lock(self->programs_mutex);
    Program* raw = loaded.get();
    self->programs.emplace(raw, std::move(loaded));
    *program = raw;
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "opencl backend: out of memory");
  }
}

void ReleaseProgram(void* backend, void* program) {
  auto* self = static_cast<Backend*>(backend);
  if (self == nullptr) return;
  std::unique_ptr<Program> released;
  {
    std::lock_guard<std::mutex> lock(self->programs_mutex);
    auto found = self->programs.find(program);
    if (found == self->programs.end()) return;
    released = std::move(found->second);
    self->programs.erase(found);
  }
}

// Kernel names of a program, for a message: "vadd, vsub".
std::string KernelNames(cl_program program) {
  size_t size = 0;
  if (clGetProgramInfo(program, CL_PROGRAM_KERNEL_NAMES, 0, nullptr, &size) != CL_SUCCESS) {
    return "";
  }
  std::string names(size, '\0');
  if (clGetProgramInfo(program, CL_PROGRAM_KERNEL_NAMES, size, names.data(), nullptr) !=
      CL_SUCCESS) {
    return "";
  }
  names = Trim(names);
  std::replace(names.begin(), names.end(), ';', ',');
  std::string spaced;
  for (char c : names) {
    spaced += c;
    if (c == ',') spaced += ' ';
  }
  return spaced;
}

// Reads the argument descriptions of `kernel`: from the runtime when the program was built with
// -cl-kernel-arg-info, else from the program cache's record. Leaves `args` empty when neither
// has them (a vendor binary).
void ReadArgs(const Program& program, Kernel* kernel) {
  cl_kernel handle = kernel->per_unit.front();
  std::vector<ArgInfo> args;
  for (cl_uint i = 0; i < kernel->arg_count; ++i) {
    ArgInfo arg;
    size_t length = 0;
    if (clGetKernelArgInfo(handle, i, CL_KERNEL_ARG_ADDRESS_QUALIFIER, sizeof(arg.address),
                           &arg.address, nullptr) != CL_SUCCESS ||
        clGetKernelArgInfo(handle, i, CL_KERNEL_ARG_TYPE_NAME, 0, nullptr, &length) != CL_SUCCESS) {
      args.clear();
      break;
    }
    arg.type_name.assign(length, '\0');
    clGetKernelArgInfo(handle, i, CL_KERNEL_ARG_TYPE_NAME, length, arg.type_name.data(), nullptr);
    arg.type_name = Trim(arg.type_name);
    if (clGetKernelArgInfo(handle, i, CL_KERNEL_ARG_NAME, 0, nullptr, &length) == CL_SUCCESS) {
      arg.name.assign(length, '\0');
      clGetKernelArgInfo(handle, i, CL_KERNEL_ARG_NAME, length, arg.name.data(), nullptr);
      arg.name = Trim(arg.name);
    }
    args.push_back(std::move(arg));
  }
  if (args.size() == kernel->arg_count) {
    kernel->args = std::move(args);
    return;
  }
  auto recorded = program.signatures.find(kernel->name);
  if (recorded != program.signatures.end() && recorded->second.size() == kernel->arg_count) {
    kernel->args = recorded->second;
  }
}

// "" when the manifest's `types` fit the kernel's own signature, else which argument does not.
std::string CheckSignature(const Kernel& kernel, const char* const* types, uint32_t count) {
  std::string where = "kernel '" + kernel.name + "' of '" + kernel.binary + "'";
  if (count != kernel.arg_count) {
    std::string names;
    for (const ArgInfo& arg : kernel.args) {
      names += (names.empty() ? "" : ", ") + Spell(ParseArgType(arg.type_name)) +
               (arg.name.empty() ? "" : " " + arg.name);
    }
    return where + " takes " + std::to_string(kernel.arg_count) + " argument" +
           (kernel.arg_count == 1 ? "" : "s") + (names.empty() ? "" : " (" + names + ")") +
           ", but the manifest lists " + std::to_string(count) +
           "; make the manifest's \"arguments\" match the kernel";
  }
  for (uint32_t i = 0; i < count && !kernel.args.empty(); ++i) {
    const ArgInfo& arg = kernel.args[i];
    if (arg.address == CL_KERNEL_ARG_ADDRESS_LOCAL) {
      return where + ": " + kernel.Argument(i) +
             " is a __local pointer, which a manifest cannot describe; allocate local memory "
             "inside the kernel instead";
    }
    ArgType theirs = ParseArgType(arg.type_name);
    theirs.pointer = arg.address == CL_KERNEL_ARG_ADDRESS_GLOBAL ||
                     arg.address == CL_KERNEL_ARG_ADDRESS_CONSTANT;
    ArgType ours = ParseArgType(types[i] != nullptr ? types[i] : "");
    if (ours.pointer != theirs.pointer || ours.element != theirs.element) {
      return where + ": " + kernel.Argument(i) + " is '" + Spell(theirs) + "' in the kernel but '" +
             (types[i] != nullptr ? types[i] : "") +
             "' in the manifest; make the manifest's type match the kernel's";
    }
  }
  return "";
}

int FindKernel(void* backend, void* program, const char* name, const char* const* arg_types,
               uint32_t arg_count, void** kernel, char* error, size_t error_size) {
  auto* self = static_cast<Backend*>(backend);
  if (self == nullptr || kernel == nullptr || name == nullptr || name[0] == '\0' ||
      (arg_types == nullptr && arg_count > 0)) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "kernel: `backend`, `kernel` or `name` is NULL or empty, or `arg_types` is NULL "
                "with arguments");
  }
  *kernel = nullptr;
  try {
    Program* loaded = nullptr;
    {
      std::lock_guard<std::mutex> lock(self->programs_mutex);
      auto found = self->programs.find(program);
      if (found == self->programs.end()) {
        return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                    "kernel: unknown program handle; pass one that program() returned and "
                    "release_program() has not released");
      }
      loaded = found->second.get();
    }
    std::lock_guard<std::mutex> lock(loaded->mutex);
    auto existing = loaded->kernels.find(std::string_view(name));
    if (existing != loaded->kernels.end()) {
      std::string problem = CheckSignature(*existing->second, arg_types, arg_count);
      if (!problem.empty()) return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, problem);
      *kernel = existing->second.get();
      return ATOLL_OK;
    }
    Device& device = *loaded->device;
    auto created = std::make_unique<Kernel>();
    created->device = &device;
    created->program = loaded;
    created->name = name;
    created->binary = loaded->path;
    for (size_t unit = 0; unit < device.queues.size(); ++unit) {
      cl_int status = CL_SUCCESS;
      cl_kernel handle = clCreateKernel(loaded->program, name, &status);
      if (handle == nullptr || status != CL_SUCCESS) {
        if (status == CL_INVALID_KERNEL_NAME) {
          std::string names = KernelNames(loaded->program);
          return Fail(error, error_size, ATOLL_NOT_FOUND,
                      "binary '" + loaded->path + "' has no kernel '" + name + "'" +
                          (names.empty() ? std::string() : "; it has " + names));
        }
        return Fail(error, error_size, StatusOf(status),
                    "clCreateKernel '" + std::string(name) + "' of '" + loaded->path +
                        "' failed with " + Named(status));
      }
      created->per_unit.push_back(handle);
    }
    if (created->per_unit.empty()) {
      return Fail(error, error_size, ATOLL_FAILED_PRECONDITION,
                  device.Describe() + " has no compute unit");
    }
    cl_int status = clGetKernelInfo(created->per_unit.front(), CL_KERNEL_NUM_ARGS,
                                    sizeof(created->arg_count), &created->arg_count, nullptr);
    if (status != CL_SUCCESS) {
      return Fail(error, error_size, ATOLL_INTERNAL,
                  "clGetKernelInfo(CL_KERNEL_NUM_ARGS) failed with " + Named(status));
    }
    ReadArgs(*loaded, created.get());
    clGetKernelWorkGroupInfo(created->per_unit.front(), device.id, CL_KERNEL_WORK_GROUP_SIZE,
                             sizeof(created->work_group_size), &created->work_group_size, nullptr);
    std::string problem = CheckSignature(*created, arg_types, arg_count);
    if (!problem.empty()) return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, problem);
    *kernel = created.get();
    loaded->kernels.emplace(name, std::move(created));
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED, "opencl backend: out of memory");
  }
}

// ---- Launch -------------------------------------------------------------------------------------

// One enqueued command of a launch, named for messages.
struct Step {
  cl_event event = nullptr;
  const char* what = "";  // "upload of", "the kernel", "download of"
  int32_t arg = -1;
};

// A launch in flight: owned by the completion callback once enqueued.
struct Run {
  Backend* backend = nullptr;
  Device* device = nullptr;
  const Kernel* kernel = nullptr;
  atoll_backend_done_fn done = nullptr;
  void* user = nullptr;
  std::vector<Step> steps;
  // Device buffers that go back to `pool` when the launch has ended.
  BufferPool* pool = nullptr;
  std::vector<std::pair<size_t, cl_mem>> pooled;

  void ReleaseEvents() {
    for (Step& step : steps) {
      if (step.event != nullptr) clReleaseEvent(step.event);
      step.event = nullptr;
    }
  }
};

std::string StepName(const Kernel& kernel, const Step& step) {
  if (step.arg < 0) return std::string(step.what);
  return std::string(step.what) + " " + kernel.Argument(static_cast<uint32_t>(step.arg));
}

void CL_CALLBACK OnComplete(cl_event, cl_int status, void* user) {
  std::unique_ptr<Run> run(static_cast<Run*>(user));
  int code = ATOLL_OK;
  std::string message;
  // Every command is checked, not only the last: whether a failure fails the commands queued
  // after it is up to the runtime. The first one that failed names the cause.
  const Step* failed = status < 0 ? &run->steps.back() : nullptr;
  cl_int failed_status = status;
  for (const Step& step : run->steps) {
    cl_int s = CL_COMPLETE;
    if (clGetEventInfo(step.event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof(s), &s, nullptr) ==
            CL_SUCCESS &&
        s < 0) {
      failed = &step;
      failed_status = s;
      break;
    }
  }
  if (failed != nullptr) {
    // OpenCL cannot tell a command that failed from a context that broke (NVIDIA's contexts do
    // not survive a kernel fault), and the ABI has no reset: the device takes no more work.
    std::string reason = StepName(*run->kernel, *failed) + " of kernel '" + run->kernel->name +
                         "' failed on the device with " + Named(failed_status);
    run->device->MarkLost(reason);
    code = ATOLL_UNAVAILABLE;
    message = run->device->Describe() + ": " + reason +
              "; the device takes no more work until atolld restarts";
  }
  run->ReleaseEvents();
  for (const auto& [size, mem] : run->pooled) {
    // A failed launch may leave a buffer in any state; only a good one is worth keeping.
    if (failed == nullptr) {
      run->pool->Give(size, mem);
    } else {
      clReleaseMemObject(mem);
    }
  }
  Backend* backend = run->backend;
  atoll_backend_done_fn done = run->done;
  void* done_user = run->user;
  run.reset();
  done(done_user, code, message.c_str());
  backend->Ended();
}

bool Overlap(const atoll_backend_arg_v1& a, const atoll_backend_arg_v1& b) {
  auto begin_a = reinterpret_cast<uintptr_t>(a.data);
  auto begin_b = reinterpret_cast<uintptr_t>(b.data);
  return a.size_bytes > 0 && b.size_bytes > 0 && begin_a < begin_b + b.size_bytes &&
         begin_b < begin_a + a.size_bytes;
}

// Owns what a launch created until it is handed to the runtime, and on a failure makes sure no
// enqueued command still uses the client's memory when launch returns.
class Enqueuer {
 public:
  Enqueuer(cl_command_queue queue, Run* run) : queue_(queue), run_(run) {}
  ~Enqueuer() {
    if (!committed_ && !run_->steps.empty()) clFinish(queue_);
    for (cl_mem mem : mems_) clReleaseMemObject(mem);
    if (!committed_) {
      run_->ReleaseEvents();
      for (const auto& [size, mem] : run_->pooled) clReleaseMemObject(mem);
    }
  }
  Enqueuer(const Enqueuer&) = delete;
  Enqueuer& operator=(const Enqueuer&) = delete;

  void Own(cl_mem mem) { mems_.push_back(mem); }
  cl_event* Next(const char* what, int32_t arg) {
    run_->steps.push_back({nullptr, what, arg});
    return &run_->steps.back().event;
  }
  void Commit() { committed_ = true; }

 private:
  cl_command_queue queue_;
  Run* run_;
  std::vector<cl_mem> mems_;
  bool committed_ = false;
};

int Launch(void* backend, uint32_t device, uint32_t compute_unit, void* kernel,
           const atoll_backend_arg_v1* args, uint32_t arg_count,
           const atoll_backend_geometry_v1* geometry, atoll_backend_done_fn done, void* user,
           char* error, size_t error_size) {
  auto* self = static_cast<Backend*>(backend);
  const auto* launched = static_cast<const Kernel*>(kernel);
  if (self == nullptr || done == nullptr || geometry == nullptr ||
      (args == nullptr && arg_count > 0)) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "launch: `backend`, `geometry` or `done` is NULL, or `args` is NULL with "
                "arguments");
  }
  if (launched == nullptr || launched->magic != Kernel::kMagic) {
    return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                "launch: `kernel` is not a handle that kernel() returned");
  }
  try {
    if (device >= self->devices.size()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT, NoSuchDevice(*self, device));
    }
    Device& target = *self->devices[device];
    if (launched->device != &target) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "launch: kernel '" + launched->name + "' belongs to a program of " +
                      launched->device->Describe() + ", not of " + target.Describe());
    }
    if (compute_unit >= target.queues.size()) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  "compute unit " + std::to_string(compute_unit) + " does not exist: " +
                      target.Describe() + " has " + std::to_string(target.queues.size()) +
                      " (set \"compute_units\" in the opencl backend's configuration)");
    }
    if (target.lost.load(std::memory_order_acquire)) {
      return Fail(error, error_size, ATOLL_UNAVAILABLE, target.LostMessage());
    }
    // Built only for a message: launch is the hot path.
    auto where = [launched] { return "launch of kernel '" + launched->name + "'"; };
    if (arg_count != launched->arg_count) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  where() + ": it takes " + std::to_string(launched->arg_count) +
                      " arguments, got " + std::to_string(arg_count));
    }
    for (uint32_t i = 0; i < arg_count; ++i) {
      const atoll_backend_arg_v1& arg = args[i];
      if (arg.kind != ATOLL_BACKEND_ARG_ARRAY && arg.kind != ATOLL_BACKEND_ARG_SCALAR) {
        return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                    where() + ": argument " + std::to_string(i) + " has kind " +
                        std::to_string(arg.kind) + ", neither array (1) nor scalar (2)");
      }
      if (arg.data == nullptr && arg.size_bytes > 0) {
        return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                    where() + ": argument " + std::to_string(i) + " has " +
                        std::to_string(arg.size_bytes) + " bytes at NULL");
      }
      if (arg.kind == ATOLL_BACKEND_ARG_ARRAY && (arg.access < ATOLL_BACKEND_ACCESS_READ ||
                                                  arg.access > ATOLL_BACKEND_ACCESS_READ_WRITE)) {
        return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                    where() + ": argument " + std::to_string(i) + " has access " +
                        std::to_string(arg.access) + ", not read (1), write (2) or both (3)");
      }
      if (launched->args.empty()) continue;
      const ArgInfo& info = launched->args[i];
      bool pointer = info.address == CL_KERNEL_ARG_ADDRESS_GLOBAL ||
                     info.address == CL_KERNEL_ARG_ADDRESS_CONSTANT;
      if (pointer != (arg.kind == ATOLL_BACKEND_ARG_ARRAY)) {
        return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                    where() + ": " + launched->Argument(i) + " is '" + info.type_name +
                        "' in the kernel, but the launch passes " +
                        (pointer ? "a scalar" : "an array"));
      }
      uint64_t expected = pointer ? 0 : ScalarSize(ParseArgType(info.type_name));
      if (expected != 0 && expected != arg.size_bytes) {
        return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                    where() + ": " + launched->Argument(i) + " is '" + info.type_name + "' (" +
                        std::to_string(expected) + " bytes) in the kernel, but the launch passes " +
                        std::to_string(arg.size_bytes) + " bytes");
      }
    }

    // Work sizes: dims 0 is a single work-item, as an FPGA task runs.
    if (geometry->dims > 3) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  where() + ": the geometry has " + std::to_string(geometry->dims) +
                      " dimensions; OpenCL runs 0 to 3");
    }
    cl_uint dims = geometry->dims == 0 ? 1 : geometry->dims;
    size_t global[3] = {1, 1, 1};
    size_t local[3] = {1, 1, 1};
    bool local_given = true;
    for (uint32_t d = 0; d < geometry->dims; ++d) {
      if (geometry->global[d] == 0) {
        // Nothing to run; the ABI makes this a success.
        done(user, ATOLL_OK, "");
        return ATOLL_OK;
      }
      local_given = local_given && geometry->local[d] != 0;
    }
    uint64_t group = 1;
    for (uint32_t d = 0; d < geometry->dims; ++d) {
      uint64_t size = geometry->global[d];
      if (local_given) {
        uint64_t l = geometry->local[d];
        group *= l;
        // A backend may round up: NDRange kernels ignore work-items past their data.
        size = (size + l - 1) / l * l;
        local[d] = static_cast<size_t>(l);
      }
      if (size < geometry->global[d] || size > SIZE_MAX) {
        return Fail(error, error_size, ATOLL_OUT_OF_RANGE,
                    where() + ": global size " + std::to_string(geometry->global[d]) +
                        " along dimension " + std::to_string(d) + " is too large");
      }
      global[d] = static_cast<size_t>(size);
    }
    if (geometry->dims > 0 && local_given && launched->work_group_size > 0 &&
        group > launched->work_group_size) {
      return Fail(error, error_size, ATOLL_INVALID_ARGUMENT,
                  where() + ": the work-group size " + std::to_string(group) +
                      " (the manifest's \"launch\" \"local\") is more than the " +
                      std::to_string(launched->work_group_size) + " this kernel allows on " +
                      target.Describe());
    }

    // Two buffers over overlapping host memory are undefined behaviour in OpenCL, so such
    // launches copy instead.
    bool aliased = false;
    for (uint32_t i = 0; i < arg_count && !aliased; ++i) {
      if (args[i].kind != ATOLL_BACKEND_ARG_ARRAY) continue;
      for (uint32_t j = i + 1; j < arg_count && !aliased; ++j) {
        aliased = args[j].kind == ATOLL_BACKEND_ARG_ARRAY && Overlap(args[i], args[j]);
      }
    }

    cl_command_queue queue = target.queues[compute_unit];
    cl_kernel handle = launched->per_unit[compute_unit];
    auto run = std::make_unique<Run>();
    run->backend = self;
    run->device = &target;
    run->kernel = launched;
    run->done = done;
    run->user = user;
    run->pool = target.pools[compute_unit].get();
    // Next() hands out pointers into steps: at most an upload, a map and an unmap per argument.
    run->steps.reserve(3 * static_cast<size_t>(arg_count) + 1);
    Enqueuer enqueuer(queue, run.get());
    auto failed = [&](cl_int status, const std::string& what) {
      if (MeansDeviceLost(status)) target.MarkLost(what + " failed with " + Named(status));
      return Fail(
          error, error_size, StatusOf(status),
          where() + " on " + target.Describe() + ": " + what + " failed with " + Named(status));
    };

    struct Mapped {
      uint32_t arg;
      cl_mem mem;
      bool zero_copy;
    };
    std::vector<Mapped> buffers;
    for (uint32_t i = 0; i < arg_count; ++i) {
      const atoll_backend_arg_v1& arg = args[i];
      cl_int status = CL_SUCCESS;
      if (arg.kind == ATOLL_BACKEND_ARG_SCALAR) {
        // clSetKernelArg copies the value, so the caller's storage may go once launch returns.
        status = clSetKernelArg(handle, i, static_cast<size_t>(arg.size_bytes), arg.data);
        if (status != CL_SUCCESS) {
          return failed(status, "setting " + launched->Argument(i) + " (" +
                                    std::to_string(arg.size_bytes) + " bytes)");
        }
        continue;
      }
      if (arg.size_bytes == 0) {
        // OpenCL has no empty buffer; a kernel told its length is 0 reads nothing.
        status = clSetKernelArg(handle, i, sizeof(cl_mem), nullptr);
        if (status != CL_SUCCESS) return failed(status, "setting empty " + launched->Argument(i));
        continue;
      }
      cl_mem_flags flags = arg.access == ATOLL_BACKEND_ACCESS_READ    ? CL_MEM_READ_ONLY
                           : arg.access == ATOLL_BACKEND_ACCESS_WRITE ? CL_MEM_WRITE_ONLY
                                                                      : CL_MEM_READ_WRITE;
      bool zero_copy = target.zero_copy && !aliased &&
                       reinterpret_cast<uintptr_t>(arg.data) % target.base_align_bytes == 0;
      size_t size = static_cast<size_t>(arg.size_bytes);
      // Device buffers are pooled, so they are created read-write for any later access.
      cl_mem mem = zero_copy ? nullptr : run->pool->Take(size);
      if (mem == nullptr) {
        mem = clCreateBuffer(target.context,
                             zero_copy ? flags | CL_MEM_USE_HOST_PTR : CL_MEM_READ_WRITE, size,
                             zero_copy ? arg.data : nullptr, &status);
        if (mem == nullptr || status != CL_SUCCESS) {
          return failed(status, "a buffer of " + std::to_string(arg.size_bytes) + " bytes for " +
                                    launched->Argument(i));
        }
      }
      if (zero_copy) {
        enqueuer.Own(mem);
      } else {
        run->pooled.emplace_back(size, mem);
      }
      status = clSetKernelArg(handle, i, sizeof(cl_mem), &mem);
      if (status != CL_SUCCESS) return failed(status, "setting " + launched->Argument(i));
      buffers.push_back({i, mem, zero_copy});
    }
    for (const Mapped& buffer : buffers) {
      const atoll_backend_arg_v1& arg = args[buffer.arg];
      if (buffer.zero_copy) continue;
      size_t size = static_cast<size_t>(arg.size_bytes);
      cl_int status = CL_SUCCESS;
      if ((arg.access & ATOLL_BACKEND_ACCESS_READ) != 0) {
        status = clEnqueueWriteBuffer(queue, buffer.mem, CL_FALSE, 0, size, arg.data, 0, nullptr,
                                      enqueuer.Next("the upload of", buffer.arg));
      } else {
        // A new device buffer holds whatever the device last kept there, maybe another
        // tenant's data, and all of it is downloaded: elements the kernel leaves alone read 0.
        const cl_uchar zero = 0;
        status = clEnqueueFillBuffer(queue, buffer.mem, &zero, sizeof(zero), 0, size, 0, nullptr,
                                     enqueuer.Next("the clearing of", buffer.arg));
      }
      if (status != CL_SUCCESS) {
        return failed(status, "the upload of " + launched->Argument(buffer.arg));
      }
    }
    cl_int status = clEnqueueNDRangeKernel(queue, handle, dims, nullptr, global,
                                           local_given || geometry->dims == 0 ? local : nullptr, 0,
                                           nullptr, enqueuer.Next("the run", -1));
    if (status != CL_SUCCESS) return failed(status, "enqueueing the kernel");
    for (const Mapped& buffer : buffers) {
      const atoll_backend_arg_v1& arg = args[buffer.arg];
      if ((arg.access & ATOLL_BACKEND_ACCESS_WRITE) == 0) continue;
      size_t size = static_cast<size_t>(arg.size_bytes);
      if (buffer.zero_copy) {
        // Mapping a CL_MEM_USE_HOST_PTR buffer makes the host memory current: the results are
        // then in the client's buffer. Unmapping does not change it.
        void* mapped =
            clEnqueueMapBuffer(queue, buffer.mem, CL_FALSE, CL_MAP_READ, 0, size, 0, nullptr,
                               enqueuer.Next("the download of", buffer.arg), &status);
        if (status != CL_SUCCESS) {
          return failed(status, "mapping " + launched->Argument(buffer.arg));
        }
        status = clEnqueueUnmapMemObject(queue, buffer.mem, mapped, 0, nullptr,
                                         enqueuer.Next("the unmapping of", buffer.arg));
        if (status != CL_SUCCESS) {
          return failed(status, "unmapping " + launched->Argument(buffer.arg));
        }
      } else {
        status = clEnqueueReadBuffer(queue, buffer.mem, CL_FALSE, 0, size, arg.data, 0, nullptr,
                                     enqueuer.Next("the download of", buffer.arg));
        if (status != CL_SUCCESS) {
          return failed(status, "the download of " + launched->Argument(buffer.arg));
        }
      }
    }
    status = clFlush(queue);
    if (status != CL_SUCCESS) return failed(status, "clFlush");
    cl_event last = run->steps.back().event;
    self->Started();
    // The callback may run before clSetEventCallback returns, and owns `run` from then on.
    Run* handed = run.release();
    status = clSetEventCallback(last, CL_COMPLETE, OnComplete, handed);
    if (status != CL_SUCCESS) {
      run.reset(handed);
      self->Ended();
      return failed(status, "clSetEventCallback");
    }
    enqueuer.Commit();
    return ATOLL_OK;
  } catch (const std::bad_alloc&) {
    return Fail(error, error_size, ATOLL_RESOURCE_EXHAUSTED,
                "opencl backend: out of memory queueing a launch");
  }
}

}  // namespace
}  // namespace atl::opencl

extern "C" ATOLL_BACKEND_EXPORT const atoll_backend_v1* atoll_backend_get_v1(void) {
  static const atoll_backend_v1 table = {
      .abi_version = ATOLL_BACKEND_ABI_VERSION,
      .struct_size = sizeof(atoll_backend_v1),
      .name = "opencl",
      .open = atl::opencl::Open,
      .close = atl::opencl::Close,
      .device_count = atl::opencl::DeviceCount,
      .device_info = atl::opencl::DeviceInfo,
      .program = atl::opencl::ProgramBinary,
      .release_program = atl::opencl::ReleaseProgram,
      .kernel = atl::opencl::FindKernel,
      .launch = atl::opencl::Launch,
      // Buffers are wrapped per launch (CL_MEM_USE_HOST_PTR or a copy), so nothing is pinned
      // ahead of time.
      .register_memory = nullptr,
      .unregister_memory = nullptr,
      // Not yet: a process per device would hold its own OpenCL context per device.
      .open_device = nullptr,
      .isolate_by_default = 0,
      .accepts_single_pass = 0,
  };
  return &table;
}
