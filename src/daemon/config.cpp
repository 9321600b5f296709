#include "daemon/config.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

namespace atl::daemon {

namespace {

using nlohmann::json;

const char* const kLogLevels[] = {"trace", "debug", "info", "warn", "error", "off"};

Status FieldError(const std::string& field, const std::string& what) {
  return InvalidArgumentError("configuration field '" + field + "': " + what);
}

template <typename T>
Status ReadUnsigned(const json& j, const char* field, uint64_t max, T* out) {
  if (!j.contains(field)) return OkStatus();
  const json& v = j.at(field);
  if (!v.is_number_unsigned()) return FieldError(field, "must be a non-negative integer");
  uint64_t value = v.get<uint64_t>();
  if (value > max) return FieldError(field, "must be at most " + std::to_string(max));
  *out = static_cast<T>(value);
  return OkStatus();
}

// Reads an unsigned integer member `key` of `object` into `out`, in [min, max].
template <typename T>
Status ReadMember(const json& object, const std::string& path, const char* key, uint64_t min,
                  uint64_t max, T* out) {
  if (!object.contains(key)) return OkStatus();
  const json& v = object.at(key);
  if (!v.is_number_unsigned() || v.get<uint64_t>() < min || v.get<uint64_t>() > max) {
    return FieldError(path + "." + key, "must be an integer from " + std::to_string(min) + " to " +
                                            std::to_string(max));
  }
  *out = static_cast<T>(v.get<uint64_t>());
  return OkStatus();
}

// "users" or "groups" of a tenant or device: names or ids, as strings or numbers.
Status ReadPrincipals(const json& object, const std::string& path, const char* key,
                      std::vector<std::string>* out) {
  if (!object.contains(key)) return OkStatus();
  const json& v = object.at(key);
  std::string field = path + "." + key;
  if (!v.is_array()) return FieldError(field, "must be an array of names or numeric ids");
  for (size_t i = 0; i < v.size(); ++i) {
    std::string item = field + "[" + std::to_string(i) + "]";
    if (v[i].is_number_unsigned() && v[i].get<uint64_t>() < UINT32_MAX) {
      out->push_back(std::to_string(v[i].get<uint64_t>()));
    } else if (v[i].is_string() && !v[i].get<std::string>().empty()) {
      out->push_back(v[i].get<std::string>());
    } else {
      return FieldError(item, "must be a name or a numeric id");
    }
  }
  return OkStatus();
}

Status CheckKeys(const json& object, const std::string& path,
                 std::initializer_list<const char*> known) {
  for (const auto& item : object.items()) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
    const std::string& key = item.key();
    if (std::find_if(known.begin(), known.end(), [&](const char* k) { return key == k; }) ==
        known.end()) {
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      return FieldError(path + "." + key, "unknown field; the fields here are " + list);
    }
  }
  return OkStatus();
}

Status ReadQuotas(const json& object, const std::string& path, const char* weight_key,
                  TenantSettings* out) {
  ATOLL_RETURN_IF_ERROR(ReadMember(object, path, weight_key, 1, 1000000, &out->weight));
  ATOLL_RETURN_IF_ERROR(ReadMember(object, path, "max_requests_in_flight", 0, 1000000000,
                                   &out->max_requests_in_flight));
  ATOLL_RETURN_IF_ERROR(ReadMember(object, path, "max_device_memory_bytes", 0, uint64_t{1} << 62,
                                   &out->max_device_memory_bytes));
  return OkStatus();
}

Status ParseScheduling(const json& j, Config* c) {
  if (j.contains("scheduler")) {
    const json& s = j["scheduler"];
    if (!s.is_object()) return FieldError("scheduler", "must be an object");
    ATOLL_RETURN_IF_ERROR(CheckKeys(s, "scheduler",
                                    {"policy", "tenant_by", "aging_starts", "default_weight",
                                     "max_requests_in_flight", "max_device_memory_bytes"}));
    SchedulerSettings& out = c->scheduler;
    if (s.contains("policy")) {
      std::string policy = s["policy"].is_string() ? s["policy"].get<std::string>() : "";
      if (policy != "fair" && policy != "fifo") {
        return FieldError("scheduler.policy", "must be \"fair\" or \"fifo\"");
      }
      out.policy = policy;
    }
    if (s.contains("tenant_by")) {
      std::string by = s["tenant_by"].is_string() ? s["tenant_by"].get<std::string>() : "";
      if (by != "user" && by != "group" && by != "process") {
        return FieldError("scheduler.tenant_by", "must be \"user\", \"group\" or \"process\"");
      }
      out.tenant_by = by;
    }
    ATOLL_RETURN_IF_ERROR(
        ReadMember(s, "scheduler", "aging_starts", 1, 1000000, &out.aging_starts));
    ATOLL_RETURN_IF_ERROR(ReadQuotas(s, "scheduler", "default_weight", &out.defaults));
  }
  if (j.contains("tenants")) {
    const json& v = j["tenants"];
    if (!v.is_array()) return FieldError("tenants", "must be an array of tenant objects");
    for (size_t i = 0; i < v.size(); ++i) {
      std::string path = "tenants[" + std::to_string(i) + "]";
      const json& t = v[i];
      if (!t.is_object()) return FieldError(path, "must be an object");
      ATOLL_RETURN_IF_ERROR(CheckKeys(t, path,
                                      {"name", "users", "groups", "weight",
                                       "max_requests_in_flight", "max_device_memory_bytes"}));
      TenantSettings tenant;
      if (!t.contains("name") || !t["name"].is_string() || t["name"].get<std::string>().empty()) {
        return FieldError(path + ".name", "must be a non-empty string");
      }
      tenant.name = t["name"].get<std::string>();
      for (const auto& other : c->tenants) {
        if (other.name == tenant.name) {
          return FieldError(path + ".name", "'" + tenant.name + "' names an earlier tenant too");
        }
      }
      ATOLL_RETURN_IF_ERROR(ReadPrincipals(t, path, "users", &tenant.users));
      ATOLL_RETURN_IF_ERROR(ReadPrincipals(t, path, "groups", &tenant.groups));
      if (tenant.users.empty() && tenant.groups.empty()) {
        return FieldError(path, "needs \"users\" or \"groups\": the connections it covers");
      }
      ATOLL_RETURN_IF_ERROR(ReadQuotas(t, path, "weight", &tenant));
      c->tenants.push_back(std::move(tenant));
    }
  }
  if (j.contains("devices")) {
    const json& v = j["devices"];
    if (!v.is_array()) return FieldError("devices", "must be an array of device objects");
    for (size_t i = 0; i < v.size(); ++i) {
      std::string path = "devices[" + std::to_string(i) + "]";
      const json& d = v[i];
      if (!d.is_object()) return FieldError(path, "must be an object");
      ATOLL_RETURN_IF_ERROR(CheckKeys(d, path, {"device", "mode", "users", "groups"}));
      DeviceSettings device;
      if (d.contains("device") && d["device"].is_number_unsigned()) {
        device.device = std::to_string(d["device"].get<uint64_t>());
      } else if (d.contains("device") && d["device"].is_string() &&
                 !d["device"].get<std::string>().empty()) {
        device.device = d["device"].get<std::string>();
      } else {
        return FieldError(path + ".device",
                          "must be a device index (as `atoll devices` lists them) or "
                          "\"backend:index\", such as \"cpu:0\"");
      }
      for (const auto& other : c->devices) {
        if (other.device == device.device) {
          return FieldError(path + ".device", "'" + device.device + "' is configured twice");
        }
      }
      std::string mode = d.contains("mode") && d["mode"].is_string()
                             ? d["mode"].get<std::string>()
                             : (d.contains("mode") ? "" : "shared");
      if (mode != "shared" && mode != "exclusive") {
        return FieldError(path + ".mode", "must be \"shared\" or \"exclusive\"");
      }
      device.exclusive = mode == "exclusive";
      ATOLL_RETURN_IF_ERROR(ReadPrincipals(d, path, "users", &device.users));
      ATOLL_RETURN_IF_ERROR(ReadPrincipals(d, path, "groups", &device.groups));
      if (device.exclusive && device.users.empty() && device.groups.empty()) {
        return FieldError(path,
                          "an exclusive device needs \"users\" or \"groups\": who may use it");
      }
      if (!device.exclusive && (!device.users.empty() || !device.groups.empty())) {
        return FieldError(path, "\"users\" and \"groups\" apply only to mode \"exclusive\"");
      }
      c->devices.push_back(std::move(device));
    }
  }
  return OkStatus();
}

json TenantToJson(const TenantSettings& t, const char* weight_key) {
  json j;
  j[weight_key] = t.weight;
  j["max_requests_in_flight"] = t.max_requests_in_flight;
  j["max_device_memory_bytes"] = t.max_device_memory_bytes;
  return j;
}

}  // namespace

