// atolld: the Atoll daemon. Owns the node's accelerators and serves requests on a Unix socket.
#include <unistd.h>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "backend/plugin.h"
#include "daemon/config.h"
#include "daemon/engine.h"
#include "daemon/server.h"

namespace {

namespace fs = std::filesystem;
using atl::daemon::Config;

fs::path ExecutableDir() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path(".") : self.parent_path();
}

// Where plugins are looked for when neither the configuration nor ATOLL_BACKEND_PATH says: beside
// the executable (build and relocated install trees), then the configured install folder.
std::vector<fs::path> DefaultBackendDirs() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("ATOLL_BACKEND_PATH"); env != nullptr && env[0] != '\0') {
    std::string list = env;
    size_t start = 0;
    while (start <= list.size()) {
      size_t end = list.find(':', start);
      if (end == std::string::npos) end = list.size();
      if (end > start) dirs.emplace_back(list.substr(start, end - start));
      start = end + 1;
    }
    return dirs;
  }
  fs::path local = ExecutableDir() / ".." / "lib" / "atoll" / "backends";
  std::error_code ec;
  if (fs::is_directory(local, ec)) dirs.push_back(fs::weakly_canonical(local, ec));
  fs::path installed = ATOLL_BACKEND_DIR;
  if (dirs.empty() || !fs::equivalent(dirs.front(), installed, ec)) dirs.push_back(installed);
  return dirs;
}

