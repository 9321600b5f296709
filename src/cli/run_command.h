// `atoll run ACCEL ARGS...`: calls an accelerator from the shell. Arrays come from and go to files,
// scalars from the command line, matched to the accelerator's signature as the daemon reports it.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace atl::cli {

// One argument as the command line gives it, resolved against the signature.
struct RunArgument {
  bool is_array = false;
  std::string type;
  char access = 'r';        // arrays: 'r', 'w' or 'b' (both)
  std::string path;         // arrays
  uint64_t size_bytes = 0;  // arrays: from the file, "@FILE:BYTES", or the length rule
  std::string scalar;       // scalars: the value's bytes
};

// Matches `values` to `signature` (the daemon's JSON for one accelerator: {"id", "arguments":
// [...]}). Scalars parse as their C type (range-checked); arrays are "@FILE" or "@FILE:BYTES".
// Errors name the argument and say what was expected.
StatusOr<std::vector<RunArgument>> ParseRunArguments(const nlohmann::json& signature,
                                                     const std::vector<std::string>& values);

// Runs the accelerator: fills buffers from input files, submits, waits, writes outputs. Prints the
// elapsed time to stdout when `verbose`.
Status Run(const std::string& accelerator, const std::vector<RunArgument>& args,
           uint64_t timeout_ms, bool verbose);

}  // namespace atl::cli