Status CheckBackendSettings(const std::string& name, const std::string& settings_json) {
  json settings = json::parse(settings_json, nullptr, /*allow_exceptions=*/false);
  if (!settings.is_object()) {
    return FieldError("backends." + name, "must be an object (the backend's settings)");
  }
  if (settings.contains("enabled") && !settings["enabled"].is_boolean()) {
    return FieldError("backends." + name + ".enabled", "must be true or false");
  }
  // The daemon's own settings of a backend, taken out before the plugin sees the rest.
  if (settings.contains("isolate") &&
      (!settings["isolate"].is_string() ||
       (settings["isolate"] != "device" && settings["isolate"] != "none"))) {
    return FieldError("backends." + name + ".isolate",
                      "must be \"device\" (a process per device) or \"none\" (devices run "
                      "inside atolld)");
  }
  if (settings.contains("launch_timeout_ms")) {
    const json& t = settings["launch_timeout_ms"];
    if (!t.is_number_unsigned() || t.get<uint64_t>() > 86400000) {
      return FieldError("backends." + name + ".launch_timeout_ms",
                        "must be a whole number of milliseconds from 0 (no limit) to "
                        "86400000");
    }
    if (settings.value("isolate", "device") == "none" && t.get<uint64_t>() != 0) {
      return FieldError("backends." + name + ".launch_timeout_ms",
                        "needs \"isolate\": \"device\": only a device's own process can "
                        "be stopped in the middle of a kernel");
    }
  }
  return OkStatus();
}

