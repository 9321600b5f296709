#include "repository/manifest.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>
#include <utility>

#include <nlohmann/json.hpp>

#include "repository/manifest_internal.h"

namespace atl::repository {
namespace internal {
namespace {

struct NamedScalar {
  const char* name;
  ScalarInfo info;
};

// LP64 Linux, which is also what OpenCL C fixes for its own names (uint, ulong, ...).
const NamedScalar kScalars[] = {
    {"char", {1, ScalarClass::kSigned}},
    {"signed char", {1, ScalarClass::kSigned}},
    {"unsigned char", {1, ScalarClass::kUnsigned}},
    {"uchar", {1, ScalarClass::kUnsigned}},
    {"short", {2, ScalarClass::kSigned}},
    {"short int", {2, ScalarClass::kSigned}},
    {"signed short", {2, ScalarClass::kSigned}},
    {"signed short int", {2, ScalarClass::kSigned}},
    {"unsigned short", {2, ScalarClass::kUnsigned}},
    {"unsigned short int", {2, ScalarClass::kUnsigned}},
    {"ushort", {2, ScalarClass::kUnsigned}},
    {"int", {4, ScalarClass::kSigned}},
    {"signed", {4, ScalarClass::kSigned}},
    {"signed int", {4, ScalarClass::kSigned}},
    {"unsigned", {4, ScalarClass::kUnsigned}},
    {"unsigned int", {4, ScalarClass::kUnsigned}},
    {"uint", {4, ScalarClass::kUnsigned}},
    {"long", {sizeof(long), ScalarClass::kSigned}},
    {"long int", {sizeof(long), ScalarClass::kSigned}},
    {"signed long", {sizeof(long), ScalarClass::kSigned}},
    {"signed long int", {sizeof(long), ScalarClass::kSigned}},
    {"unsigned long", {sizeof(long), ScalarClass::kUnsigned}},
    {"unsigned long int", {sizeof(long), ScalarClass::kUnsigned}},
    {"ulong", {8, ScalarClass::kUnsigned}},
    {"long long", {8, ScalarClass::kSigned}},
    {"long long int", {8, ScalarClass::kSigned}},
    {"signed long long", {8, ScalarClass::kSigned}},
    {"signed long long int", {8, ScalarClass::kSigned}},
    {"unsigned long long", {8, ScalarClass::kUnsigned}},
    {"unsigned long long int", {8, ScalarClass::kUnsigned}},
    {"float", {4, ScalarClass::kFloat}},
    {"double", {8, ScalarClass::kFloat}},
    {"size_t", {sizeof(size_t), ScalarClass::kUnsigned}},
    {"ssize_t", {sizeof(size_t), ScalarClass::kSigned}},
    {"int8_t", {1, ScalarClass::kSigned}},
    {"int16_t", {2, ScalarClass::kSigned}},
    {"int32_t", {4, ScalarClass::kSigned}},
    {"int64_t", {8, ScalarClass::kSigned}},
    {"uint8_t", {1, ScalarClass::kUnsigned}},
    {"uint16_t", {2, ScalarClass::kUnsigned}},
    {"uint32_t", {4, ScalarClass::kUnsigned}},
    {"uint64_t", {8, ScalarClass::kUnsigned}},
    {"bool", {1, ScalarClass::kBool}},
};

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && IsSpace(text[i])) ++i;
    size_t start = i;
    while (i < text.size() && !IsSpace(text[i])) ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

std::string Join(const std::vector<std::string>& words, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += separator;
    out += words[i];
  }
  return out;
}

std::string_view Trim(std::string_view text) {
  while (!text.empty() && IsSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && IsSpace(text.back())) text.remove_suffix(1);
  return text;
}

bool IsIdentifier(std::string_view text) {
  if (text.empty()) return false;
  if (!(std::isalpha(static_cast<unsigned char>(text[0])) || text[0] == '_')) return false;
  return std::all_of(text.begin(), text.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

bool IsDigits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c));
  });
}

}  // namespace

StatusOr<ScalarInfo> DescribeScalar(std::string_view type) {
  std::string normal = Join(Words(type), " ");
  for (const NamedScalar& scalar : kScalars) {
    if (normal == scalar.name) return scalar.info;
  }
  return NotFoundError("unknown scalar type '" + std::string(type) + "'");
}