// atoll-backend-host, which runs a device in a process of its own: $ATOLL_BACKEND_HOST, else
// beside atolld (the build tree), else where it is installed.
fs::path HostProgram() {
  if (const char* env = std::getenv("ATOLL_BACKEND_HOST"); env != nullptr && env[0] != '\0') {
    return env;
  }
  std::error_code ec;
  fs::path beside = ExecutableDir() / "atoll-backend-host";
  if (fs::exists(beside, ec)) return beside;
  fs::path relocated = ExecutableDir() / ".." / "libexec" / "atoll" / "atoll-backend-host";
  if (fs::exists(relocated, ec)) return fs::weakly_canonical(relocated, ec);
  return ATOLL_HOST_PROGRAM;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "atolld: the Atoll daemon. It owns this node's accelerators, loads binaries from the "
      "repository on demand and runs requests from local clients on a Unix socket.\n"
      "Stop it with SIGTERM or Ctrl-C: queued requests are failed, running ones finish.",
      "atolld"};
  std::string config_path;
  std::string socket_path;
  std::string repository;
  std::vector<std::string> backend_dirs;
  std::vector<std::string> backend_settings;
  std::string log_level;
  bool print_config = false;
  bool version = false;
  app.add_option("-c,--config", config_path,
                 "configuration file (JSON; see docs/configuration.md). Default: "
                 "/etc/atoll/atolld.json if it exists");
  app.add_option("-s,--socket", socket_path,
                 "Unix socket to listen on. Default: $ATOLL_SOCKET, else " ATOLL_DEFAULT_SOCKET);
  app.add_option("-r,--repository", repository,
                 "repository folder. Default: $ATOLL_REPOSITORY, else /var/lib/atoll/repository");
  app.add_option(
      "-b,--backend-dir", backend_dirs,
      "folder of backend plugins (repeatable; replaces the configured folders). Default: "
      "$ATOLL_BACKEND_PATH, else the file's backend_dirs, else the installed plugin "
      "folder");
  app.add_option("--backend", backend_settings,
                 "settings of one backend as NAME=JSON, e.g. cpu='{\"devices\":2}' (repeatable)");
  app.add_option("-l,--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_flag("--print-config", print_config, "print the effective configuration and exit");
  app.add_flag("-V,--version", version, "print the version and exit");
  CLI11_PARSE(app, argc, argv);

  if (version) {
    std::cout << "atolld " << ATOLL_VERSION << "\n";
    return 0;
  }

  Config config;
  if (config_path.empty() && fs::exists("/etc/atoll/atolld.json")) {
    config_path = "/etc/atoll/atolld.json";
  }
  if (!config_path.empty()) {
    auto loaded = atl::daemon::LoadConfig(config_path);
    if (!loaded.ok()) {
      std::cerr << "atolld: " << loaded.status().message() << "\n";
      return 2;
    }
    config = std::move(loaded).value();
  }
  // Precedence for every setting: flags, then environment, then the file, then defaults.
  auto env = [](const char* name) -> const char* {
    const char* v = std::getenv(name);
    return (v != nullptr && v[0] != '\0') ? v : nullptr;
  };
  if (!socket_path.empty()) {
    config.socket = socket_path;
  } else if (env("ATOLL_SOCKET")) {
    config.socket = env("ATOLL_SOCKET");
  } else if (config.socket.empty()) {
    config.socket = ATOLL_DEFAULT_SOCKET;
  }
  if (!repository.empty()) {
    config.repository = repository;
  } else if (env("ATOLL_REPOSITORY")) {
    config.repository = env("ATOLL_REPOSITORY");
  }
  if (!backend_dirs.empty()) {
    config.backend_dirs.assign(backend_dirs.begin(), backend_dirs.end());
  } else if (env("ATOLL_BACKEND_PATH") || config.backend_dirs.empty()) {
    config.backend_dirs = DefaultBackendDirs();
  }
  for (const auto& setting : backend_settings) {
    auto eq = setting.find('=');
    nlohmann::json parsed;
    try {
      if (eq == std::string::npos || eq == 0) throw std::invalid_argument("missing NAME=");
      parsed = nlohmann::json::parse(setting.substr(eq + 1));
      if (!parsed.is_object()) throw std::invalid_argument("not an object");
      atl::Status checked = atl::daemon::CheckBackendSettings(setting.substr(0, eq), parsed.dump());
      if (!checked.ok()) {
        std::cerr << "atolld: --backend " << setting << ": " << checked.message() << "\n";
        return 2;
      }
    } catch (const std::exception&) {
      std::cerr << "atolld: --backend " << setting
                << ": expected NAME=JSON with a JSON object, e.g. cpu='{\"devices\":2}'\n";
      return 2;
    }
    config.backends[setting.substr(0, eq)] = parsed.dump();
  }
  if (!log_level.empty()) config.log_level = log_level;

  // Users and groups must exist before anything starts: a typo is a configuration error.
  std::vector<atl::Status> lookups;
  if (!config.socket_owner.empty()) {
    lookups.push_back(atl::daemon::LookupUser("socket_owner", config.socket_owner).status());
  }
  if (!config.socket_group.empty()) {
    lookups.push_back(atl::daemon::LookupGroup("socket_group", config.socket_group).status());
  }
  if (!config.admin_group.empty()) {
    lookups.push_back(atl::daemon::LookupGroup("admin_group", config.admin_group).status());
  }
  for (const auto& found : lookups) {
    if (!found.ok()) {
      std::cerr << "atolld: " << found.message() << "\n";
      return 2;
    }
  }

  if (print_config) {
    std::cout << atl::daemon::ConfigToJson(config) << "\n";
    return 0;
  }

  atl::daemon::BlockShutdownSignals();  // before any backend starts a thread
  auto logger = spdlog::stderr_color_mt("atolld");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

  std::vector<std::string> problems;
  auto plugins = atl::backend::LoadPlugins(
      config.backend_dirs,
      [&](const std::string& name) {
        atl::backend::PluginSettings out;
        auto it = config.backends.find(name);
        if (it == config.backends.end()) return out;
        // The daemon's own keys (checked by the configuration) are not the plugin's.
        auto settings = nlohmann::json::parse(it->second);
        out.enabled = settings.value("enabled", true);
        if (settings.contains("isolate")) out.isolate = settings["isolate"] == "device";
        out.launch_timeout_ms = settings.value("launch_timeout_ms", 0u);
        for (const char* key : {"enabled", "isolate", "launch_timeout_ms"}) settings.erase(key);
        out.config_json = settings.dump();
        return out;
      },
      HostProgram(), &problems);
  for (const auto& p : problems) spdlog::warn("{}", p);
  if (plugins.empty()) spdlog::warn("no backend plugin loaded: requests will fail until one is");

  atl::daemon::EngineLimits limits;
  limits.max_requests_per_connection = config.max_requests_per_connection;
  atl::daemon::Engine engine(std::move(plugins), config.repository, limits);
  if (atl::Status configured = engine.Configure(config); !configured.ok()) {
    spdlog::critical("{}", configured.message());
    return 2;
  }
  engine.ReloadRepository();

  atl::daemon::Server server(config, config.socket, &engine);
  atl::Status started = server.Start();
  if (!started.ok()) {
    spdlog::critical("cannot start: {}", started.message());
    return 1;
  }
  return server.Run();
}