StatusOr<Config> ParseConfig(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    // Syntax errors, and numbers too large for a double (found by fuzz_config).
    return InvalidArgumentError(std::string("configuration is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return InvalidArgumentError("configuration must be a JSON object");
  static const char* const kKnown[] = {"socket",
                                       "socket_mode",
                                       "repository",
                                       "backend_dirs",
                                       "backends",
                                       "log_level",
                                       "shutdown_grace_ms",
                                       "max_connections",
                                       "max_requests_per_connection",
                                       "max_buffers_per_connection",
                                       "socket_owner",
                                       "socket_group",
                                       "admin_group",
                                       "max_connections_per_uid",
                                       "max_buffer_bytes_per_connection",
                                       "handshake_timeout_ms",
                                       "max_unread_replies_per_connection",
                                       "io_spin_us",
                                       "shared_rings",
                                       "scheduler",
                                       "tenants",
                                       "devices"};
  for (const auto& [key, value] : j.items()) {
    if (std::find(std::begin(kKnown), std::end(kKnown), key) == std::end(kKnown)) {
      return FieldError(key, "unknown field (see docs/configuration.md for the fields)");
    }
  }
  Config c;
  if (j.contains("socket")) {
    if (!j["socket"].is_string()) return FieldError("socket", "must be a string path");
    c.socket = j["socket"].get<std::string>();
  }
  if (j.contains("socket_mode")) {
    const json& v = j["socket_mode"];
    std::string text = v.is_string() ? v.get<std::string>() : "";
    char* end = nullptr;
    unsigned long mode = text.empty() ? 01000 : std::strtoul(text.c_str(), &end, 8);
    if (text.empty() || *end != '\0' || mode > 0777) {
      return FieldError("socket_mode", "must be an octal string like \"0660\"");
    }
    c.socket_mode = static_cast<mode_t>(mode);
  }
  if (j.contains("repository")) {
    if (!j["repository"].is_string() || j["repository"].get<std::string>().empty()) {
      return FieldError("repository", "must be a non-empty folder path");
    }
    c.repository = j["repository"].get<std::string>();
  }
  if (j.contains("backend_dirs")) {
    const json& v = j["backend_dirs"];
    if (!v.is_array()) return FieldError("backend_dirs", "must be an array of folder paths");
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) {
        return FieldError("backend_dirs[" + std::to_string(i) + "]", "must be a string");
      }
      c.backend_dirs.emplace_back(v[i].get<std::string>());
    }
  }
  if (j.contains("backends")) {
    const json& v = j["backends"];
    if (!v.is_object()) return FieldError("backends", "must be an object keyed by backend name");
    for (const auto& [name, settings] : v.items()) {
      if (!settings.is_object()) {
        return FieldError("backends." + name, "must be an object (the backend's settings)");
      }
      ATOLL_RETURN_IF_ERROR(CheckBackendSettings(name, settings.dump()));
      c.backends[name] = settings.dump();
    }
  }
  if (j.contains("log_level")) {
    std::string level = j["log_level"].is_string() ? j["log_level"].get<std::string>() : "";
    if (std::find(std::begin(kLogLevels), std::end(kLogLevels), level) == std::end(kLogLevels)) {
      return FieldError("log_level", "must be one of trace, debug, info, warn, error, off");
    }
    c.log_level = level;
  }
  ATOLL_RETURN_IF_ERROR(ReadUnsigned(j, "shutdown_grace_ms", 3600000, &c.shutdown_grace_ms));
  ATOLL_RETURN_IF_ERROR(ReadUnsigned(j, "max_connections", 1000000, &c.max_connections));
  ATOLL_RETURN_IF_ERROR(
      ReadUnsigned(j, "max_requests_per_connection", 100000000, &c.max_requests_per_connection));
  ATOLL_RETURN_IF_ERROR(
      ReadUnsigned(j, "max_buffers_per_connection", 100000000, &c.max_buffers_per_connection));
  for (auto [field, out] :
       {std::pair{"socket_owner", &c.socket_owner}, std::pair{"socket_group", &c.socket_group},
        std::pair{"admin_group", &c.admin_group}}) {
    if (!j.contains(field)) continue;
    if (!j[field].is_string()) return FieldError(field, "must be a string: a name or a number");
    *out = j[field].get<std::string>();
  }
  ATOLL_RETURN_IF_ERROR(
      ReadUnsigned(j, "max_connections_per_uid", 1000000, &c.max_connections_per_uid));
  ATOLL_RETURN_IF_ERROR(ReadUnsigned(j, "max_buffer_bytes_per_connection", uint64_t{1} << 62,
                                     &c.max_buffer_bytes_per_connection));
  ATOLL_RETURN_IF_ERROR(ReadUnsigned(j, "handshake_timeout_ms", 3600000, &c.handshake_timeout_ms));
  ATOLL_RETURN_IF_ERROR(ReadUnsigned(j, "max_unread_replies_per_connection", 100000000,
                                     &c.max_unread_replies_per_connection));
  ATOLL_RETURN_IF_ERROR(ReadUnsigned(j, "io_spin_us", 10000, &c.io_spin_us));
  if (j.contains("shared_rings")) {
    if (!j["shared_rings"].is_boolean()) return FieldError("shared_rings", "must be true or false");
    c.shared_rings = j["shared_rings"].get<bool>();
  }
  if (c.max_connections_per_uid == 0) {
    return FieldError("max_connections_per_uid", "must be at least 1");
  }
  if (c.handshake_timeout_ms == 0) return FieldError("handshake_timeout_ms", "must be at least 1");
  if (c.max_unread_replies_per_connection == 0) {
    return FieldError("max_unread_replies_per_connection", "must be at least 1");
  }
  if (c.max_connections == 0) return FieldError("max_connections", "must be at least 1");
  if (c.max_requests_per_connection == 0) {
    return FieldError("max_requests_per_connection", "must be at least 1");
  }
  ATOLL_RETURN_IF_ERROR(ParseScheduling(j, &c));
  return c;
}