StatusOr<ArgumentType> SplitArgumentType(std::string_view type) {
  std::string spaced;
  for (char c : type) {
    if (c == '*') {
      spaced += " * ";
    } else {
      spaced += c;
    }
  }
  std::vector<std::string> words = Words(spaced);
  if (std::count(words.begin(), words.end(), "*") > 1) {
    return InvalidArgumentError(
        "pointers to pointers are not supported; an array is a scalar "
        "type followed by one '*', such as \"float*\"");
  }
  ArgumentType out;
  std::vector<std::string> element;
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i] == "*") {
      if (i + 1 != words.size()) {
        return InvalidArgumentError("'*' must end the type, as in \"const float*\"");
      }
      out.is_array = true;
    } else if (words[i] != "const") {
      element.push_back(words[i]);
    }
  }
  if (element.empty()) {
    return InvalidArgumentError(
        "no type name; write a C scalar type such as \"int\" or, for an "
        "array, \"float*\"");
  }
  out.element = Join(element, " ");
  return out;
}

StatusOr<std::vector<LengthFactor>> ParseLengthRule(std::string_view rule) {
  std::vector<LengthFactor> factors;
  const std::string example =
      "; a length is a product of integer scalar arguments and constants, "
      "such as \"n\", \"width*height\" or \"3*n\"";
  if (Trim(rule).empty()) return InvalidArgumentError("empty length rule" + example);
  size_t start = 0;
  while (true) {
    size_t star = rule.find('*', start);
    std::string_view text =
        Trim(rule.substr(start, star == std::string_view::npos ? star : star - start));
    if (text.empty()) {
      return InvalidArgumentError("'" + std::string(rule) + "' has an empty factor" + example);
    }
    LengthFactor factor;
    if (IsDigits(text)) {
      auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), factor.constant);
      if (error != std::errc() || end != text.data() + text.size()) {
        return InvalidArgumentError("constant '" + std::string(text) + "' in '" +
                                    std::string(rule) + "' does not fit in 64 bits");
      }
    } else if (IsIdentifier(text)) {
      factor.name = std::string(text);
    } else {
      return InvalidArgumentError("'" + std::string(text) + "' in '" + std::string(rule) +
                                  "' is neither an argument name nor a non-negative integer" +
                                  example);
    }
    factors.push_back(std::move(factor));
    if (star == std::string_view::npos) break;
    start = star + 1;
  }
  return factors;
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace internal

