#include "daemon/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
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

}  // namespace

StatusOr<Config> ParseConfig(const std::string& json_text) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
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
                                       "max_buffers_per_connection"};
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
      if (settings.contains("enabled") && !settings["enabled"].is_boolean()) {
        return FieldError("backends." + name + ".enabled", "must be true or false");
      }
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
  if (c.max_connections == 0) return FieldError("max_connections", "must be at least 1");
  if (c.max_requests_per_connection == 0) {
    return FieldError("max_requests_per_connection", "must be at least 1");
  }
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
  return j.dump(2);
}

}  // namespace atl::daemon
