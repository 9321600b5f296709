// Checks a request's arguments against a kernel's signature before anything runs.
// Thread-safe: pure functions, and a prepared form that is immutable once built.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "repository/manifest.h"

namespace atl::repository {

// One argument of a request as the daemon received it, already in index order.
struct ArgValue {
  bool is_array = false;
  uint64_t size_bytes = 0;            // array range size, or scalar byte count
  const void* scalar_data = nullptr;  // scalars: the bytes
};

// A request's work-items per dimension, from the kernel's "launch" block (dims 0: one work-item).
struct LaunchGeometry {
  uint32_t dims = 0;
  uint64_t global[3] = {0, 0, 0};
  uint32_t local[3] = {0, 0, 0};  // 0: the backend chooses
};

// A kernel's signature checks, prepared once: its length and launch rules parsed and the scalars
// they name resolved, so that checking a request parses and allocates nothing on success. atolld
// prepares one per kernel when it resolves an accelerator and checks every request against it.
// A rule that the manifest got wrong is kept as an error that every check reports.
// Thread safety: immutable after construction.
class PreparedSignature {
 public:
  // REQUIRES: `kernel` outlives this object.
  explicit PreparedSignature(const KernelSpec& kernel);

  const KernelSpec& kernel() const { return *kernel_; }

  // OK when `args` match the kernel: count, array vs scalar, scalar size, array size a multiple of
  // the element size, and each `length` rule satisfied (the array holds at least that many
  // elements; scalars used in a rule are read as signed or unsigned integers of their type; a
  // negative value or an overflowing product is an error). Errors are INVALID_ARGUMENT and name
  // the accelerator, the argument's index and manifest name, what was expected and what came:
  // "vector.addition: argument 3 'size' must be a scalar of 4 bytes (int), got an array".
  Status Check(std::string_view accelerator, std::span<const ArgValue> args) const;

  // Evaluates the kernel's "launch" block on a request's scalars. REQUIRES: Check(args) succeeded.
  // INVALID_ARGUMENT when a size overflows 64 bits or a scalar it names is negative.
  StatusOr<LaunchGeometry> Launch(std::string_view accelerator,
                                  std::span<const ArgValue> args) const;

 private:
  // One factor of a rule: a constant, or the integer scalar argument `source`.
  struct Factor {
    uint64_t constant = 0;
    size_t source = SIZE_MAX;
    uint64_t bytes = 0;  // the scalar's size by its type
    bool is_signed = false;
    std::string problem;  // the manifest's mistake, after "<accelerator>: "; "" when none
  };
  struct Rule {
    std::string text;     // as in the manifest: "w*h*3"
    std::string sets;     // what it decides, for messages: "the length of argument 0 'a' (n)"
    std::string problem;  // the rule does not parse (after "<accelerator>: "); "" when it does
    std::vector<Factor> factors;
  };

  static Rule Prepare(const KernelSpec& kernel, const std::string& text, std::string sets);
  // The rule's product in `*value`; `*overflow` when it does not fit 64 bits.
  static Status Evaluate(std::string_view accelerator, const KernelSpec& kernel, const Rule& rule,
                         std::span<const ArgValue> args, uint64_t* value, bool* overflow);
  // The factors' values, for messages: "200*7*3". REQUIRES: Evaluate succeeded.
  static std::string Values(const Rule& rule, std::span<const ArgValue> args);
  Status CheckLength(std::string_view accelerator, std::span<const ArgValue> args,
                     size_t index) const;

  const KernelSpec* kernel_;
  std::vector<Rule> lengths_;  // per argument; an empty text is no rule
  std::vector<Rule> global_;   // per launch dimension
};

// PreparedSignature(kernel).Check(accelerator, args), for a single check.
Status CheckSignature(std::string_view accelerator, const KernelSpec& kernel,
                      std::span<const ArgValue> args);

// PreparedSignature(kernel).Launch(accelerator, args), for a single evaluation.
StatusOr<LaunchGeometry> EvaluateLaunch(std::string_view accelerator, const KernelSpec& kernel,
                                        std::span<const ArgValue> args);

}  // namespace atl::repository
