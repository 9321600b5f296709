// atolld's configuration: one JSON file (--config, default /etc/atoll/atolld.json when present),
// every field optional and documented in docs/configuration.md. Values; thread-safe to copy.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace atl::daemon {

struct Config {
  std::string socket;  // "" = $ATOLL_SOCKET or ATOLL_DEFAULT_SOCKET
  mode_t socket_mode = 0666;
  std::filesystem::path repository = "/var/lib/atoll/repository";
  std::vector<std::filesystem::path> backend_dirs;  // empty = the installed plugin folder
  // Per backend (keyed by plugin name, e.g. "cpu"): the JSON object handed to its open(), or
  // absent for "{}". {"enabled": false} disables the backend.
  std::map<std::string, std::string> backends;
  std::string log_level = "info";      // trace, debug, info, warn, error, off
  uint64_t shutdown_grace_ms = 10000;  // SIGTERM: how long running work may take to finish
  uint32_t max_connections = 1024;
  uint32_t max_requests_per_connection = 65536;  // in flight (queued or running)
  uint32_t max_buffers_per_connection = 65536;
};

// Parses a configuration file's text. Errors are INVALID_ARGUMENT and name the field
// ("socket_mode: must be an octal string like \"0660\"") or the JSON syntax error's position.
StatusOr<Config> ParseConfig(const std::string& json_text);

// Reads and parses `path`. NOT_FOUND names the path.
StatusOr<Config> LoadConfig(const std::filesystem::path& path);

// The configuration as JSON, every field shown (for --print-config).
std::string ConfigToJson(const Config& config);

}  // namespace atl::daemon
