// A backend whose devices each run in a process of their own (atoll-backend-host), so that a fault
// that poisons a process (a CUDA kernel fault poisons every context of its process) takes down
// one device's process, which is restarted, instead of the daemon's devices. The daemon passes
// each client buffer's memfd to every device process, which maps it itself: kernels read and
// write the client's memory directly, as in-process backends do. docs/architecture.md, "A process
// per device", describes what each failure does to the requests in flight.
// Thread-safe, as Plugin requires.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/plugin.h"
#include "common/unique_fd.h"

namespace atl::backend {

class DeviceProcess;

class IsolatedPlugin final : public Plugin {
 public:
  // Starts a process for device 0 of `library`, which tells how many devices the backend has,
  // then one for each other device, and waits until each has opened its device. With
  // `launch_timeout_ms` > 0, a launch running longer than that ends its device's process: the
  // launch fails with DEADLINE_EXCEEDED, and the process is restarted.
  static StatusOr<std::unique_ptr<IsolatedPlugin>> Start(const Library& library,
                                                         const std::string& config_json,
                                                         const std::filesystem::path& host_program,
                                                         uint32_t launch_timeout_ms);
  // Lets each process finish its launched work (calling `done`), then ends it.
  ~IsolatedPlugin() override;
  IsolatedPlugin(const IsolatedPlugin&) = delete;
  IsolatedPlugin& operator=(const IsolatedPlugin&) = delete;

  const std::string& name() const override { return name_; }
  const std::filesystem::path& path() const override { return path_; }
  uint32_t device_count() const override { return static_cast<uint32_t>(devices_.size()); }
  StatusOr<atoll_backend_device_info_v1> DeviceInfo(uint32_t device) const override;
  StatusOr<void*> Program(uint32_t device, const std::string& binary_path,
                          const std::string& build_options) const override;
  void ReleaseProgram(void* program) const override;
  StatusOr<void*> Kernel(void* program, const std::string& name,
                         const std::vector<const char*>& arg_types) const override;
  Status Launch(uint32_t device, uint32_t compute_unit, void* kernel,
                const atoll_backend_arg_v1* args, uint32_t arg_count,
                const atoll_backend_geometry_v1& geometry, atoll_backend_done_fn done,
                void* user) const override;
  // Always: the device processes reach client memory only through registered buffers.
  bool wants_memory_registration() const override { return true; }
  // The processes load the same library, so they take what it takes.
  bool accepts_single_pass() const override { return accepts_single_pass_; }
  Status RegisterMemory(void* data, uint64_t size_bytes, int fd) const override;
  void UnregisterMemory(void* data) const override;

  std::optional<DeviceProcessInfo> device_process(uint32_t device) const override;

 private:
  friend class DeviceProcess;
  // A client buffer as the device processes know it.
  struct Buffer {
    uint64_t id = 0;
    uint64_t size_bytes = 0;
    UniqueFd fd;  // kept to hand to a restarted process
  };

  IsolatedPlugin() = default;
  void Watch();  // the launch_timeout_ms watchdog thread

  std::filesystem::path path_;
  std::string name_;
  std::vector<std::unique_ptr<DeviceProcess>> devices_;
  uint32_t launch_timeout_ms_ = 0;
  bool accepts_single_pass_ = false;

  // Client buffers by their address in the daemon, which launch arguments point into.
  // Lock order: buffers_mu_ before a DeviceProcess's mutex.
  mutable std::mutex buffers_mu_;
  mutable std::map<uintptr_t, Buffer> buffers_;
  mutable uint64_t next_buffer_ = 1;

  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace atl::backend
