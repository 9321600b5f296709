// libFuzzer target: the manifest parser (repository/manifest.h). A manifest that parses must
// serialise to JSON that parses again to the same manifest.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "repository/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto manifest = atl::repository::ParseManifest(text);
  if (!manifest.ok()) {
    if (manifest.status().code() != atl::Code::kInvalidArgument) std::abort();
    return 0;
  }
  std::string json = atl::repository::ManifestToJson(*manifest);
  auto again = atl::repository::ParseManifest(json);
  if (!again.ok()) {
    std::fprintf(stderr, "re-parsing a serialised manifest failed: %s\n%s\n",
                 again.status().message().c_str(), json.c_str());
    std::abort();
  }
  std::string json_again = atl::repository::ManifestToJson(*again);
  if (json_again != json) {
    std::fprintf(stderr, "a manifest changed on its way through JSON:\n%s\n%s\n", json.c_str(),
                 json_again.c_str());
    std::abort();
  }
  for (const auto& kernel : manifest->kernels) {
    for (const auto& arg : kernel.arguments) {
      if (arg.element_bytes == 0) std::abort();  // every accepted type has a size
    }
  }
  return 0;
}
