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

// An integer scalar of `bytes` bytes read by its signedness: false, with the value in
// `*negative`, when it is below zero.
bool LoadCount(const ArgValue& arg, uint64_t bytes, bool is_signed, uint64_t* value,
               int64_t* negative) {
  // Each branch converts on its own: a conditional expression would make int32_t unsigned.
  int64_t signed_value = 0;
  switch (bytes) {
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
        return true;
      }
      signed_value = Load<int64_t>(arg.scalar_data);
      break;
  }
  if (signed_value < 0) {
    *negative = signed_value;
    return false;
  }
  *value = static_cast<uint64_t>(signed_value);
  return true;
}

}  // namespace

PreparedSignature::Rule PreparedSignature::Prepare(const KernelSpec& kernel,
                                                   const std::string& text, std::string sets) {
  Rule rule;
  rule.text = text;
  rule.sets = std::move(sets);
  StatusOr<std::vector<internal::LengthFactor>> factors = internal::ParseLengthRule(text);
  if (!factors.ok()) {
    rule.problem = "the rule '" + text + "' of " + rule.sets +
                   " does not parse: " + factors.status().message() + "; fix the manifest";
    return rule;
  }
  for (const internal::LengthFactor& parsed : *factors) {
    Factor factor;
    factor.constant = parsed.constant;
    if (!parsed.name.empty()) {
      auto it = std::find_if(kernel.arguments.begin(), kernel.arguments.end(),
                             [&](const ArgumentSpec& other) { return other.name == parsed.name; });
      if (it == kernel.arguments.end() || it->kind != ArgKind::kScalar) {
        factor.problem = "the rule '" + text + "' of " + rule.sets + " names '" + parsed.name +
                         "', which is not a scalar argument; fix the manifest";
      } else {
        factor.source = static_cast<size_t>(it - kernel.arguments.begin());
        StatusOr<internal::ArgumentType> split = internal::SplitArgumentType(it->type);
        StatusOr<internal::ScalarInfo> info =
            split.ok() ? internal::DescribeScalar(split->element) : split.status();
        if (!info.ok() || !info->is_integer()) {
          factor.problem = Label(factor.source, *it) + " (" + it->type + ") sets " + rule.sets +
                           " but is not an integer scalar; fix the manifest";
        } else {
          factor.bytes = info->bytes;
          factor.is_signed = info->scalar_class == internal::ScalarClass::kSigned;
        }
      }
    }
    rule.factors.push_back(std::move(factor));
  }
  return rule;
}

PreparedSignature::PreparedSignature(const KernelSpec& kernel) : kernel_(&kernel) {
  lengths_.resize(kernel.arguments.size());
  for (size_t i = 0; i < kernel.arguments.size(); ++i) {
    const ArgumentSpec& spec = kernel.arguments[i];
    if (spec.kind != ArgKind::kArray || spec.length.empty()) continue;
    lengths_[i] =
        Prepare(kernel, spec.length, "the length of " + Label(i, spec) + " (" + spec.length + ")");
  }
  for (size_t d = 0; d < kernel.launch.global.size() && d < 3; ++d) {
    global_.push_back(
        Prepare(kernel, kernel.launch.global[d],
                "launch.global[" + std::to_string(d) + "] (" + kernel.launch.global[d] + ")"));
  }
}

Status PreparedSignature::Evaluate(std::string_view accelerator, const KernelSpec& kernel,
                                   const Rule& rule, std::span<const ArgValue> args,
                                   uint64_t* value, bool* overflow) {
  if (!rule.problem.empty()) {
    return InvalidArgumentError(std::string(accelerator) + ": " + rule.problem);
  }
  *value = 1;
  *overflow = false;
  for (const Factor& factor : rule.factors) {
    if (!factor.problem.empty()) {
      return InvalidArgumentError(std::string(accelerator) + ": " + factor.problem);
    }
    uint64_t v = factor.constant;
    if (factor.source != SIZE_MAX) {
      const ArgumentSpec& spec = kernel.arguments[factor.source];
      const ArgValue& arg = args[factor.source];
      if (arg.size_bytes != factor.bytes) {
        return InvalidArgumentError(std::string(accelerator) + ": " + Label(factor.source, spec) +
                                    " (" + spec.type + ") sets " + rule.sets +
                                    " but is not an integer scalar; fix the manifest");
      }
      int64_t negative = 0;
      if (!LoadCount(arg, factor.bytes, factor.is_signed, &v, &negative)) {
        return InvalidArgumentError(std::string(accelerator) + ": " + Label(factor.source, spec) +
                                    " is " + std::to_string(negative) + ", but it sets " +
                                    rule.sets + " and must not be negative");
      }
    }
    *overflow = *overflow || __builtin_mul_overflow(*value, v, value);
  }
  return OkStatus();
}

