#include "config.h"

#include <cctype>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

namespace atl::cuda {
namespace {

std::string Expected(const char* field, const std::string& what, const nlohmann::json& value) {
  return "\"" + std::string(field) + "\" must be " + what + ", got " + value.dump();
}

std::string ReadInteger(const nlohmann::json& value, const char* field, uint64_t low, uint64_t high,
                        uint64_t* out) {
  std::string expected = Expected(
      field, "an integer from " + std::to_string(low) + " to " + std::to_string(high), value);
  if (!value.is_number_integer()) return expected;
  if (!value.is_number_unsigned() && value.get<int64_t>() < 0) return expected;
  uint64_t number = value.get<uint64_t>();
  if (number < low || number > high) return expected;
  *out = number;
  return "";
}

std::string ReadUint32(const nlohmann::json& value, const char* field, uint32_t low, uint32_t high,
                       uint32_t* out) {
  uint64_t number = 0;
  std::string problem = ReadInteger(value, field, low, high, &number);
  if (problem.empty()) *out = static_cast<uint32_t>(number);
  return problem;
}

std::string ReadSize(const nlohmann::json& value, const char* field, uint64_t low, uint64_t* out) {
  std::string expected = Expected(field,
                                  "a size of at least " + std::to_string(low) +
                                      " bytes: an integer or a string such as \"512MiB\"",
                                  value);
  uint64_t bytes = 0;
  if (value.is_string()) {
    std::string problem = ParseBytes(value.get<std::string>(), &bytes);
    if (!problem.empty()) return "\"" + std::string(field) + "\": " + problem;
  } else if (value.is_number_integer() &&
             (value.is_number_unsigned() || value.get<int64_t>() >= 0)) {
    bytes = value.get<uint64_t>();
  } else {
    return expected;
  }
  if (bytes < low) return expected;
  *out = bytes;
  return "";
}

std::string ReadString(const nlohmann::json& value, const char* field, bool allow_empty,
                       std::string* out) {
  if (!value.is_string() || (!allow_empty && value.get<std::string>().empty())) {
    return Expected(field, allow_empty ? "a string" : "a non-empty string", value);
  }
  *out = value.get<std::string>();
  return "";
}

}  // namespace

std::string ParseBytes(const std::string& text, uint64_t* bytes) {
  size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  size_t digits_begin = i;
  uint64_t number = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t digit = static_cast<uint64_t>(text[i] - '0');
    if (number > (std::numeric_limits<uint64_t>::max() - digit) / 10) {
      return "'" + text + "' is too large";
    }
    number = number * 10 + digit;
    ++i;
  }
  if (i == digits_begin) {
    return "'" + text + "' is not a size; write bytes as an integer or with a unit: \"64KiB\", " +
           "\"512MiB\", \"8GiB\"";
  }
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  std::string unit = text.substr(i);
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.back()))) unit.pop_back();
  int shift = 0;
  if (unit.empty() || unit == "B") {
    shift = 0;
  } else if (unit == "K" || unit == "KiB" || unit == "KB") {
    shift = 10;
  } else if (unit == "M" || unit == "MiB" || unit == "MB") {
    shift = 20;
  } else if (unit == "G" || unit == "GiB" || unit == "GB") {
    shift = 30;
  } else if (unit == "T" || unit == "TiB" || unit == "TB") {
    shift = 40;
  } else {
    return "unknown unit '" + unit + "' in '" + text + "'; use B, KiB, MiB, GiB or TiB";
  }
  if (shift > 0 && number > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return "'" + text + "' is too large";
  }
  *bytes = number << shift;
  return "";
}

std::string ParseConfig(const char* text, Config* config) {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(text != nullptr ? text : "{}");
  } catch (const nlohmann::json::parse_error& e) {
    return std::string("not valid JSON (") + e.what() + "); expected an object such as " +
           kConfigExample;
  }
  if (!object.is_object()) {
    return std::string("expected a JSON object such as ") + kConfigExample + ", got " +
           object.type_name();
  }
  for (const auto& [key, value] : object.items()) {
    std::string problem;
    if (key == "devices") {
      if (!value.is_array()) {
        problem = Expected("devices", "a list of CUDA device ordinals such as [0, 1]", value);
      } else {
        std::vector<uint32_t> devices;
        for (const auto& item : value) {
          uint32_t ordinal = 0;
          problem = ReadUint32(item, "devices[]", 0, 1023, &ordinal);
          if (!problem.empty()) break;
          for (uint32_t seen : devices) {
            if (seen == ordinal) {
              problem = "\"devices\" lists device " + std::to_string(ordinal) + " twice";
            }
          }
          if (!problem.empty()) break;
          devices.push_back(ordinal);
        }
        if (problem.empty()) config->devices = std::move(devices);
      }
    } else if (key == "streams") {
      problem = ReadUint32(value, "streams", 1, 256, &config->streams);
    } else if (key == "completion_threads") {
      problem = ReadUint32(value, "completion_threads", 0, 64, &config->completion_threads);
    } else if (key == "spin_us") {
      problem = ReadUint32(value, "spin_us", 0, 100000, &config->spin_us);
    } else if (key == "pool_bytes") {
      uint64_t bytes = 0;
      problem = ReadSize(value, "pool_bytes", 1, &bytes);
      if (problem.empty()) config->pool_bytes = bytes;
    } else if (key == "pinned_bytes") {
      uint64_t bytes = 0;
      problem = ReadSize(value, "pinned_bytes", 0, &bytes);
      if (problem.empty()) config->pinned_bytes = bytes;
    } else if (key == "zero_copy_bytes") {
      problem = ReadSize(value, "zero_copy_bytes", 0, &config->zero_copy_bytes);
    } else if (key == "single_pass_zero_copy_bytes") {
      problem =
          ReadSize(value, "single_pass_zero_copy_bytes", 0, &config->single_pass_zero_copy_bytes);
    } else if (key == "kernel_timeout_ms") {
      problem = ReadUint32(value, "kernel_timeout_ms", 0, 86400000, &config->kernel_timeout_ms);
    } else if (key == "context") {
      std::string which;
      problem = ReadString(value, "context", false, &which);
      if (problem.empty() && which != "own" && which != "primary") {
        problem = Expected("context", "\"own\" or \"primary\"", value);
      }
      if (problem.empty()) config->own_context = which == "own";
    } else if (key == "jit_cache_dir") {
      problem = ReadString(value, "jit_cache_dir", true, &config->jit_cache_dir);
    } else if (key == "driver_library") {
      problem = ReadString(value, "driver_library", false, &config->driver_library);
    } else if (key == "nvml_library") {
      problem = ReadString(value, "nvml_library", true, &config->nvml_library);
    } else {
      problem = "unknown field \"" + key +
                "\"; the cuda backend's fields are \"devices\", \"streams\", "
                "\"completion_threads\", \"spin_us\", \"pool_bytes\", \"pinned_bytes\", "
                "\"zero_copy_bytes\", \"single_pass_zero_copy_bytes\", \"kernel_timeout_ms\", "
                "\"context\", \"jit_cache_dir\", "
                "\"driver_library\" and \"nvml_library\"";
    }
    if (!problem.empty()) return problem;
  }
  return "";
}

}  // namespace atl::cuda
