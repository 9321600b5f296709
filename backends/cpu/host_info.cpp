#include "host_info.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <string_view>

namespace atl::cpu {
namespace {

std::string_view Trim(std::string_view text) {
  const char* kSpace = " \t\r\n";
  size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  size_t end = text.find_last_not_of(kSpace);
  return text.substr(begin, end - begin + 1);
}

// x86 names the CPU in "model name"; some other architectures only in "Hardware" or "cpu model".
std::string CpuModel() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  std::string fallback;
  while (std::getline(cpuinfo, line)) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string_view key = Trim(std::string_view(line).substr(0, colon));
    std::string_view value = Trim(std::string_view(line).substr(colon + 1));
    if (value.empty()) continue;
    if (key == "model name") return std::string(value);
    if (fallback.empty() && (key == "Hardware" || key == "cpu model")) fallback = value;
  }
  return fallback.empty() ? "host CPU" : fallback;
}

}  // namespace

HostInfo ReadHostInfo() {
  HostInfo info;
  info.cpu_model = CpuModel();
  struct utsname name;
  info.machine = uname(&name) == 0 ? name.machine : "unknown";
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page_size > 0) info.memory_bytes = int64_t{pages} * int64_t{page_size};
  return info;
}

}  // namespace atl::cpu
