// The cuda backend's configuration: the JSON object atolld passes to open() from
// `backends.cuda` of its configuration (docs/backends/cuda.md lists every field).
// Pure code (no CUDA): unit-tested without a GPU.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace atl::cuda {

struct Config {
  // CUDA device ordinals to open, in order; absent: every GPU the driver lists.
  std::optional<std::vector<uint32_t>> devices;
  uint32_t streams = 4;             // compute units (CUDA streams) per GPU
  uint32_t completion_threads = 0;  // threads that complete launches, per GPU; 0: min(streams, 4)
  uint32_t spin_us = 200;           // how long a completion thread polls before it sleeps
  std::optional<uint64_t> pool_bytes;    // device memory cached per GPU; default 90% of the GPU's
  std::optional<uint64_t> pinned_bytes;  // client memory pinned at once; default 25% of the host's
  uint64_t zero_copy_bytes = 0;          // arrays up to this size are read in place over PCIe
  // The same for arrays the manifest marks "single_pass", which the kernel touches once, so reading
  // them in place costs no more than copying them.
  uint64_t single_pass_zero_copy_bytes = 16384;
  uint32_t kernel_timeout_ms = 0;  // 0: no watchdog
  bool own_context = true;    // a context of the backend's own per GPU, else the primary context
  std::string jit_cache_dir;  // "": PTX builds are cached in memory only
  std::string driver_library = "libcuda.so.1";
  std::string nvml_library = "libnvidia-ml.so.1";
  // Not a configuration field: set when the backend runs one GPU in a process of its own
  // (open_device), where a GPU that cannot recover ends the process and atolld starts another.
  bool own_process = false;

  uint32_t EffectiveCompletionThreads() const {
    if (completion_threads != 0) return completion_threads < streams ? completion_threads : streams;
    return streams < 4 ? streams : 4;
  }
};

// An example configuration, quoted in error messages.
inline constexpr const char* kConfigExample =
    R"({"devices": [0], "streams": 4, "pool_bytes": "8GiB", "kernel_timeout_ms": 10000})";

// Parses `text` into `config`. Returns "" on success, else what is wrong, naming the field.
// Unknown fields are refused, so a misspelt one is not ignored silently.
std::string ParseConfig(const char* text, Config* config);

// Reads a size: a non-negative integer of bytes, or a string such as "512MiB", "8GiB", "64KiB",
// "1G" (powers of 1024). Returns "" on success, else what is wrong.
std::string ParseBytes(const std::string& text, uint64_t* bytes);

}  // namespace atl::cuda
