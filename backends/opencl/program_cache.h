// The on-disk cache of programs built from OpenCL C source: the device binary that
// clGetProgramInfo(CL_PROGRAM_BINARIES) returns, keyed by a SHA-256 of the source, the build
// options and the device's identity, so a daemon restart or a second daemon does not compile
// again. Beside each binary, the kernels' argument descriptions: a program made from a binary
// reports none through clGetKernelArgInfo, and the manifest check needs them.
#pragma once

#include <CL/cl.h>

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace atl::opencl {

// One kernel argument as clGetKernelArgInfo describes it.
struct ArgInfo {
  cl_kernel_arg_address_qualifier address = CL_KERNEL_ARG_ADDRESS_PRIVATE;
  std::string type_name;  // "float*"
  std::string name;       // "a", or "" when the compiler kept none
};

using KernelSignatures = std::map<std::string, std::vector<ArgInfo>, std::less<>>;

struct CachedProgram {
  std::vector<unsigned char> binary;
  KernelSignatures kernels;
};

class ProgramCache {
 public:
  // `folder` "" disables the cache.
  explicit ProgramCache(std::string folder) : folder_(std::move(folder)) {}

  bool enabled() const { return !folder_.empty(); }
  const std::string& folder() const { return folder_; }

  // The lower-case hex SHA-256 of every part, each part length-prefixed so that moving bytes
  // between parts changes the key.
  static std::string Key(const std::vector<std::string_view>& parts);

  // The entry for `key`, or nothing when absent or unreadable (a damaged entry is a miss).
  std::optional<CachedProgram> Load(const std::string& key) const;

  // Writes the entry through a temporary file and a rename, so a concurrent reader sees a whole
  // entry or none. Returns "" or what went wrong; a failure only costs a later rebuild.
  std::string Store(const std::string& key, const CachedProgram& program) const;

 private:
  std::string folder_;
};

// The whole file at `path`, or nothing with errno's value in `error`.
std::optional<std::string> ReadWholeFile(const std::string& path, int* error = nullptr);

// Creates `folder` (and its parents) if needed and checks that files can be written there.
// Returns "" or why not.
std::string PrepareCacheFolder(const std::string& folder);

}  // namespace atl::opencl
