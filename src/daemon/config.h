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
#include "ipc/socket.h"

namespace atl::daemon {

// A tenant the configuration names (docs/scheduling.md): the users and groups it covers, its share
// and its quotas. Users and groups are names or decimal ids, resolved when the daemon starts.
struct TenantSettings {
  std::string name;
  std::vector<std::string> users;
  std::vector<std::string> groups;
  uint32_t weight = 1;
  uint64_t max_requests_in_flight = 0;   // 0: no limit
  uint64_t max_device_memory_bytes = 0;  // 0: no limit
};

// How one device is shared: by everyone, or exclusive to some users and groups.
struct DeviceSettings {
  std::string device;  // a device index ("2") or backend:index within that backend ("cpu:1")
  bool exclusive = false;
  std::vector<std::string> users;
  std::vector<std::string> groups;
};

struct SchedulerSettings {
  std::string policy = "fair";  // "fair" or "fifo" (the baseline: one queue, no tenants' shares)
  // Tenants of connections no `tenants` entry covers: one per "user", "group" or "process".
  std::string tenant_by = "user";
  uint32_t aging_starts = 16;  // a queued request rises one priority level per this many starts
  TenantSettings defaults;     // weight and quotas of tenants that no `tenants` entry names
};

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

  // Access control (docs/security.md). "" keeps what the daemon's process gives.
  std::string socket_owner;  // user name or numeric uid the socket file is chowned to
  std::string socket_group;  // group name or numeric gid the socket file is chowned to
  std::string admin_group;   // group whose members may install into and remove from the repository

  // Limits against clients that misbehave (docs/configuration.md).
  uint32_t max_connections_per_uid = 256;
  uint64_t max_buffer_bytes_per_connection = 256ull << 30;  // declared bytes mapped at once
  uint64_t handshake_timeout_ms = 10000;                    // a connection must send Hello by then
  // Replies queued because the client does not read them; beyond this the daemon stops reading
  // that connection's requests until they drain.
  uint32_t max_unread_replies_per_connection = 4096;
  // How long the I/O thread polls for the next message after its last one before it sleeps in
  // epoll_wait: a request then finds it awake instead of paying a wake-up.
  uint32_t io_spin_us = ipc::DefaultSpinUs();
  // Clients that ask exchange messages with the I/O thread through shared-memory rings beside
  // their socket (no system call while the other side polls).
  bool shared_rings = true;

  // Scheduling (docs/scheduling.md): the policy, the tenants and the devices' modes.
  SchedulerSettings scheduler;
  std::vector<TenantSettings> tenants;
  std::vector<DeviceSettings> devices;
};

// A user or group named in the configuration, as a name or a number.
// NOT_FOUND names the field and the value.
StatusOr<uid_t> LookupUser(const std::string& field, const std::string& name_or_id);
StatusOr<gid_t> LookupGroup(const std::string& field, const std::string& name_or_id);

// Parses a configuration file's text. Errors are INVALID_ARGUMENT and name the field
// ("socket_mode: must be an octal string like \"0660\"") or the JSON syntax error's position.
StatusOr<Config> ParseConfig(const std::string& json_text);

// Checks the daemon's own keys in a backend's settings ("enabled", "isolate",
// "launch_timeout_ms"), for the file and for --backend alike; errors name the field.
Status CheckBackendSettings(const std::string& name, const std::string& settings_json);

// Reads and parses `path`. NOT_FOUND names the path.
StatusOr<Config> LoadConfig(const std::filesystem::path& path);

// The configuration as JSON, every field shown (for --print-config).
std::string ConfigToJson(const Config& config);

}  // namespace atl::daemon
