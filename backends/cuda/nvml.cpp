#include "nvml.h"

#include <dlfcn.h>

#include <string>

namespace atl::cuda {
namespace {

constexpr int kNvmlSuccess = 0;
constexpr int kNvmlTemperatureGpu = 0;

template <typename T>
T Symbol(void* handle, const char* name) {
  return reinterpret_cast<T>(dlsym(handle, name));
}

}  // namespace

Nvml::Nvml(const std::string& path) {
  if (path.empty()) {
    problem_ = "NVML is disabled (\"nvml_library\" is empty)";
    return;
  }
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* reason = dlerror();
    problem_ = "'" + path + "' cannot be loaded: " + (reason != nullptr ? reason : "unknown");
    return;
  }
  auto init = Symbol<InitFn>(handle, "nvmlInit_v2");
  shutdown_ = Symbol<ShutdownFn>(handle, "nvmlShutdown");
  handle_by_pci_ = Symbol<HandleByTextFn>(handle, "nvmlDeviceGetHandleByPciBusId_v2");
  handle_by_uuid_ = Symbol<HandleByTextFn>(handle, "nvmlDeviceGetHandleByUUID");
  temperature_ = Symbol<TemperatureFn>(handle, "nvmlDeviceGetTemperature");
  power_ = Symbol<PowerFn>(handle, "nvmlDeviceGetPowerUsage");
  serial_ = Symbol<TextFn>(handle, "nvmlDeviceGetSerial");
  uuid_ = Symbol<TextFn>(handle, "nvmlDeviceGetUUID");
  if (init == nullptr || shutdown_ == nullptr || handle_by_pci_ == nullptr) {
    problem_ = "'" + path + "' lacks nvmlInit_v2, nvmlShutdown or nvmlDeviceGetHandleByPciBusId_v2";
    dlclose(handle);
    return;
  }
  int result = init();
  if (result != kNvmlSuccess) {
    problem_ = "nvmlInit_v2 failed with NVML error " + std::to_string(result);
    dlclose(handle);
    return;
  }
  handle_ = handle;
}

Nvml::~Nvml() {
  if (handle_ == nullptr) return;
  shutdown_();
  dlclose(handle_);
}

Nvml::Readings Nvml::Read(const std::string& pci_id, const std::string& uuid) const {
  Readings readings;
  if (handle_ == nullptr) return readings;
  Device device = nullptr;
  if ((pci_id.empty() || handle_by_pci_(pci_id.c_str(), &device) != kNvmlSuccess) &&
      (uuid.empty() || handle_by_uuid_ == nullptr ||
       handle_by_uuid_(uuid.c_str(), &device) != kNvmlSuccess)) {
    return readings;
  }
  unsigned int value = 0;
  if (temperature_ != nullptr &&
      temperature_(device, kNvmlTemperatureGpu, &value) == kNvmlSuccess) {
    readings.temperature_c = value;
  }
  if (power_ != nullptr && power_(device, &value) == kNvmlSuccess) readings.power_mw = value;
  char text[96] = "";
  if (serial_ != nullptr && serial_(device, text, sizeof(text)) == kNvmlSuccess && text[0] != 0) {
    readings.serial = text;
  } else if (uuid_ != nullptr && uuid_(device, text, sizeof(text)) == kNvmlSuccess) {
    readings.serial = text;
  }
  return readings;
}

}  // namespace atl::cuda