StatusOr<Config> LoadConfig(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) {
    return NotFoundError("cannot read configuration file '" + path.string() +
                         "': check the path given to --config");
  }
  std::stringstream text;
  text << in.rdbuf();
  auto config = ParseConfig(text.str());
  if (!config.ok()) {
    return Status(config.status().code(), path.string() + ": " + config.status().message());
  }
  return config;
}

std::string ConfigToJson(const Config& c) {
  json j;
  j["socket"] = c.socket;
  char mode[8];
  std::snprintf(mode, sizeof(mode), "0%o", static_cast<unsigned>(c.socket_mode));
  j["socket_mode"] = mode;
  j["repository"] = c.repository.string();
  j["backend_dirs"] = json::array();
  for (const auto& d : c.backend_dirs) j["backend_dirs"].push_back(d.string());
  j["backends"] = json::object();
  for (const auto& [name, settings] : c.backends) j["backends"][name] = json::parse(settings);
  j["log_level"] = c.log_level;
  j["shutdown_grace_ms"] = c.shutdown_grace_ms;
  j["max_connections"] = c.max_connections;
  j["max_requests_per_connection"] = c.max_requests_per_connection;
  j["max_buffers_per_connection"] = c.max_buffers_per_connection;
  j["socket_owner"] = c.socket_owner;
  j["socket_group"] = c.socket_group;
  j["admin_group"] = c.admin_group;
  j["max_connections_per_uid"] = c.max_connections_per_uid;
  j["max_buffer_bytes_per_connection"] = c.max_buffer_bytes_per_connection;
  j["handshake_timeout_ms"] = c.handshake_timeout_ms;
  j["max_unread_replies_per_connection"] = c.max_unread_replies_per_connection;
  j["io_spin_us"] = c.io_spin_us;
  j["shared_rings"] = c.shared_rings;
  json scheduler = TenantToJson(c.scheduler.defaults, "default_weight");
  scheduler["policy"] = c.scheduler.policy;
  scheduler["tenant_by"] = c.scheduler.tenant_by;
  scheduler["aging_starts"] = c.scheduler.aging_starts;
  j["scheduler"] = scheduler;
  j["tenants"] = json::array();
  for (const auto& t : c.tenants) {
    json tenant = TenantToJson(t, "weight");
    tenant["name"] = t.name;
    tenant["users"] = t.users;
    tenant["groups"] = t.groups;
    j["tenants"].push_back(std::move(tenant));
  }
  j["devices"] = json::array();
  for (const auto& d : c.devices) {
    json device{{"device", d.device}, {"mode", d.exclusive ? "exclusive" : "shared"}};
    if (d.exclusive) {
      device["users"] = d.users;
      device["groups"] = d.groups;
    }
    j["devices"].push_back(std::move(device));
  }
  return j.dump(2);
}

