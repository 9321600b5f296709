// What the cpu backend reports about the host it runs on. Thread safety: reentrant.
#pragma once

#include <cstdint>
#include <string>

namespace atl::cpu {

struct HostInfo {
  std::string cpu_model;      // "AMD EPYC 7763 64-Core Processor", or "host CPU" when unknown
  std::string machine;        // uname's machine: "x86_64", "aarch64"
  int64_t memory_bytes = -1;  // physical memory, or -1 when unknown
};

// Reads /proc/cpuinfo, uname(2) and sysconf(3). Never fails: unknown values get the defaults
// above, and an unknown machine is "unknown".
HostInfo ReadHostInfo();

}  // namespace atl::cpu
