// Telemetry of NVIDIA GPUs through NVML, loaded at run time with dlopen("libnvidia-ml.so.1")
// and declared here (no NVML header or library is needed to build). Without NVML every figure is
// unknown (-1 or "").
//
// Thread safety: NVML is thread-safe; a loaded Nvml is immutable.
#pragma once

#include <cstdint>
#include <string>

namespace atl::cuda {

class Nvml {
 public:
  // Loads `path` and calls nvmlInit_v2; an empty path or a failure leaves NVML unavailable, with
  // the reason in problem().
  explicit Nvml(const std::string& path);
  ~Nvml();
  Nvml(const Nvml&) = delete;
  Nvml& operator=(const Nvml&) = delete;

  bool available() const { return handle_ != nullptr; }
  const std::string& problem() const { return problem_; }

  struct Readings {
    int64_t temperature_c = -1;
    int64_t power_mw = -1;
    std::string serial;  // the board serial, or the GPU's UUID when the board has none
  };
  // Reads the GPU at `pci_id` ("0000:3b:00.0"), or failing that the one with `uuid`
  // ("GPU-8f0c..."). Does not block on GPU work.
  Readings Read(const std::string& pci_id, const std::string& uuid) const;

 private:
  using Device = struct NvmlDevice*;
  using InitFn = int (*)();
  using ShutdownFn = int (*)();
  using HandleByTextFn = int (*)(const char*, Device*);
  using TemperatureFn = int (*)(Device, int, unsigned int*);
  using PowerFn = int (*)(Device, unsigned int*);
  using TextFn = int (*)(Device, char*, unsigned int);

  void* handle_ = nullptr;
  std::string problem_;
  ShutdownFn shutdown_ = nullptr;
  HandleByTextFn handle_by_pci_ = nullptr;
  HandleByTextFn handle_by_uuid_ = nullptr;
  TemperatureFn temperature_ = nullptr;
  PowerFn power_ = nullptr;
  TextFn serial_ = nullptr;
  TextFn uuid_ = nullptr;
};

}  // namespace atl::cuda
