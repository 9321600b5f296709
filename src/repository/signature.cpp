#include "repository/signature.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "repository/manifest_internal.h"

namespace atl::repository {
namespace {

std::string Label(size_t index, const ArgumentSpec& spec) {
  std::string label = "argument " + std::to_string(index);
  if (!spec.name.empty()) label += " '" + spec.name + "'";
  return label;
}

std::string Expected(const ArgumentSpec& spec) {
  if (spec.kind == ArgKind::kScalar) {
    return "a scalar of " + std::to_string(spec.element_bytes) + " bytes (" + spec.type + ")";
  }
  return "an array of " + std::to_string(spec.element_bytes) + "-byte elements (" + spec.type + ")";
}

std::string Signature(const KernelSpec& kernel) {
  std::string text;
  for (size_t i = 0; i < kernel.arguments.size(); ++i) {
    if (i > 0) text += ", ";
    text += kernel.arguments[i].type;
    if (!kernel.arguments[i].name.empty()) text += " " + kernel.arguments[i].name;
  }
  return text;
}

Status CheckShape(std::string_view accelerator, size_t index, const ArgumentSpec& spec,
                  const ArgValue& arg) {
  if (spec.element_bytes == 0) {
    return InvalidArgumentError(std::string(accelerator) + ": " + Label(index, spec) +
                                " has no size in the manifest; reinstall it from a manifest that "
                                "parses");
  }
  // Built only on failure: this runs for every argument of every request.
  auto prefix = [&] {
    return std::string(accelerator) + ": " + Label(index, spec) + " must be " + Expected(spec) +
           ", got ";
  };
  if (spec.kind == ArgKind::kScalar) {
    if (arg.is_array) return InvalidArgumentError(prefix() + "an array");
    if (arg.size_bytes != spec.element_bytes) {
      return InvalidArgumentError(prefix() + "a scalar of " + std::to_string(arg.size_bytes) +
                                  " bytes");
    }
    if (arg.scalar_data == nullptr) return InvalidArgumentError(prefix() + "no value");
    return OkStatus();
  }
  if (!arg.is_array) {
    return InvalidArgumentError(prefix() + "a scalar of " + std::to_string(arg.size_bytes) +
                                " bytes");
  }
  if (arg.size_bytes % spec.element_bytes != 0) {
    return InvalidArgumentError(prefix() + std::to_string(arg.size_bytes) +
                                " bytes, which is not a multiple of " +
                                std::to_string(spec.element_bytes));
  }
  return OkStatus();
}

template <typename T>
T Load(const void* data) {
  T value;
  std::memcpy(&value, data, sizeof(T));
  return value;
}

// Reads an integer scalar that a rule names, by its exact size and signedness. `sets` says what
// the rule decides, for messages: "the length of argument 2 'c' (size)".
Status ReadCount(std::string_view accelerator, const KernelSpec& kernel, size_t source,
                 const ArgValue& arg, const std::string& sets, uint64_t* value) {
  const ArgumentSpec& spec = kernel.arguments[source];
  StatusOr<internal::ArgumentType> split = internal::SplitArgumentType(spec.type);
  StatusOr<internal::ScalarInfo> info =
      split.ok() ? internal::DescribeScalar(split->element) : split.status();
  if (!info.ok() || !info->is_integer() || info->bytes != arg.size_bytes) {
    return InvalidArgumentError(std::string(accelerator) + ": " + Label(source, spec) + " (" +
                                spec.type + ") sets " + sets +
                                " but is not an integer scalar; fix the manifest");
  }
  bool is_signed = info->scalar_class == internal::ScalarClass::kSigned;
  // Each branch converts on its own: a conditional expression would make int32_t unsigned.
  int64_t signed_value = 0;
  switch (arg.size_bytes) {
    case 1:
      if (is_signed) {
        signed_value = Load<int8_t>(arg.scalar_data);
      } else {
        signed_value = Load<uint8_t>(arg.scalar_data);
      }
      break;
    case 2:
      if (is_signed) {
        signed_value = Load<int16_t>(arg.scalar_data);
      } else {
        signed_value = Load<uint16_t>(arg.scalar_data);
      }
      break;
    case 4:
      if (is_signed) {
        signed_value = Load<int32_t>(arg.scalar_data);
      } else {
        signed_value = Load<uint32_t>(arg.scalar_data);
      }
      break;
    default:
      if (!is_signed) {
        *value = Load<uint64_t>(arg.scalar_data);
        return OkStatus();
      }
      signed_value = Load<int64_t>(arg.scalar_data);
      break;
  }
  if (signed_value < 0) {
    return InvalidArgumentError(std::string(accelerator) + ": " + Label(source, spec) + " is " +
                                std::to_string(signed_value) + ", but it sets " + sets +
                                " and must not be negative");
  }
  *value = static_cast<uint64_t>(signed_value);
  return OkStatus();
}

// A rule's value on a request's scalars, with the factors' values in `text` ("1024*768") for
// messages. `overflow` is set when the product does not fit 64 bits.
struct RuleValue {
  uint64_t value = 1;
  bool overflow = false;
  size_t factors = 0;
  std::string text;
};

StatusOr<RuleValue> EvaluateRule(std::string_view accelerator, const KernelSpec& kernel,
                                 std::span<const ArgValue> args, const std::string& rule,
                                 const std::string& sets) {
  StatusOr<std::vector<internal::LengthFactor>> factors = internal::ParseLengthRule(rule);
  if (!factors.ok()) {
    return InvalidArgumentError(std::string(accelerator) + ": the rule '" + rule + "' of " + sets +
                                " does not parse: " + factors.status().message() +
                                "; fix the manifest");
  }
  RuleValue out;
  out.factors = factors->size();
  for (const internal::LengthFactor& factor : *factors) {
    uint64_t value = factor.constant;
    if (!factor.name.empty()) {
      auto it = std::find_if(kernel.arguments.begin(), kernel.arguments.end(),
                             [&](const ArgumentSpec& other) { return other.name == factor.name; });
      if (it == kernel.arguments.end() || it->kind != ArgKind::kScalar) {
        return InvalidArgumentError(std::string(accelerator) + ": the rule '" + rule + "' of " +
                                    sets + " names '" + factor.name +
                                    "', which is not a scalar argument; fix the manifest");
      }
      size_t source = static_cast<size_t>(it - kernel.arguments.begin());
      ATOLL_RETURN_IF_ERROR(ReadCount(accelerator, kernel, source, args[source], sets, &value));
    }
    out.text += (out.text.empty() ? "" : "*") + std::to_string(value);
    out.overflow = out.overflow || __builtin_mul_overflow(out.value, value, &out.value);
  }
  return out;
}

Status CheckLength(std::string_view accelerator, const KernelSpec& kernel,
                   std::span<const ArgValue> args, size_t index) {
  const ArgumentSpec& spec = kernel.arguments[index];
  auto label_text = [&] { return std::string(accelerator) + ": " + Label(index, spec); };
  std::string sets = "the length of " + Label(index, spec) + " (" + spec.length + ")";
  ATOLL_ASSIGN_OR_RETURN(RuleValue rule,
                         EvaluateRule(accelerator, kernel, args, spec.length, sets));
  uint64_t needed_bytes = 0;
  if (rule.overflow || __builtin_mul_overflow(rule.value, spec.element_bytes, &needed_bytes)) {
    return InvalidArgumentError(label_text() + " has a length " + spec.length + " = " + rule.text +
                                " that overflows 64 bits; check the arguments it names");
  }
  if (args[index].size_bytes < needed_bytes) {
    std::string shown = spec.length + " = " + rule.text;
    if (rule.factors > 1) shown += " = " + std::to_string(rule.value);
    return InvalidArgumentError(label_text() + " must hold at least " + shown + " elements of " +
                                std::to_string(spec.element_bytes) + " bytes (" +
                                std::to_string(needed_bytes) + " bytes), got " +
                                std::to_string(args[index].size_bytes / spec.element_bytes) +
                                " elements (" + std::to_string(args[index].size_bytes) + " bytes)");
  }
  return OkStatus();
}

}  // namespace

Status CheckSignature(std::string_view accelerator, const KernelSpec& kernel,
                      std::span<const ArgValue> args) {
  if (args.size() != kernel.arguments.size()) {
    return InvalidArgumentError(std::string(accelerator) + ": takes " +
                                std::to_string(kernel.arguments.size()) + " arguments (" +
                                Signature(kernel) + "), got " + std::to_string(args.size()));
  }
  for (size_t i = 0; i < args.size(); ++i) {
    ATOLL_RETURN_IF_ERROR(CheckShape(accelerator, i, kernel.arguments[i], args[i]));
  }
  for (size_t i = 0; i < args.size(); ++i) {
    if (kernel.arguments[i].kind == ArgKind::kArray && !kernel.arguments[i].length.empty()) {
      ATOLL_RETURN_IF_ERROR(CheckLength(accelerator, kernel, args, i));
    }
  }
  return OkStatus();
}

StatusOr<LaunchGeometry> EvaluateLaunch(std::string_view accelerator, const KernelSpec& kernel,
                                        std::span<const ArgValue> args) {
  LaunchGeometry geometry;
  const LaunchSpec& launch = kernel.launch;
  geometry.dims = static_cast<uint32_t>(std::min<size_t>(launch.global.size(), 3));
  for (uint32_t d = 0; d < geometry.dims; ++d) {
    std::string sets = "launch.global[" + std::to_string(d) + "] (" + launch.global[d] + ")";
    ATOLL_ASSIGN_OR_RETURN(RuleValue rule,
                           EvaluateRule(accelerator, kernel, args, launch.global[d], sets));
    if (rule.overflow) {
      return InvalidArgumentError(std::string(accelerator) + ": " + sets + " = " + rule.text +
                                  " overflows 64 bits; check the arguments it names");
    }
    geometry.global[d] = rule.value;
    geometry.local[d] = d < launch.local.size() ? launch.local[d] : 0;
  }
  return geometry;
}

}  // namespace atl::repository
