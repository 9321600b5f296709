// Private to src/repository: the type and length-rule grammar that manifest.cpp checks and
// signature.cpp evaluates, kept in one place so both read a manifest the same way.
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace atl::repository::internal {

enum class ScalarClass { kSigned, kUnsigned, kFloat, kBool };

struct ScalarInfo {
  uint64_t bytes = 0;
  ScalarClass scalar_class = ScalarClass::kSigned;
  bool is_integer() const {
    return scalar_class == ScalarClass::kSigned || scalar_class == ScalarClass::kUnsigned;
  }
};

// A scalar C type name with whitespace normalised ("unsigned   int" -> "unsigned int");
// NOT_FOUND for unknown names.
StatusOr<ScalarInfo> DescribeScalar(std::string_view type);

struct ArgumentType {
  bool is_array = false;
  std::string element;  // normalised pointee (arrays) or value type (scalars), without const
};

// Splits "const unsigned char *" into {array, "unsigned char"}. INVALID_ARGUMENT when the text is
// not a type name with at most one trailing '*'. Does not check that the element type is known.
StatusOr<ArgumentType> SplitArgumentType(std::string_view type);

// One factor of a length rule: an argument name, or a constant when `name` is empty.
struct LengthFactor {
  std::string name;
  uint64_t constant = 0;
};

// Parses "width * height", "3*n", "n". INVALID_ARGUMENT names what is wrong with the text.
StatusOr<std::vector<LengthFactor>> ParseLengthRule(std::string_view rule);

// Levenshtein distance, for "did you mean" suggestions.
size_t EditDistance(std::string_view a, std::string_view b);

}  // namespace atl::repository::internal
