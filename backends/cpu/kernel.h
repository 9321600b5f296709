// What the cpu backend hands the daemon as a kernel handle: an exported function of a loaded
// binary, plus the names that error messages need. Thread safety: immutable after creation.
#pragma once

#include <cstdint>
#include <string>

#include "atoll/cpu_kernel.h"

namespace atl::cpu {

struct Kernel {
  // Tells a real handle from a stray pointer the daemon might pass by mistake.
  static constexpr uint32_t kMagic = 0x6b65726eu;  // "kern"

  uint32_t magic = kMagic;
  atoll_cpu_kernel_fn function = nullptr;
  std::string name;    // the manifest's kernel name: "vadd"
  std::string binary;  // the path the program was loaded from
};

}  // namespace atl::cpu
