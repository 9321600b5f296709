// A bounded cache of device memory blocks, one per GPU. Launches take blocks for their arrays and
// give them back when they complete; freed blocks stay cached by size class for the next launch,
// since cuMemAlloc and cuMemFree cost far more than a request (and cuMemFree synchronises the
// device). The bytes held (in use plus cached) never exceed the cap: the least recently used
// cached blocks are freed to make room. Pure code: memory comes from the Allocate callback, so
// the logic is unit-tested without a GPU.
//
// Thread safety: every method may be called concurrently. The callbacks run without the pool's
// lock held.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace atl::cuda {

class BlockPool {
 public:
  // Allocates `bytes`; returns 0 with the handle, or an atoll_status_code with a message
  // (ATOLL_RESOURCE_EXHAUSTED when the device is out of memory: the pool then frees its cached
  // blocks and tries once more).
  using Allocate = std::function<int(uint64_t bytes, uint64_t* handle, std::string* error)>;
  using Free = std::function<void(uint64_t handle)>;

  struct Block {
    uint64_t handle = 0;
    uint64_t bytes = 0;       // the size class, at least what was asked for
    uint64_t generation = 0;  // blocks of an older generation are forgotten on release
  };

  BlockPool(uint64_t cap_bytes, Allocate allocate, Free free);
  ~BlockPool();  // frees the cached blocks
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // A block of at least `bytes` (> 0). Returns 0, or ATOLL_RESOURCE_EXHAUSTED when the block
  // does not fit under the cap beside the blocks in use, or the device has no memory left, or
  // the allocator's own error; `error` then says which.
  int Acquire(uint64_t bytes, Block* block, std::string* error);
  // Gives a block back to the cache. Blocks of an older generation (before Forget) are dropped.
  void Release(const Block& block);
  // Frees every cached block.
  void Trim();
  // After the context was reset, which freed every allocation: forgets all blocks without
  // freeing them and starts a new generation.
  void Forget();

  uint64_t cap_bytes() const { return cap_bytes_; }
  uint64_t in_use_bytes() const;
  uint64_t cached_bytes() const;

  // The size class of a request: powers of two up to 1 MiB (at least 512 bytes), then eight
  // classes per power of two, so a block wastes at most 1/8 of what it holds.
  static uint64_t SizeClass(uint64_t bytes);

 private:
  struct Cached {
    uint64_t handle;
    uint64_t bytes;
  };
  // Removes the least recently used cached block; the caller frees it. REQUIRES: mutex_ held.
  Cached EvictOldest();

  const uint64_t cap_bytes_;
  Allocate allocate_;
  Free free_;
  mutable std::mutex mutex_;
  uint64_t generation_ = 1;    // GUARDED_BY(mutex_)
  uint64_t in_use_bytes_ = 0;  // GUARDED_BY(mutex_): including reservations in flight
  uint64_t cached_bytes_ = 0;  // GUARDED_BY(mutex_)
  std::list<Cached> lru_;      // GUARDED_BY(mutex_): oldest first
  std::map<uint64_t, std::vector<std::list<Cached>::iterator>> by_class_;  // GUARDED_BY(mutex_)
};

}  // namespace atl::cuda
