#include "backend/plugin.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <functional>

#include "backend/isolated_plugin.h"

namespace atl::backend {

namespace {

constexpr size_t kErrorBytes = 1024;

Status FromAbi(int code, const char* message, const std::string& context) {
  return Status(CodeFromInt(code), context + ": " + (message[0] ? message : "unknown error"));
}

// Whether the table, as its plugin was built, reaches the field that ends at `end`.
bool Covers(const atoll_backend_v1* table, size_t end) { return table->struct_size >= end; }

}  // namespace

decltype(atoll_backend_v1::open_device) Library::open_device() const {
  return Covers(table, offsetof(atoll_backend_v1, open_device) + sizeof(table->open_device))
             ? table->open_device
             : nullptr;
}

bool Library::isolate_by_default() const {
  return Covers(table, offsetof(atoll_backend_v1, isolate_by_default) +
                           sizeof(table->isolate_by_default)) &&
         table->isolate_by_default != 0;
}

bool Library::accepts_single_pass() const {
  return Covers(table, offsetof(atoll_backend_v1, accepts_single_pass) +
                           sizeof(table->accepts_single_pass)) &&
         table->accepts_single_pass != 0;
}

StatusOr<Library> LoadLibrary(const std::filesystem::path& path) {
  Library library;
  library.path = path;
  library.handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library.handle == nullptr) {
    const char* why = ::dlerror();
    return FailedPreconditionError("cannot load backend plugin '" + path.string() +
                                   "': " + (why ? why : "dlopen failed"));
  }
  auto get =
      reinterpret_cast<atoll_backend_get_v1_fn>(::dlsym(library.handle, ATOLL_BACKEND_ENTRY_V1));
  if (get == nullptr) {
    return FailedPreconditionError("'" + path.string() + "' is not an Atoll backend: it does " +
                                   "not export " ATOLL_BACKEND_ENTRY_V1);
  }
  const atoll_backend_v1* table = get();
  if (table == nullptr || table->abi_version != ATOLL_BACKEND_ABI_VERSION ||
      table->struct_size < ATOLL_BACKEND_V1_MIN_SIZE) {
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
  library.table = table;
  return library;
}

StatusOr<std::unique_ptr<LoadedPlugin>> LoadedPlugin::Open(const Library& library,
                                                           const std::string& config_json,
                                                           std::optional<uint32_t> device,
                                                           uint32_t* device_total) {
  std::unique_ptr<LoadedPlugin> plugin(new LoadedPlugin());
  plugin->path_ = library.path;
  plugin->name_ = library.table->name;
  char error[kErrorBytes] = "";
  int rc = 0;
  if (device.has_value()) {
    auto open_device = library.open_device();
    if (open_device == nullptr) {
      return FailedPreconditionError("backend '" + plugin->name_ +
                                     "' cannot open one device alone (its plugin has no "
                                     "open_device): set \"isolate\": \"none\" for it");
    }
    uint32_t total = 0;
    rc = open_device(config_json.c_str(), *device, &total, &plugin->backend_, error, sizeof(error));
    if (device_total != nullptr) *device_total = total;
  } else {
    rc = library.table->open(config_json.c_str(), &plugin->backend_, error, sizeof(error));
  }
  if (rc != 0) return FromAbi(rc, error, "backend '" + plugin->name_ + "' failed to open");
  plugin->table_ = library.table;
  plugin->accepts_single_pass_ = library.accepts_single_pass();
  return plugin;
}

LoadedPlugin::~LoadedPlugin() {
  if (table_ != nullptr && backend_ != nullptr) table_->close(backend_);
}

uint32_t LoadedPlugin::device_count() const { return table_->device_count(backend_); }

StatusOr<atoll_backend_device_info_v1> LoadedPlugin::DeviceInfo(uint32_t device) const {
  atoll_backend_device_info_v1 info{};
  info.struct_size = sizeof(info);
  char error[kErrorBytes] = "";
  int rc = table_->device_info(backend_, device, &info, error, sizeof(error));
  if (rc != 0) return FromAbi(rc, error, name_ + " device " + std::to_string(device));
  return info;
}

StatusOr<void*> LoadedPlugin::Program(uint32_t device, const std::string& binary_path,
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

void LoadedPlugin::ReleaseProgram(void* program) const {
  table_->release_program(backend_, program);
}

StatusOr<void*> LoadedPlugin::Kernel(void* program, const std::string& name,
                                     const std::vector<const char*>& arg_types) const {
  void* kernel = nullptr;
  char error[kErrorBytes] = "";
  int rc = table_->kernel(backend_, program, name.c_str(), arg_types.data(),
                          static_cast<uint32_t>(arg_types.size()), &kernel, error, sizeof(error));
  if (rc != 0) return FromAbi(rc, error, "kernel '" + name + "'");
  return kernel;
}

Status LoadedPlugin::Launch(uint32_t device, uint32_t compute_unit, void* kernel,
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

Status LoadedPlugin::RegisterMemory(void* data, uint64_t size_bytes, int fd) const {
  (void)fd;  // the mapping is in this process
  if (table_->register_memory == nullptr) return OkStatus();
  char error[kErrorBytes] = "";
  int rc = table_->register_memory(backend_, data, size_bytes, error, sizeof(error));
  if (rc != 0) return FromAbi(rc, error, "registering a buffer with " + name_);
  return OkStatus();
}

void LoadedPlugin::UnregisterMemory(void* data) const {
  if (table_->unregister_memory != nullptr) table_->unregister_memory(backend_, data);
}

std::vector<std::unique_ptr<Plugin>> LoadPlugins(
    const std::vector<std::filesystem::path>& dirs,
    const std::function<PluginSettings(const std::string&)>& settings_for,
    const std::filesystem::path& host_program, std::vector<std::string>* problems) {
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
    PluginSettings settings = settings_for(stem);
    if (!settings.enabled) continue;
    auto library = LoadLibrary(file);
    if (!library.ok()) {
      problems->push_back(library.status().message());
      continue;
    }
    std::string name = library->table->name;
    bool duplicate = std::any_of(plugins.begin(), plugins.end(),
                                 [&](const auto& p) { return p->name() == name; });
    if (duplicate) {
      problems->push_back("backend '" + name + "' from '" + file.string() +
                          "' is already loaded from another folder; skipped");
      continue;
    }
    bool isolate = settings.isolate.value_or(library->isolate_by_default());
    if (!isolate && settings.launch_timeout_ms != 0) {
      problems->push_back("backend '" + name +
                          "': launch_timeout_ms needs a process per device (\"isolate\": "
                          "\"device\"); it is ignored");
    }
    Status opened = OkStatus();
    if (isolate) {
      auto plugin = IsolatedPlugin::Start(*library, settings.config_json, host_program,
                                          settings.launch_timeout_ms);
      if (plugin.ok()) plugins.push_back(std::move(plugin).value());
      opened = plugin.status();
    } else {
      auto plugin = LoadedPlugin::Open(*library, settings.config_json);
      if (plugin.ok()) plugins.push_back(std::move(plugin).value());
      opened = plugin.status();
    }
    if (!opened.ok()) problems->push_back(opened.message());
  }
  return plugins;
}

}  // namespace atl::backend
