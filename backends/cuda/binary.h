// What a CUDA binary is and what it holds, read from its bytes; the manifest's build options as
// JIT options; the sizes of the manifest's scalar types. Pure code (no CUDA): unit-tested without
// a GPU.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace atl::cuda {

enum class BinaryKind { kUnknown, kCubin, kFatbin, kPtx };

const char* BinaryKindName(BinaryKind kind);

// A cubin is an ELF file, a fatbin starts with the magic 0xBA55ED50 (little-endian), PTX is text
// with a ".version" directive.
BinaryKind ClassifyBinary(std::string_view bytes);

// What code a binary holds, for messages: "sm_80", "sm_90", "compute_90" (PTX). Empty when it
// cannot tell.
std::vector<std::string> BinaryArchitectures(BinaryKind kind, std::string_view bytes);

// 64-bit FNV-1a: names cached JIT builds.
uint64_t Fnv1a64(std::string_view bytes, uint64_t seed = 14695981039346656037ull);

// JIT options from the manifest's "buildOptions": "-O0".."-O4", "-lineinfo", "-maxrregcount=N".
struct JitOptions {
  int optimization_level = -1;  // -1: the driver's default (4)
  bool line_info = false;
  uint32_t max_registers = 0;  // 0: no limit
  // The options in a canonical form, part of the JIT cache key.
  std::string Canonical() const;
};
// Returns "" on success, else the option it does not know.
std::string ParseBuildOptions(const std::string& text, JitOptions* options);

// The size in bytes of a scalar type of the manifest ("int", "unsigned long", "float"), 0 when
// this table does not know it (a type the manifest sized with "size"). Pointers ("float*") are 8.
uint32_t ArgumentTypeSize(std::string_view type);

}  // namespace atl::cuda