std::string PreparedSignature::Values(const Rule& rule, std::span<const ArgValue> args) {
  std::string text;
  for (const Factor& factor : rule.factors) {
    uint64_t v = factor.constant;
    int64_t negative = 0;
    if (factor.source != SIZE_MAX) {
      (void)LoadCount(args[factor.source], factor.bytes, factor.is_signed, &v, &negative);
    }
    text += (text.empty() ? "" : "*") + std::to_string(v);
  }
  return text;
}

Status PreparedSignature::CheckLength(std::string_view accelerator, std::span<const ArgValue> args,
                                      size_t index) const {
  const ArgumentSpec& spec = kernel_->arguments[index];
  const Rule& rule = lengths_[index];
  auto label_text = [&] { return std::string(accelerator) + ": " + Label(index, spec); };
  uint64_t value = 1;
  bool overflow = false;
  ATOLL_RETURN_IF_ERROR(Evaluate(accelerator, *kernel_, rule, args, &value, &overflow));
  uint64_t needed_bytes = 0;
  if (overflow || __builtin_mul_overflow(value, spec.element_bytes, &needed_bytes)) {
    return InvalidArgumentError(label_text() + " has a length " + spec.length + " = " +
                                Values(rule, args) +
                                " that overflows 64 bits; check the arguments it names");
  }
  if (args[index].size_bytes < needed_bytes) {
    std::string shown = spec.length + " = " + Values(rule, args);
    if (rule.factors.size() > 1) shown += " = " + std::to_string(value);
    return InvalidArgumentError(label_text() + " must hold at least " + shown + " elements of " +
                                std::to_string(spec.element_bytes) + " bytes (" +
                                std::to_string(needed_bytes) + " bytes), got " +
                                std::to_string(args[index].size_bytes / spec.element_bytes) +
                                " elements (" + std::to_string(args[index].size_bytes) + " bytes)");
  }
  return OkStatus();
}

Status PreparedSignature::Check(std::string_view accelerator,
                                std::span<const ArgValue> args) const {
  const KernelSpec& kernel = *kernel_;
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
      ATOLL_RETURN_IF_ERROR(CheckLength(accelerator, args, i));
    }
  }
  return OkStatus();
}

StatusOr<LaunchGeometry> PreparedSignature::Launch(std::string_view accelerator,
                                                   std::span<const ArgValue> args) const {
  LaunchGeometry geometry;
  const LaunchSpec& launch = kernel_->launch;
  geometry.dims = static_cast<uint32_t>(global_.size());
  for (uint32_t d = 0; d < geometry.dims; ++d) {
    const Rule& rule = global_[d];
    uint64_t value = 1;
    bool overflow = false;
    ATOLL_RETURN_IF_ERROR(Evaluate(accelerator, *kernel_, rule, args, &value, &overflow));
    if (overflow) {
      return InvalidArgumentError(std::string(accelerator) + ": " + rule.sets + " = " +
                                  Values(rule, args) +
                                  " overflows 64 bits; check the arguments it names");
    }
    geometry.global[d] = value;
    geometry.local[d] = d < launch.local.size() ? launch.local[d] : 0;
  }
  return geometry;
}

Status CheckSignature(std::string_view accelerator, const KernelSpec& kernel,
                      std::span<const ArgValue> args) {
  return PreparedSignature(kernel).Check(accelerator, args);
}

StatusOr<LaunchGeometry> EvaluateLaunch(std::string_view accelerator, const KernelSpec& kernel,
                                        std::span<const ArgValue> args) {
  return PreparedSignature(kernel).Launch(accelerator, args);
}

}  // namespace atl::repository
