// The process's Atoll buffers: memfd-backed mappings that the daemon can map too.
// Thread safety: all functions are thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/status.h"

namespace atl::client {

struct Buffer {
  uint64_t id = 0;  // unique in this process, never reused
  int fd = -1;      // owned: closed when the Buffer is destroyed
  void* base = nullptr;
  size_t size_bytes = 0;    // what the caller asked for
  size_t mapped_bytes = 0;  // what is mapped (>= size_bytes, at least one page)
  ~Buffer();
};

// Where an array argument lies: the buffer holding it and the offset of its first byte.
struct BufferRange {
  std::shared_ptr<const Buffer> buffer;
  uint64_t offset = 0;
};

// Allocates a zero-filled buffer sealed against shrinking. RESOURCE_EXHAUSTED or the system
// error on failure.
StatusOr<std::shared_ptr<const Buffer>> AllocateBuffer(size_t size_bytes);

// Removes the buffer starting at `base` from the table; it is unmapped once no request still
// holds it. NOT_FOUND if `base` is not the start of an Atoll buffer.
StatusOr<std::shared_ptr<const Buffer>> ReleaseBuffer(void* base);

// The buffer starting at `base`, or NOT_FOUND.
StatusOr<std::shared_ptr<const Buffer>> FindBufferAt(const void* base);

// The buffer containing [data, data + size_bytes). INVALID_ARGUMENT naming what is wrong when the
// pointer is outside every buffer or the range runs past its buffer's end.
StatusOr<BufferRange> FindRange(const void* data, size_t size_bytes);

}  // namespace atl::client