namespace {

// A decimal id, or nothing: names like "1abc" are names, not ids.
std::optional<uint32_t> NumericId(const std::string& text) {
  if (text.empty() || text.size() > 10 ||
      !std::all_of(text.begin(), text.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return std::nullopt;
  }
  uint64_t value = std::stoull(text);
  if (value >= UINT32_MAX) return std::nullopt;  // (uid_t)-1 means "no change" to chown
  return static_cast<uint32_t>(value);
}

}  // namespace

StatusOr<uid_t> LookupUser(const std::string& field, const std::string& name_or_id) {
  if (auto id = NumericId(name_or_id)) return static_cast<uid_t>(*id);
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  int error = ::getpwnam_r(name_or_id.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (error != 0 || found == nullptr) {
    return NotFoundError("configuration field '" + field + "': no user '" + name_or_id +
                         "' on this host; give an existing user name or a numeric uid");
  }
  return found->pw_uid;
}

StatusOr<gid_t> LookupGroup(const std::string& field, const std::string& name_or_id) {
  if (auto id = NumericId(name_or_id)) return static_cast<gid_t>(*id);
  std::vector<char> buffer(65536);
  group entry{};
  group* found = nullptr;
  int error = ::getgrnam_r(name_or_id.c_str(), &entry, buffer.data(), buffer.size(), &found);
  if (error != 0 || found == nullptr) {
    return NotFoundError("configuration field '" + field + "': no group '" + name_or_id +
                         "' on this host; give an existing group name or a numeric gid");
  }
  return found->gr_gid;
}

}  // namespace atl::daemon
