// The daemon's C++ view of a backend: a Plugin serves the devices of one backend plugin, either
// loaded into the daemon (LoadedPlugin: dlopen, ABI check, thin wrappers that turn the ABI's error
// codes and messages into Status) or run as a process per device (IsolatedPlugin,
// isolated_plugin.h). The engine sees no difference.
// Thread safety: Plugin methods are as thread-safe as the ABI requires backends to be.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "atoll/backend.h"
#include "common/status.h"

namespace atl::backend {

class Plugin {
 public:
  virtual ~Plugin() = default;
  virtual const std::string& name() const = 0;
  virtual const std::filesystem::path& path() const = 0;
  virtual uint32_t device_count() const = 0;
  virtual StatusOr<atoll_backend_device_info_v1> DeviceInfo(uint32_t device) const = 0;
  virtual StatusOr<void*> Program(uint32_t device, const std::string& binary_path,
                                  const std::string& build_options) const = 0;
  virtual void ReleaseProgram(void* program) const = 0;
  virtual StatusOr<void*> Kernel(void* program, const std::string& name,
                                 const std::vector<const char*>& arg_types) const = 0;
  virtual Status Launch(uint32_t device, uint32_t compute_unit, void* kernel,
                        const atoll_backend_arg_v1* args, uint32_t arg_count,
                        const atoll_backend_geometry_v1& geometry, atoll_backend_done_fn done,
                        void* user) const = 0;
  virtual bool wants_memory_registration() const = 0;
  // Whether Launch accepts ATOLL_BACKEND_ACCESS_SINGLE_PASS (the table's accepts_single_pass).
  virtual bool accepts_single_pass() const = 0;
  // Told once per client buffer the daemon maps. `fd` is the buffer's memfd, valid only during
  // the call (a plugin that needs it later duplicates it).
  virtual Status RegisterMemory(void* data, uint64_t size_bytes, int fd) const = 0;
  virtual void UnregisterMemory(void* data) const = 0;

  // The process a device runs in, for backends that run a process per device.
  struct DeviceProcessInfo {
    int64_t pid = -1;     // -1 while none runs
    uint64_t starts = 0;  // 1 until it is restarted
  };
  virtual std::optional<DeviceProcessInfo> device_process(uint32_t device) const {
    (void)device;
    return std::nullopt;
  }
};

// A plugin library, loaded and checked but not opened.
struct Library {
  std::filesystem::path path;
  void* handle = nullptr;  // from dlopen; never closed (a backend's threads may outlive close)
  const atoll_backend_v1* table = nullptr;

  // The table's optional fields, NULL or 0 when the plugin's table predates them.
  decltype(atoll_backend_v1::open_device) open_device() const;
  bool isolate_by_default() const;
  bool accepts_single_pass() const;
};

// Loads and checks the plugin at `path`. Errors name the path and the reason (dlopen's message,
// a missing entry symbol, an ABI version mismatch, required functions left empty).
StatusOr<Library> LoadLibrary(const std::filesystem::path& path);

// A backend plugin loaded into this process.
class LoadedPlugin final : public Plugin {
 public:
  // Opens `library` with `config_json`: with `open` when `device` is empty, else with
  // `open_device` for that one device, writing how many devices the backend has into
  // `*device_total` (NOT_FOUND when `*device` is past them).
  static StatusOr<std::unique_ptr<LoadedPlugin>> Open(const Library& library,
                                                      const std::string& config_json,
                                                      std::optional<uint32_t> device = {},
                                                      uint32_t* device_total = nullptr);
  // Closes the backend (waits for its launched work).
  ~LoadedPlugin() override;
  LoadedPlugin(const LoadedPlugin&) = delete;
  LoadedPlugin& operator=(const LoadedPlugin&) = delete;

  const std::string& name() const override { return name_; }
  const std::filesystem::path& path() const override { return path_; }
  uint32_t device_count() const override;
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
  bool wants_memory_registration() const override { return table_->register_memory != nullptr; }
  bool accepts_single_pass() const override { return accepts_single_pass_; }
  Status RegisterMemory(void* data, uint64_t size_bytes, int fd) const override;
  void UnregisterMemory(void* data) const override;

 private:
  LoadedPlugin() = default;
  std::filesystem::path path_;
  std::string name_;
  const atoll_backend_v1* table_ = nullptr;
  bool accepts_single_pass_ = false;
  void* backend_ = nullptr;
};

// How the configuration asks for one plugin, by its file's backend name.
struct PluginSettings {
  bool enabled = true;
  std::string config_json = "{}";  // what the plugin's open receives
  // A process per device: unset follows the plugin's isolate_by_default.
  std::optional<bool> isolate;
  uint32_t launch_timeout_ms = 0;  // isolated only: a launch running longer ends its process
};

// Loads every plugin file (libatoll_backend_NAME.so) in `dirs`, in name order, each as
// `settings_for(NAME)` says; isolated ones run their devices in `host_program` processes.
// Plugins that fail to load or open, and duplicates of a backend already loaded, are reported in
// `problems` and skipped: the daemon runs with whatever loads.
std::vector<std::unique_ptr<Plugin>> LoadPlugins(
    const std::vector<std::filesystem::path>& dirs,
    const std::function<PluginSettings(const std::string& file_stem)>& settings_for,
    const std::filesystem::path& host_program, std::vector<std::string>* problems);

}  // namespace atl::backend
