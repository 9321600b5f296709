// libFuzzer target: atolld's configuration parser (daemon/config.h). A configuration that parses
// must print (--print-config) as JSON that parses again to the same configuration.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "daemon/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto config = atl::daemon::ParseConfig(text);
  if (!config.ok()) {
    if (config.status().code() != atl::Code::kInvalidArgument) std::abort();
    return 0;
  }
  std::string json = atl::daemon::ConfigToJson(*config);
  auto again = atl::daemon::ParseConfig(json);
  if (!again.ok()) {
    std::fprintf(stderr, "re-parsing a printed configuration failed: %s\n%s\n",
                 again.status().message().c_str(), json.c_str());
    std::abort();
  }
  if (atl::daemon::ConfigToJson(*again) != json) {
    std::fprintf(stderr, "a configuration changed on its way through JSON:\n%s\n", json.c_str());
    std::abort();
  }
  return 0;
}
