// Comparing a manifest's C argument types ("const unsigned char *", "int32_t") with the OpenCL C
// types clGetKernelArgInfo reports ("uchar*", "int").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace atl::opencl {

struct ArgType {
  std::string element;   // canonical OpenCL C spelling: "uchar", "float4", "struct point"
  bool pointer = false;  // an array argument
};

// Parses a type as a manifest or clGetKernelArgInfo writes it: qualifiers (const, volatile,
// restrict, __global, global, __constant, constant, unsigned/signed spellings) are folded, C and
// <stdint.h> names become OpenCL C ones ("unsigned char" and "uint8_t" are "uchar").
ArgType ParseArgType(std::string_view text);

// "float*", "int": how messages show a type.
std::string Spell(const ArgType& type);

// The size in bytes of a scalar OpenCL C type ("int" 4, "float4" 16, "double3" 32), or 0 when the
// type is not a built-in scalar or vector type.
uint64_t ScalarSize(const ArgType& type);

}  // namespace atl::opencl
