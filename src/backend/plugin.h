// The daemon's C++ view of a backend plugin: loading (dlopen, ABI check) and thin wrappers that
// turn the ABI's error codes and messages into Status.
// Thread safety: Plugin methods are as thread-safe as the ABI requires backends to be.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "atoll/backend.h"
#include "common/status.h"

namespace atl::backend {

class Plugin {
 public:
  // Loads the plugin at `path` and opens it with `config_json`. Errors name the path and the
  // reason (dlopen's message, a missing entry symbol, an ABI version mismatch, open's error).
  static StatusOr<std::unique_ptr<Plugin>> Load(const std::filesystem::path& path,
                                                const std::string& config_json);
  // Closes the backend (waits for its launched work) and unloads it.
  ~Plugin();
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;

  const std::string& name() const { return name_; }
  const std::filesystem::path& path() const { return path_; }
  uint32_t device_count() const;
  StatusOr<atoll_backend_device_info_v1> DeviceInfo(uint32_t device) const;
  StatusOr<void*> Program(uint32_t device, const std::string& binary_path,
                          const std::string& build_options) const;
  void ReleaseProgram(void* program) const;
  StatusOr<void*> Kernel(void* program, const std::string& name,
                         const std::vector<const char*>& arg_types) const;
  Status Launch(uint32_t device, uint32_t compute_unit, void* kernel,
                const atoll_backend_arg_v1* args, uint32_t arg_count,
                const atoll_backend_geometry_v1& geometry, atoll_backend_done_fn done,
                void* user) const;
  bool wants_memory_registration() const { return table_->register_memory != nullptr; }
  Status RegisterMemory(void* data, uint64_t size_bytes) const;
  void UnregisterMemory(void* data) const;

 private:
  Plugin() = default;
  std::filesystem::path path_;
  std::string name_;
  void* library_ = nullptr;
  const atoll_backend_v1* table_ = nullptr;
  void* backend_ = nullptr;
};

// Loads every plugin file (libatoll_backend_NAME.so) in `dirs`, in name order. `config_for(NAME)`
// gives each plugin its JSON configuration, or "" to skip it (disabled). Plugins that fail to load
// or open, and duplicates of a backend already loaded, are reported in `problems` and skipped: the
// daemon runs with whatever loads.
std::vector<std::unique_ptr<Plugin>> LoadPlugins(
    const std::vector<std::filesystem::path>& dirs,
    const std::function<std::string(const std::string& file_stem)>& config_for,
    std::vector<std::string>* problems);

}  // namespace atl::backend
