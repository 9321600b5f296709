#include "cli/run_command.h"

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include "atoll/atoll.h"
#include "repository/manifest.h"

namespace atl::cli {

namespace {

using nlohmann::json;

// A type as the manifest parser reads it: words one space apart, '*' attached, and "const"
// dropped wherever it stands ("const unsigned  char *" -> "unsigned char*").
std::string Normalise(const std::string& type) {
  std::string out, word;
  auto flush = [&] {
    if (!word.empty() && word != "const") out += (out.empty() ? "" : " ") + word;
    word.clear();
  };
  for (char c : type) {
    if (std::isspace(static_cast<unsigned char>(c)) || c == '*') {
      flush();
      if (c == '*') out += '*';
    } else {
      word += c;
    }
  }
  flush();
  return out;
}

bool IsFloating(const std::string& type) { return type == "float" || type == "double"; }

bool IsUnsigned(const std::string& type) {
  return type.rfind("unsigned", 0) == 0 || type.rfind("uint", 0) == 0 || type == "uchar" ||
         type == "ushort" || type == "ulong" || type == "size_t" || type == "bool";
}

StatusOr<std::string> ParseScalar(const std::string& type, uint64_t bytes,
                                  const std::string& text) {
  std::string out(bytes, '\0');
  char* end = nullptr;
  errno = 0;
  if (IsFloating(type)) {
    double v = std::strtod(text.c_str(), &end);
    if (end == text.c_str() || *end != '\0' || errno == ERANGE) {
      return InvalidArgumentError("'" + text + "' is not a " + type);
    }
    if (bytes == 4) {
      float f = static_cast<float>(v);
      std::memcpy(out.data(), &f, 4);
    } else {
      std::memcpy(out.data(), &v, 8);
    }
    return out;
  }
  if (IsUnsigned(type)) {
    if (!text.empty() && text[0] == '-') {
      return InvalidArgumentError("'" + text + "' is negative but " + type + " is unsigned");
    }
    unsigned long long v = std::strtoull(text.c_str(), &end, 0);
    if (end == text.c_str() || *end != '\0' || errno == ERANGE ||
        (bytes < 8 && v >> (bytes * 8) != 0)) {
      return InvalidArgumentError("'" + text + "' is not a " + type + " (" + std::to_string(bytes) +
                                  " bytes)");
    }
    std::memcpy(out.data(), &v, bytes);  // little-endian: the low bytes come first
    return out;
  }
  long long v = std::strtoll(text.c_str(), &end, 0);
  long long limit =
      bytes >= 8 ? std::numeric_limits<long long>::max() : (1LL << (bytes * 8 - 1)) - 1;
  if (end == text.c_str() || *end != '\0' || errno == ERANGE || v > limit || v < -limit - 1) {
    return InvalidArgumentError("'" + text + "' is not a " + type + " (" + std::to_string(bytes) +
                                " bytes)");
  }
  std::memcpy(out.data(), &v, bytes);
  return out;
}

// Evaluates a length rule ("n", "width*height") against the scalar values given so far.
StatusOr<uint64_t> EvaluateLength(const std::string& rule, const json& arguments,
                                  const std::vector<RunArgument>& parsed) {
  uint64_t product = 1;
  size_t start = 0;
  while (start <= rule.size()) {
    size_t end = rule.find('*', start);
    if (end == std::string::npos) end = rule.size();
    std::string term = Normalise(rule.substr(start, end - start));
    uint64_t value = 0;
    if (!term.empty() && std::isdigit(static_cast<unsigned char>(term[0]))) {
      value = std::stoull(term);
    } else {
      bool found = false;
      for (size_t i = 0; i < arguments.size(); ++i) {
        if (arguments[i].value("name", "") != term) continue;
        const RunArgument& a = parsed[i];
        int64_t v = 0;
        std::memcpy(&v, a.scalar.data(), std::min<size_t>(a.scalar.size(), 8));
        if (a.scalar.size() < 8 && !IsUnsigned(a.type) && (a.scalar.back() & 0x80) != 0) {
          return InvalidArgumentError("length rule '" + rule + "': '" + term + "' is negative");
        }
        if (a.scalar.size() < 8) v &= (int64_t{1} << (a.scalar.size() * 8)) - 1;
        value = static_cast<uint64_t>(v);
        found = true;
      }
      if (!found) return InvalidArgumentError("length rule '" + rule + "' names '" + term + "'");
    }
    if (value != 0 && product > std::numeric_limits<uint64_t>::max() / value) {
      return InvalidArgumentError("length rule '" + rule + "' overflows");
    }
    product *= value;
    start = end + 1;
  }
  return product;
}

}  // namespace

StatusOr<std::vector<RunArgument>> ParseRunArguments(const json& signature,
                                                     const std::vector<std::string>& values) {
  const json& arguments = signature.at("arguments");
  const std::string id = signature.value("id", "");
  if (values.size() != arguments.size()) {
    std::string usage;
    for (const auto& a : arguments) {
      std::string t = a.value("type", "");
      usage += " " + (t.find('*') != std::string::npos ? "@" + a.value("name", "") + ".bin"
                                                       : "<" + a.value("name", "") + ">");
    }
    return InvalidArgumentError(id + " takes " + std::to_string(arguments.size()) +
                                " arguments, got " + std::to_string(values.size()) +
                                ". Usage: atoll run " + id + usage);
  }
  std::vector<RunArgument> out(arguments.size());
  // Scalars first: output sizes may depend on them through length rules.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < arguments.size(); ++i) {
      const json& spec = arguments[i];
      std::string type = Normalise(spec.value("type", ""));
      const std::string name = spec.value("name", "");
      const std::string where =
          id + ": argument " + std::to_string(i) + " '" + name + "' (" + type + "): ";
      // The daemon reports kind and element size; older daemons only the type text.
      bool is_array = spec.contains("kind") ? spec.value("kind", "") == "array"
                                            : !type.empty() && type.back() == '*';
      const uint64_t reported_bytes = spec.value("element_bytes", uint64_t{0});
      if ((pass == 0) == is_array) continue;
      RunArgument& a = out[i];
      a.is_array = is_array;
      if (!is_array) {
        a.type = type;
        StatusOr<uint64_t> bytes = reported_bytes != 0 ? StatusOr<uint64_t>(reported_bytes)
                                                       : repository::ScalarTypeBytes(type);
        if (!bytes.ok()) return InvalidArgumentError(where + bytes.status().message());
        auto scalar = ParseScalar(type, *bytes, values[i]);
        if (!scalar.ok()) return InvalidArgumentError(where + scalar.status().message());
        a.scalar = *scalar;
        continue;
      }
      a.type = Normalise(type.substr(0, type.size() - 1));
      std::string access = spec.value("access", "rw");
      a.access = access == "r" ? 'r' : access == "w" ? 'w' : 'b';
      const std::string& v = values[i];
      if (v.size() < 2 || v[0] != '@') {
        return InvalidArgumentError(where +
                                    "an array is given as @FILE (or @FILE:BYTES for an "
                                    "output), got '" +
                                    v + "'");
      }
      std::string path = v.substr(1);
      bool sized = false;
      if (auto colon = path.rfind(':'); colon != std::string::npos && a.access == 'w') {
        char* end = nullptr;
        errno = 0;
        unsigned long long n = std::strtoull(path.c_str() + colon + 1, &end, 10);
        if (*end == '\0' && end != path.c_str() + colon + 1 && errno == 0) {
          a.size_bytes = n;
          path.resize(colon);
          sized = true;
        }
      }
      a.path = path;
      if (a.access != 'w') {
        std::error_code ec;
        auto size = std::filesystem::file_size(path, ec);
        if (ec) return InvalidArgumentError(where + "cannot read '" + path + "': " + ec.message());
        a.size_bytes = size;
      } else if (!sized) {
        std::string rule = spec.value("length", "");
        if (rule.empty()) {
          return InvalidArgumentError(where + "the output's size is unknown: give it as @" + path +
                                      ":BYTES");
        }
        auto elements = EvaluateLength(rule, arguments, out);
        if (!elements.ok()) return InvalidArgumentError(where + elements.status().message());
        StatusOr<uint64_t> element_bytes = reported_bytes != 0
                                               ? StatusOr<uint64_t>(reported_bytes)
                                               : repository::ScalarTypeBytes(a.type);
        if (!element_bytes.ok())
          return InvalidArgumentError(where + element_bytes.status().message());
        a.size_bytes = *elements * *element_bytes;
      }
    }
  }
  return out;
}

