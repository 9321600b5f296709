// The manifest (`bitstream.json`) that describes a binary, parsed and checked.
// Compatible with InAccel's format; Atoll adds `platform.backend` and an optional per-array
// `length` rule. Thread safety: values; parsing is reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace atl::repository {

enum class ArgKind { kArray, kScalar };
enum class Access { kRead = 1, kWrite = 2, kReadWrite = 3 };

struct ArgumentSpec {
  std::string name;
  std::string type;  // as written: "float*", "int", "unsigned char*"
  ArgKind kind = ArgKind::kScalar;
  uint64_t element_bytes = 0;          // arrays: sizeof the pointee; scalars: sizeof the value
  Access access = Access::kReadWrite;  // arrays only; InAccel's default when absent is "rw"
  // Arrays only: how many elements the array must hold, as a product of scalar argument names and
  // non-negative integer constants ("n", "width*height", "3*n"), stored without spaces; "" means
  // no rule.
  std::string length;
  // Arrays only (Atoll's "single_pass"): the kernel touches each element at most once, so a backend
  // may leave a small array in host memory for the kernel to read or write in place.
  bool single_pass = false;
  // Arrays only: the bank names InAccel's "memory" lists, joined by ','; "" when not given. When a
  // kernelId is listed once per compute unit, the first listing's banks.
  std::string memory;
};

// How many work-items a launch runs (Atoll's "launch" block). Each global entry is a rule in the
// length-rule grammar ("size", "width*height", "1024"), one per dimension; `local` is empty (the
// backend chooses) or has one work-group size per dimension. No global entries: one work-item.
struct LaunchSpec {
  std::vector<std::string> global;
  std::vector<uint32_t> local;
};

struct KernelSpec {
  std::string kernel_id;  // "addition": the accelerator id is bitstreamId.kernelId
  // Kernel symbol per compute unit: ["vadd", "vadd"] is two CUs. InAccel's way of listing one
  // kernelId several times, each with its own "name", lands here too.
  std::vector<std::string> names;
  std::vector<ArgumentSpec> arguments;
  LaunchSpec launch;
};

struct Platform {
  std::string backend;  // "cpu", "opencl", "cuda"; defaults to "opencl" when absent (InAccel's)
  std::string vendor;   // "" matches any device of the backend
  std::string name;
  std::string version;
};

struct Manifest {
  std::string bitstream_id;  // "vector", "com.example.vision"
  std::string version;       // dotted numbers compare numerically: "1.10" > "1.9"
  std::string binary;        // the binary's file name in the folder (the manifest's "name")
  std::string description;
  // Compiler options for a binary built when a device is programmed (OpenCL C, PTX): Atoll's
  // "buildOptions".
  std::string build_options;
  Platform platform;
  std::vector<KernelSpec> kernels;
};

// Parses and checks a manifest. Errors are INVALID_ARGUMENT and name the offending field as a
// JSON path: "kernels[0].arguments[2].type: unknown type 'flaot*'". Unknown fields are ignored.
// Kernels that repeat a kernelId must take the same arguments; they merge into one KernelSpec. An
// argument of a type Atoll does not know is accepted when InAccel's "size" gives its bytes;
// InAccel's "index" (argument reordering) is refused.
StatusOr<Manifest> ParseManifest(std::string_view json_text);

// Serialises back to JSON (InAccel's field names plus Atoll's additions), pretty-printed.
std::string ManifestToJson(const Manifest& manifest);

// Size in bytes of a scalar C type name ("int" -> 4, "unsigned char" -> 1, "double" -> 8,
// "uint64_t" -> 8); NOT_FOUND for unknown names. Whitespace between words is normalised.
StatusOr<uint64_t> ScalarTypeBytes(std::string_view type);

// <0, 0, >0 like strcmp, comparing dot-separated components numerically where both are numbers.
int CompareVersions(std::string_view a, std::string_view b);

}  // namespace atl::repository
