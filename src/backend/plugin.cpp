#include "backend/plugin.h"

#include <dlfcn.h>

#include <algorithm>
#include <functional>

namespace atl::backend {

namespace {

constexpr size_t kErrorBytes = 1024;

Status FromAbi(int code, const char* message, const std::string& context) {
  return Status(CodeFromInt(code), context + ": " + (message[0] ? message : "unknown error"));
}

}  // namespace

StatusOr<std::unique_ptr<Plugin>> Plugin::Load(const std::filesystem::path& path,
                                               const std::string& config_json) {
  std::unique_ptr<Plugin> plugin(new Plugin());
  plugin->path_ = path;
  plugin->library_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (plugin->library_ == nullptr) {
    const char* why = ::dlerror();
    return FailedPreconditionError("cannot load backend plugin '" + path.string() +
                                   "': " + (why ? why : "dlopen failed"));
  }
  auto get =
      reinterpret_cast<atoll_backend_get_v1_fn>(::dlsym(plugin->library_, ATOLL_BACKEND_ENTRY_V1));
  if (get == nullptr) {
    return FailedPreconditionError("'" + path.string() + "' is not an Atoll backend: it does " +
                                   "not export " ATOLL_BACKEND_ENTRY_V1);
  }
  const atoll_backend_v1* table = get();
  if (table == nullptr || table->abi_version != ATOLL_BACKEND_ABI_VERSION ||
      table->struct_size < sizeof(atoll_backend_v1)) {
    return FailedPreconditionError(
        "backend plugin '" + path.string() + "' was built for backend ABI version " +
        std::to_string(table ? table->abi_version : 0) + " (table of " +
        std::to_string(table ? table->struct_size : 0) + " bytes); this daemon needs version " +
        std::to_string(ATOLL_BACKEND_ABI_VERSION) + ": rebuild the plugin");
  }
  if (!table->open || !table->close || !table->device_count || !table->device_info ||
      !table->program || !table->release_program || !table->kernel || !table->launch ||
      table->name == nullptr) {
    return FailedPreconditionError("backend plugin '" + path.string() +
                                   "' leaves required functions of its table empty");
  }
  plugin->table_ = table;
  plugin->name_ = table->name;
  char error[kErrorBytes] = "";
  int rc = table->open(config_json.c_str(), &plugin->backend_, error, sizeof(error));
  if (rc != 0) {
    plugin->table_ = nullptr;  // nothing to close
    return FromAbi(rc, error, "backend '" + plugin->name_ + "' failed to open");
  }
  return plugin;
}

Plugin::~Plugin() {
  if (table_ != nullptr && backend_ != nullptr) table_->close(backend_);
  // Plugins stay mapped: a backend's threads or atexit handlers may still reference its code.
}

uint32_t Plugin::device_count() const { return table_->device_count(backend_); }

StatusOr<atoll_backend_device_info_v1> Plugin::DeviceInfo(uint32_t device) const {
  atoll_backend_device_info_v1 info{};
  info.struct_size = sizeof(info);
  char error[kErrorBytes] = "";
  int rc = table_->device_info(backend_, device, &info, error, sizeof(error));
  if (rc != 0) return FromAbi(rc, error, name_ + " device " + std::to_string(device));
  return info;
}

StatusOr<void*> Plugin::Program(uint32_t device, const std::string& binary_path,
                                const std::string& build_options) const {
  void* program = nullptr;
  char error[kErrorBytes] = "";
  int rc = table_->program(backend_, device, binary_path.c_str(), build_options.c_str(), &program,
                           error, sizeof(error));
  if (rc != 0) {
    return FromAbi(rc, error,
                   "programming " + name_ + " device " + std::to_string(device) + " failed");
  }
  return program;
}

void Plugin::ReleaseProgram(void* program) const { table_->release_program(backend_, program); }

StatusOr<void*> Plugin::Kernel(void* program, const std::string& name,
                               const std::vector<const char*>& arg_types) const {
  void* kernel = nullptr;
  char error[kErrorBytes] = "";
  int rc = table_->kernel(backend_, program, name.c_str(), arg_types.data(),
                          static_cast<uint32_t>(arg_types.size()), &kernel, error, sizeof(error));
  if (rc != 0) return FromAbi(rc, error, "kernel '" + name + "'");
  return kernel;
}

Status Plugin::Launch(uint32_t device, uint32_t compute_unit, void* kernel,
                      const atoll_backend_arg_v1* args, uint32_t arg_count,
                      const atoll_backend_geometry_v1& geometry, atoll_backend_done_fn done,
                      void* user) const {
  char error[kErrorBytes] = "";
  int rc = table_->launch(backend_, device, compute_unit, kernel, args, arg_count, &geometry, done,
                          user, error, sizeof(error));
  if (rc != 0)
    return FromAbi(rc, error, "launch on " + name_ + " device " + std::to_string(device));
  return OkStatus();
}

Status Plugin::RegisterMemory(void* data, uint64_t size_bytes) const {
  if (table_->register_memory == nullptr) return OkStatus();
  char error[kErrorBytes] = "";
  int rc = table_->register_memory(backend_, data, size_bytes, error, sizeof(error));
  if (rc != 0) return FromAbi(rc, error, "registering a buffer with " + name_);
  return OkStatus();
}

void Plugin::UnregisterMemory(void* data) const {
  if (table_->unregister_memory != nullptr) table_->unregister_memory(backend_, data);
}

std::vector<std::unique_ptr<Plugin>> LoadPlugins(
    const std::vector<std::filesystem::path>& dirs,
    const std::function<std::string(const std::string&)>& config_for,
    std::vector<std::string>* problems) {
  std::vector<std::filesystem::path> files;
  for (const auto& dir : dirs) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
      problems->push_back("backend folder '" + dir.string() + "' does not exist");
      continue;
    }
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const auto& p = entry.path();
      if (entry.is_regular_file() && p.extension() == ".so" &&
          p.filename().string().rfind("libatoll_backend_", 0) == 0) {
        files.push_back(p);
      }
    }
  }
  std::sort(files.begin(), files.end());
  std::vector<std::unique_ptr<Plugin>> plugins;
  for (const auto& file : files) {
    // libatoll_backend_cpu.so -> "cpu": the configuration key, known before the plugin loads.
    std::string stem = file.stem().string().substr(std::string("libatoll_backend_").size());
    std::string config = config_for(stem);
    if (config.empty()) continue;  // disabled in the configuration
    auto plugin = Plugin::Load(file, config);
    if (!plugin.ok()) {
      problems->push_back(plugin.status().message());
      continue;
    }
    bool duplicate = std::any_of(plugins.begin(), plugins.end(),
                                 [&](const auto& p) { return p->name() == (*plugin)->name(); });
    if (duplicate) {
      problems->push_back("backend '" + (*plugin)->name() + "' from '" + file.string() +
                          "' is already loaded from another folder; skipped");
      continue;
    }
    plugins.push_back(std::move(plugin).value());
  }
  return plugins;
}

}  // namespace atl::backend