Status Run(const std::string& accelerator, const std::vector<RunArgument>& args,
           uint64_t timeout_ms, bool verbose) {
  std::vector<void*> buffers(args.size(), nullptr);
  struct Cleanup {
    std::vector<void*>& b;
    ~Cleanup() {
      for (void* p : b) atoll_free(p);
    }
  } cleanup{buffers};
  atoll_request request = atoll_request_create(accelerator.c_str());
  if (request == nullptr) return InvalidArgumentError(atoll_last_error());
  struct RequestCleanup {
    atoll_request r;
    ~RequestCleanup() { atoll_request_release(r); }
  } request_cleanup{request};

  for (size_t i = 0; i < args.size(); ++i) {
    const RunArgument& a = args[i];
    atoll_status_code rc;
    if (a.is_array) {
      buffers[i] = atoll_alloc(a.size_bytes);
      if (buffers[i] == nullptr) return ResourceExhaustedError(atoll_last_error());
      if (a.access != 'w') {
        std::ifstream in(a.path, std::ios::binary);
        if (!in.read(static_cast<char*>(buffers[i]), static_cast<std::streamsize>(a.size_bytes))) {
          return InvalidArgumentError("cannot read " + std::to_string(a.size_bytes) +
                                      " bytes from '" + a.path + "'");
        }
      }
      rc = atoll_request_arg_array(request, a.size_bytes, buffers[i], static_cast<uint32_t>(i));
    } else {
      rc = atoll_request_arg_scalar(request, a.scalar.size(), a.scalar.data(),
                                    static_cast<uint32_t>(i));
    }
    if (rc != ATOLL_OK) return Status(static_cast<Code>(rc), atoll_last_error());
  }
  if (timeout_ms != 0) (void)atoll_request_set_timeout(request, timeout_ms);

  auto begin = std::chrono::steady_clock::now();
  atoll_response response = nullptr;
  atoll_status_code rc = atoll_submit(request, &response);
  if (rc != ATOLL_OK) return Status(static_cast<Code>(rc), atoll_last_error());
  rc = atoll_response_wait(response);
  auto elapsed = std::chrono::steady_clock::now() - begin;
  Status result =
      rc == ATOLL_OK ? OkStatus() : Status(static_cast<Code>(rc), atoll_response_message(response));
  atoll_response_release(response);
  if (!result.ok()) return result;

  for (size_t i = 0; i < args.size(); ++i) {
    const RunArgument& a = args[i];
    if (!a.is_array || a.access == 'r') continue;
    std::ofstream out(a.path, std::ios::binary | std::ios::trunc);
    if (!out.write(static_cast<const char*>(buffers[i]),
                   static_cast<std::streamsize>(a.size_bytes))) {
      return Status(Code::kDataLoss, "cannot write the output to '" + a.path + "'");
    }
  }
  if (verbose) {
    std::cout << accelerator << ": completed in "
              << std::chrono::duration<double, std::milli>(elapsed).count() << " ms\n";
  }
  return OkStatus();
}

}  // namespace atl::cli