namespace {

using Json = nlohmann::json;
using internal::IsDigits;
using internal::IsIdentifier;

std::string Quoted(std::string_view text) {
  return Json(std::string(text)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

// "number 3", "array", "object": enough to show what came instead of what was expected.
std::string Describe(const Json& value) {
  std::string kind = value.type_name();
  if (value.is_primitive() && !value.is_null()) {
    std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (text.size() > 40) text = text.substr(0, 37) + "...";
    return kind + " " + text;
  }
  return kind;
}

Status Invalid(const std::string& path, const std::string& what) {
  return InvalidArgumentError(path + ": " + what);
}

std::string Child(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string Item(const std::string& path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

const Json* Find(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

StatusOr<std::string> OptionalString(const Json& object, const char* key, const std::string& path) {
  const Json* value = Find(object, key);
  if (value == nullptr) return std::string();
  if (!value->is_string()) {
    return Invalid(Child(path, key), "must be a string, got " + Describe(*value));
  }
  return value->get<std::string>();
}

StatusOr<std::string> RequiredString(const Json& object, const char* key, const std::string& path,
                                     const std::string& hint) {
  if (Find(object, key) == nullptr) return Invalid(Child(path, key), "missing; " + hint);
  ATOLL_ASSIGN_OR_RETURN(std::string value, OptionalString(object, key, path));
  if (value.empty()) return Invalid(Child(path, key), "must not be empty; " + hint);
  return value;
}

// A string, or a list of strings (InAccel writes both for "name" and "memory").
StatusOr<std::vector<std::string>> StringOrList(const Json& value, const std::string& path) {
  std::vector<std::string> out;
  if (value.is_string()) {
    out.push_back(value.get<std::string>());
  } else if (value.is_array()) {
    for (size_t i = 0; i < value.size(); ++i) {
      if (!value[i].is_string()) {
        return Invalid(Item(path, i), "must be a string, got " + Describe(value[i]));
      }
      out.push_back(value[i].get<std::string>());
    }
  } else {
    return Invalid(path, "must be a string or a list of strings, got " + Describe(value));
  }
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].empty()) {
      return Invalid(value.is_array() ? Item(path, i) : path, "must not be empty");
    }
  }
  return out;
}

bool IsBitstreamIdChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

Status CheckBitstreamId(const std::string& id) {
  const char* hint = "use letters, digits, '_', '-' and '.', such as \"com.example.vision\"";
  if (!std::all_of(id.begin(), id.end(), IsBitstreamIdChar)) {
    return Invalid("bitstreamId", Quoted(id) + " has characters that are not allowed; " + hint);
  }
  if (id.front() == '.' || id.back() == '.' || id.find("..") != std::string::npos) {
    return Invalid("bitstreamId", Quoted(id) + " has an empty component between dots; " + hint);
  }
  return OkStatus();
}

Status CheckKernelId(const std::string& id, const std::string& path) {
  if (id.find('.') != std::string::npos) {
    return Invalid(path,
                   Quoted(id) +
                       " must not contain '.': the accelerator id is bitstreamId.kernelId, so "
                       "put dotted prefixes in bitstreamId");
  }
  bool ok = std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  if (!ok) {
    return Invalid(path, Quoted(id) +
                             " has characters that are not allowed; use letters, digits, '_' and "
                             "'-', such as \"addition\"");
  }
  return OkStatus();
}

Status CheckVersion(const std::string& version) {
  for (char c : version) {
    if (internal::IsSpace(c) || c == '@' || c == '/' ||
        std::iscntrl(static_cast<unsigned char>(c))) {
      return Invalid("version", Quoted(version) +
                                    " must not contain whitespace, '@' or '/'; use dotted numbers "
                                    "such as \"1.2\"");
    }
  }
  return OkStatus();
}

Status CheckBinaryName(const std::string& name) {
  if (name.find('/') != std::string::npos || name == "." || name == ".." ||
      name.find('\0') != std::string::npos) {
    return Invalid("name", Quoted(name) +
                               " must be a file name in the manifest's folder, without '/', such "
                               "as \"vector.xclbin\"");
  }
  if (name == "bitstream.json") {
    return Invalid("name", "names the manifest itself; give the binary's file name");
  }
  return OkStatus();
}

StatusOr<Platform> ParsePlatform(const Json& root) {
  Platform platform;
  const Json* value = Find(root, "platform");
  if (value == nullptr) {
    platform.backend = "opencl";
    return platform;
  }
  if (!value->is_object()) {
    return Invalid("platform",
                   "must be an object such as {\"backend\": \"cpu\", \"vendor\": ...}, "
                   "got " +
                       Describe(*value));
  }
  ATOLL_ASSIGN_OR_RETURN(platform.vendor, OptionalString(*value, "vendor", "platform"));
  ATOLL_ASSIGN_OR_RETURN(platform.name, OptionalString(*value, "name", "platform"));
  ATOLL_ASSIGN_OR_RETURN(platform.version, OptionalString(*value, "version", "platform"));
  if (Find(*value, "backend") == nullptr) {
    platform.backend = "opencl";
    return platform;
  }
  ATOLL_ASSIGN_OR_RETURN(platform.backend,
                         RequiredString(*value, "backend", "platform",
                                        "use the backend that loads the binary: \"cpu\", "
                                        "\"opencl\" or \"cuda\""));
  bool ok = std::all_of(platform.backend.begin(), platform.backend.end(), [](char c) {
    return std::islower(static_cast<unsigned char>(c)) ||
           std::isdigit(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  if (!ok) {
    return Invalid("platform.backend", Quoted(platform.backend) +
                                           " is not a backend name; use lower-case names such "
                                           "as \"cpu\", \"opencl\" or \"cuda\"");
  }
  return platform;
}

// The closest known scalar type, for "did you mean"; "" when nothing is close.
std::string ClosestType(const std::string& element) {
  std::string best;
  size_t best_distance = 3;
  for (const internal::NamedScalar& scalar : internal::kScalars) {
    size_t distance = internal::EditDistance(element, scalar.name);
    if (distance < best_distance) {
      best_distance = distance;
      best = scalar.name;
    }
  }
  return best;
}

StatusOr<uint64_t> ParseSize(const Json& value, const std::string& path) {
  uint64_t size = 0;
  if (value.is_number_unsigned()) {
    size = value.get<uint64_t>();
  } else if (value.is_string() && IsDigits(value.get<std::string>())) {
    const std::string text = value.get<std::string>();
    auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), size);
    if (error != std::errc() || end != text.data() + text.size()) size = 0;
  }
  if (size == 0) {
    return Invalid(path,
                   "must be a positive number of bytes such as \"16\", got " + Describe(value));
  }
  return size;
}

// A length or launch rule, as a JSON string ("width * height") or a non-negative integer, parsed
// and stored without spaces ("width*height").
StatusOr<std::string> NormalizedRule(const Json& value, const std::string& where) {
  std::string text;
  if (value.is_number_unsigned()) {
    text = std::to_string(value.get<uint64_t>());
  } else if (value.is_string()) {
    text = value.get<std::string>();
  } else {
    return Invalid(where,
                   "must be a string such as \"n\" or \"width*height\", got " + Describe(value));
  }
  StatusOr<std::vector<internal::LengthFactor>> factors = internal::ParseLengthRule(text);
  if (!factors.ok()) return Invalid(where, factors.status().message());
  std::vector<std::string> parts;
  for (const internal::LengthFactor& factor : *factors) {
    parts.push_back(factor.name.empty() ? std::to_string(factor.constant) : factor.name);
  }
  return internal::Join(parts, "*");
}

StatusOr<ArgumentSpec> ParseArgument(const Json& value, const std::string& path) {
  if (!value.is_object()) {
    return Invalid(path, "must be an object such as {\"type\": \"float*\", \"name\": \"a\"}, got " +
                             Describe(value));
  }
  ArgumentSpec arg;
  ATOLL_ASSIGN_OR_RETURN(
      arg.type, RequiredString(value, "type", path, "give a C type such as \"float*\" or \"int\""));
  StatusOr<internal::ArgumentType> split = internal::SplitArgumentType(arg.type);
  if (!split.ok()) return Invalid(Child(path, "type"), split.status().message());
  arg.kind = split->is_array ? ArgKind::kArray : ArgKind::kScalar;

  uint64_t declared_size = 0;
  if (const Json* size = Find(value, "size")) {
    ATOLL_ASSIGN_OR_RETURN(declared_size, ParseSize(*size, Child(path, "size")));
  }
  StatusOr<internal::ScalarInfo> scalar = internal::DescribeScalar(split->element);
  if (scalar.ok()) {
    arg.element_bytes = scalar->bytes;
    if (declared_size != 0 && declared_size != scalar->bytes) {
      return Invalid(Child(path, "size"),
                     "is " + std::to_string(declared_size) + " but '" + split->element + "' is " +
                         std::to_string(scalar->bytes) + " bytes; remove \"size\" or fix the type");
    }
  } else if (declared_size != 0) {
    arg.element_bytes = declared_size;
  } else {
    std::string message = "unknown type '" + arg.type + "'";
    std::string closest = ClosestType(split->element);
    if (!closest.empty()) {
      message += "; did you mean '" + closest + (split->is_array ? "*" : "") + "'?";
    } else {
      message +=
          "; use a C scalar type such as float, int, unsigned char or int64_t (with '*' "
          "for an array), or give the element's \"size\" in bytes";
    }
    return Invalid(Child(path, "type"), message);
  }

  if (Find(value, "name") != nullptr) {
    ATOLL_ASSIGN_OR_RETURN(arg.name, OptionalString(value, "name", path));
    if (!IsIdentifier(arg.name)) {
      return Invalid(Child(path, "name"),
                     Quoted(arg.name) + " must be a C identifier such as \"size\"");
    }
  }
  if (Find(value, "index") != nullptr) {
    return Invalid(Child(path, "index"),
                   "reordering arguments is not supported; list the arguments in the order the "
                   "kernel takes them and remove \"index\"");
  }

  const char* only_arrays = "is only for arrays; remove it from this scalar argument";
  if (const Json* access = Find(value, "access")) {
    std::string where = Child(path, "access");
    if (arg.kind == ArgKind::kScalar) return Invalid(where, only_arrays);
    std::string text = access->is_string() ? access->get<std::string>() : "";
    if (text == "r") {
      arg.access = Access::kRead;
    } else if (text == "w") {
      arg.access = Access::kWrite;
    } else if (text == "rw") {
      arg.access = Access::kReadWrite;
    } else {
      return Invalid(where, "must be \"r\", \"w\" or \"rw\", got " +
                                (access->is_string() ? Quoted(text) : Describe(*access)));
    }
  }
  if (const Json* single_pass = Find(value, "single_pass")) {
    std::string where = Child(path, "single_pass");
    if (arg.kind == ArgKind::kScalar) return Invalid(where, only_arrays);
    if (!single_pass->is_boolean()) {
      return Invalid(where, "must be true or false, got " + Describe(*single_pass));
    }
    arg.single_pass = single_pass->get<bool>();
  }
  if (const Json* memory = Find(value, "memory")) {
    std::string where = Child(path, "memory");
    if (arg.kind == ArgKind::kScalar) return Invalid(where, only_arrays);
    ATOLL_ASSIGN_OR_RETURN(std::vector<std::string> banks, StringOrList(*memory, where));
    arg.memory = internal::Join(banks, ",");
  }
  if (const Json* length = Find(value, "length")) {
    std::string where = Child(path, "length");
    if (arg.kind == ArgKind::kScalar) return Invalid(where, only_arrays);
    ATOLL_ASSIGN_OR_RETURN(arg.length, NormalizedRule(*length, where));
  }
  return arg;
}

// A length or launch rule may only name integer scalar arguments of its kernel.
Status CheckRuleNames(const KernelSpec& kernel, const std::string& rule, const std::string& where,
                      const char* what) {
  StatusOr<std::vector<internal::LengthFactor>> factors = internal::ParseLengthRule(rule);
  if (!factors.ok()) return Invalid(where, factors.status().message());
  for (const internal::LengthFactor& factor : *factors) {
    if (factor.name.empty()) continue;
    auto it = std::find_if(kernel.arguments.begin(), kernel.arguments.end(),
                           [&](const ArgumentSpec& other) { return other.name == factor.name; });
    if (it == kernel.arguments.end()) {
      return Invalid(where, "'" + factor.name + "' is not an argument of kernel '" +
                                kernel.kernel_id + "'; name one of its integer scalars");
    }
    bool integer = false;
    if (it->kind == ArgKind::kScalar) {
      StatusOr<internal::ArgumentType> split = internal::SplitArgumentType(it->type);
      StatusOr<internal::ScalarInfo> info =
          split.ok() ? internal::DescribeScalar(split->element) : split.status();
      integer = info.ok() && info->is_integer();
    }
    if (!integer) {
      return Invalid(where, "'" + factor.name + "' is of type '" + it->type + "', but " + what +
                                " may only use integer scalar arguments");
    }
  }
  return OkStatus();
}

// Rules may name arguments that come later, so they are checked once all are parsed.
Status CheckRules(const KernelSpec& kernel, const std::string& path) {
  for (size_t i = 0; i < kernel.arguments.size(); ++i) {
    const ArgumentSpec& arg = kernel.arguments[i];
    if (arg.length.empty()) continue;
    ATOLL_RETURN_IF_ERROR(CheckRuleNames(
        kernel, arg.length, Child(Item(Child(path, "arguments"), i), "length"), "a length"));
  }
  for (size_t d = 0; d < kernel.launch.global.size(); ++d) {
    ATOLL_RETURN_IF_ERROR(CheckRuleNames(kernel, kernel.launch.global[d],
                                         Item(Child(Child(path, "launch"), "global"), d),
                                         "a launch size"));
  }
  return OkStatus();
}

// Atoll's "launch": {"global": rule or [rules], "local": size or [sizes]}, at most 3 dimensions.
StatusOr<LaunchSpec> ParseLaunch(const Json& value, const std::string& path) {
  const char* example = "such as {\"global\": \"size\", \"local\": 256}";
  if (!value.is_object()) {
    return Invalid(path, std::string("must be an object ") + example + ", got " + Describe(value));
  }
  LaunchSpec launch;
  const Json* global = Find(value, "global");
  std::string global_path = Child(path, "global");
  if (global == nullptr) {
    return Invalid(global_path, std::string("missing; give the work-items to run, ") + example);
  }
  std::vector<const Json*> rules;
  if (global->is_array()) {
    for (const Json& item : *global) rules.push_back(&item);
  } else {
    rules.push_back(global);
  }
  if (rules.empty() || rules.size() > 3) {
    return Invalid(global_path, "must give 1 to 3 dimensions, got " + std::to_string(rules.size()));
  }
  for (size_t d = 0; d < rules.size(); ++d) {
    std::string where = global->is_array() ? Item(global_path, d) : global_path;
    ATOLL_ASSIGN_OR_RETURN(std::string rule, NormalizedRule(*rules[d], where));
    launch.global.push_back(std::move(rule));
  }
  if (const Json* local = Find(value, "local")) {
    std::string local_path = Child(path, "local");
    std::vector<const Json*> sizes;
    if (local->is_array()) {
      for (const Json& item : *local) sizes.push_back(&item);
    } else {
      sizes.push_back(local);
    }
    if (sizes.size() != launch.global.size()) {
      return Invalid(local_path, "must give one work-group size per dimension of \"global\" (" +
                                     std::to_string(launch.global.size()) + "), got " +
                                     std::to_string(sizes.size()));
    }
    for (size_t d = 0; d < sizes.size(); ++d) {
      std::string where = local->is_array() ? Item(local_path, d) : local_path;
      if (!sizes[d]->is_number_unsigned() || sizes[d]->get<uint64_t>() == 0 ||
          sizes[d]->get<uint64_t>() > 65536) {
        return Invalid(where,
                       "must be a work-group size from 1 to 65536, got " + Describe(*sizes[d]));
      }
      launch.local.push_back(static_cast<uint32_t>(sizes[d]->get<uint64_t>()));
    }
  }
  return launch;
}

StatusOr<KernelSpec> ParseKernel(const Json& value, const std::string& path) {
  if (!value.is_object()) {
    return Invalid(path, "must be an object with \"name\", \"kernelId\" and \"arguments\", got " +
                             Describe(value));
  }
  KernelSpec kernel;
  ATOLL_ASSIGN_OR_RETURN(
      kernel.kernel_id,
      RequiredString(value, "kernelId", path, "give the name callers use, such as \"addition\""));
  ATOLL_RETURN_IF_ERROR(CheckKernelId(kernel.kernel_id, Child(path, "kernelId")));

  const Json* names = Find(value, "name");
  if (names == nullptr) {
    return Invalid(Child(path, "name"),
                   "missing; give the kernel's symbol in the binary, such as [\"vadd\"]");
  }
  ATOLL_ASSIGN_OR_RETURN(kernel.names, StringOrList(*names, Child(path, "name")));
  if (kernel.names.empty()) {
    return Invalid(Child(path, "name"), "must list at least one kernel symbol, such as [\"vadd\"]");
  }

  const Json* arguments = Find(value, "arguments");
  std::string arguments_path = Child(path, "arguments");
  if (arguments == nullptr) {
    return Invalid(arguments_path,
                   "missing; list the kernel's arguments in order, or give [] "
                   "when it takes none");
  }
  if (!arguments->is_array()) {
    return Invalid(arguments_path, "must be a list of arguments, got " + Describe(*arguments));
  }
  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < arguments->size(); ++i) {
    std::string arg_path = Item(arguments_path, i);
    ATOLL_ASSIGN_OR_RETURN(ArgumentSpec arg, ParseArgument((*arguments)[i], arg_path));
    if (!arg.name.empty()) {
      auto [it, inserted] = seen.emplace(arg.name, i);
      if (!inserted) {
        return Invalid(Child(arg_path, "name"), Quoted(arg.name) + " is already the name of " +
                                                    Item(arguments_path, it->second) +
                                                    "; give each argument its own name");
      }
    }
    kernel.arguments.push_back(std::move(arg));
  }
  if (const Json* launch = Find(value, "launch")) {
    ATOLL_ASSIGN_OR_RETURN(kernel.launch, ParseLaunch(*launch, Child(path, "launch")));
  }
  ATOLL_RETURN_IF_ERROR(CheckRules(kernel, path));
  return kernel;
}

bool SameSignature(const KernelSpec& a, const KernelSpec& b) {
  if (a.arguments.size() != b.arguments.size()) return false;
  if (a.launch.global != b.launch.global || a.launch.local != b.launch.local) return false;
  for (size_t i = 0; i < a.arguments.size(); ++i) {
    const ArgumentSpec& x = a.arguments[i];
    const ArgumentSpec& y = b.arguments[i];
    if (x.name != y.name || x.kind != y.kind || x.element_bytes != y.element_bytes ||
        x.access != y.access || x.single_pass != y.single_pass || x.length != y.length ||
        internal::SplitArgumentType(x.type)->element !=
            internal::SplitArgumentType(y.type)->element) {
      return false;
    }
  }
  return true;
}

std::string ParseErrorText(const Json::parse_error& error) {
  // nlohmann's text starts with "[json.exception.parse_error.101] parse error at line 3, ...".
  std::string text = error.what();
  size_t start = text.find("] ");
  if (start != std::string::npos) text = text.substr(start + 2);
  return text;
}

std::vector<std::string> Split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string::npos ? end : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return parts;
}

}  // namespace

StatusOr<Manifest> ParseManifest(std::string_view json_text) {
  Json root;
  try {
    root = Json::parse(json_text.begin(), json_text.end());
  } catch (const Json::parse_error& error) {
    return InvalidArgumentError("the manifest is not valid JSON: " + ParseErrorText(error));
  } catch (const Json::exception& error) {
    // A number too large for a double, say: nlohmann throws out_of_range, not parse_error.
    return InvalidArgumentError(std::string("the manifest is not valid JSON: ") + error.what());
  }
  if (!root.is_object()) {
    return InvalidArgumentError(
        "the manifest must be a JSON object with \"bitstreamId\", \"version\" and \"kernels\", "
        "got " +
        Describe(root));
  }
  Manifest manifest;
  ATOLL_ASSIGN_OR_RETURN(manifest.bitstream_id,
                         RequiredString(root, "bitstreamId", "",
                                        "give the package name, such as \"com.example.vision\""));
  ATOLL_RETURN_IF_ERROR(CheckBitstreamId(manifest.bitstream_id));
  ATOLL_ASSIGN_OR_RETURN(manifest.version,
                         RequiredString(root, "version", "", "give a version such as \"1.0\""));
  ATOLL_RETURN_IF_ERROR(CheckVersion(manifest.version));
  ATOLL_ASSIGN_OR_RETURN(manifest.binary, OptionalString(root, "name", ""));
  if (Find(root, "name") != nullptr) ATOLL_RETURN_IF_ERROR(CheckBinaryName(manifest.binary));
  ATOLL_ASSIGN_OR_RETURN(manifest.description, OptionalString(root, "description", ""));
  ATOLL_ASSIGN_OR_RETURN(manifest.build_options, OptionalString(root, "buildOptions", ""));
  ATOLL_ASSIGN_OR_RETURN(manifest.platform, ParsePlatform(root));

  const Json* kernels = Find(root, "kernels");
  if (kernels == nullptr) {
    return Invalid("kernels",
                   "missing; list the binary's kernels, such as [{\"kernelId\": "
                   "\"addition\", \"name\": [\"vadd\"], \"arguments\": [...]}]");
  }
  if (!kernels->is_array()) {
    return Invalid("kernels", "must be a list of kernels, got " + Describe(*kernels));
  }
  if (kernels->empty()) return Invalid("kernels", "must list at least one kernel");
  // InAccel lists a kernelId once per compute unit; those entries become one kernel with several
  // names, which only makes sense when they take the same arguments.
  std::map<std::string, size_t> first_index;
  for (size_t i = 0; i < kernels->size(); ++i) {
    std::string path = Item("kernels", i);
    ATOLL_ASSIGN_OR_RETURN(KernelSpec kernel, ParseKernel((*kernels)[i], path));
    auto it = first_index.find(kernel.kernel_id);
    if (it == first_index.end()) {
      first_index.emplace(kernel.kernel_id, i);
      manifest.kernels.push_back(std::move(kernel));
      continue;
    }
    auto existing =
        std::find_if(manifest.kernels.begin(), manifest.kernels.end(),
                     [&](const KernelSpec& k) { return k.kernel_id == kernel.kernel_id; });
    if (!SameSignature(*existing, kernel)) {
      return Invalid(Child(path, "kernelId"),
                     Quoted(kernel.kernel_id) + " is already the kernelId of " +
                         Item("kernels", it->second) +
                         " with different arguments; give this kernel its own kernelId, or make "
                         "the arguments match when it is another compute unit of the same kernel");
    }
    existing->names.insert(existing->names.end(), kernel.names.begin(), kernel.names.end());
  }
  return manifest;
}

std::string ManifestToJson(const Manifest& manifest) {
  using Ordered = nlohmann::ordered_json;
  Ordered root;
  root["bitstreamId"] = manifest.bitstream_id;
  root["version"] = manifest.version;
  if (!manifest.binary.empty()) root["name"] = manifest.binary;
  if (!manifest.description.empty()) root["description"] = manifest.description;
  if (!manifest.build_options.empty()) root["buildOptions"] = manifest.build_options;
  Ordered platform;
  platform["backend"] = manifest.platform.backend;
  if (!manifest.platform.vendor.empty()) platform["vendor"] = manifest.platform.vendor;
  if (!manifest.platform.name.empty()) platform["name"] = manifest.platform.name;
  if (!manifest.platform.version.empty()) platform["version"] = manifest.platform.version;
  root["platform"] = platform;
  Ordered kernels = Ordered::array();
  for (const KernelSpec& kernel : manifest.kernels) {
    Ordered k;
    k["name"] = kernel.names;
    k["kernelId"] = kernel.kernel_id;
    Ordered arguments = Ordered::array();
    for (const ArgumentSpec& arg : kernel.arguments) {
      Ordered a;
      a["type"] = arg.type;
      if (!arg.name.empty()) a["name"] = arg.name;
      StatusOr<internal::ArgumentType> split = internal::SplitArgumentType(arg.type);
      if (!split.ok() || !internal::DescribeScalar(split->element).ok()) {
        a["size"] = std::to_string(arg.element_bytes);
      }
      if (arg.kind == ArgKind::kArray) {
        a["access"] = arg.access == Access::kRead ? "r" : arg.access == Access::kWrite ? "w" : "rw";
        if (!arg.memory.empty()) a["memory"] = Split(arg.memory, ',');
        if (!arg.length.empty()) a["length"] = arg.length;
        if (arg.single_pass) a["single_pass"] = true;
      }
      arguments.push_back(std::move(a));
    }
    k["arguments"] = std::move(arguments);
    if (!kernel.launch.global.empty()) {
      Ordered launch;
      launch["global"] = kernel.launch.global;
      if (!kernel.launch.local.empty()) launch["local"] = kernel.launch.local;
      k["launch"] = std::move(launch);
    }
    kernels.push_back(std::move(k));
  }
  root["kernels"] = std::move(kernels);
  return root.dump(2, ' ', false, Ordered::error_handler_t::replace) + "\n";
}

StatusOr<uint64_t> ScalarTypeBytes(std::string_view type) {
  ATOLL_ASSIGN_OR_RETURN(internal::ScalarInfo info, internal::DescribeScalar(type));
  return info.bytes;
}

int CompareVersions(std::string_view a, std::string_view b) {
  std::vector<std::string> left = Split(std::string(a), '.');
  std::vector<std::string> right = Split(std::string(b), '.');
  size_t count = std::max(left.size(), right.size());
  for (size_t i = 0; i < count; ++i) {
    // A missing component reads as 0 against a number, so "1" equals "1.0" and precedes "1.1".
    std::string x = i < left.size() ? left[i] : "";
    std::string y = i < right.size() ? right[i] : "";
    if (x.empty() && IsDigits(y)) x = "0";
    if (y.empty() && IsDigits(x)) y = "0";
    int order = 0;
    if (IsDigits(x) && IsDigits(y)) {
      x.erase(0, std::min(x.find_first_not_of('0'), x.size()));
      y.erase(0, std::min(y.find_first_not_of('0'), y.size()));
      if (x.size() != y.size()) {
        order = x.size() < y.size() ? -1 : 1;
      } else {
        order = x.compare(y);
      }
    } else {
      order = x.compare(y);
    }
    if (order != 0) return order < 0 ? -1 : 1;
  }
  return 0;
}

}  // namespace atl::repository
