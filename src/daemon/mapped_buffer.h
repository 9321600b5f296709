// A client's buffer as the daemon sees it: the client's memfd mapped into the daemon.
// Immutable after creation; shared by the session and the requests that use it, unmapped when the
// last holder lets go. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "common/status.h"
#include "common/unique_fd.h"

namespace atl::daemon {

class MappedBuffer {
 public:
  // Maps `fd` after checking that it is a memfd sealed against shrinking (so the client cannot
  // truncate it under a running kernel) and at least `size_bytes` long. The caller keeps `fd`.
  static StatusOr<std::shared_ptr<MappedBuffer>> Map(int fd, uint64_t size_bytes);
  ~MappedBuffer();
  MappedBuffer(const MappedBuffer&) = delete;
  MappedBuffer& operator=(const MappedBuffer&) = delete;

  uint8_t* data() const { return data_; }
  uint64_t size_bytes() const { return size_bytes_; }
  // Runs just before the mapping goes away (to unregister it from backends that pinned it).
  // REQUIRES: called before the buffer is shared with other threads.
  void set_on_unmap(std::function<void(void*)> f) { on_unmap_ = std::move(f); }

 private:
  MappedBuffer() = default;
  uint8_t* data_ = nullptr;
  uint64_t size_bytes_ = 0;
  uint64_t mapped_bytes_ = 0;
  std::function<void(void*)> on_unmap_;
};

}  // namespace atl::daemon
