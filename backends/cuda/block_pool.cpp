#include "block_pool.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "atoll/status.h"

namespace atl::cuda {
namespace {

std::string Bytes(uint64_t bytes) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  if (bytes >= kMiB && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + " MiB";
  return std::to_string(bytes) + " bytes";
}

}  // namespace

BlockPool::BlockPool(uint64_t cap_bytes, Allocate allocate, Free free)
    : cap_bytes_(cap_bytes), allocate_(std::move(allocate)), free_(std::move(free)) {}

BlockPool::~BlockPool() { Trim(); }

uint64_t BlockPool::SizeClass(uint64_t bytes) {
  constexpr uint64_t kMinimum = 512;
  constexpr uint64_t kFine = uint64_t{1} << 20;
  if (bytes <= kMinimum) return kMinimum;
  if (bytes <= kFine) return std::bit_ceil(bytes);
  // Eight classes between consecutive powers of two.
  uint64_t step = std::bit_floor(bytes) / 8;
  uint64_t rounded = (bytes + step - 1) / step * step;
  return rounded < bytes ? bytes : rounded;  // overflow near 2^64: no rounding
}

uint64_t BlockPool::in_use_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_use_bytes_;
}

uint64_t BlockPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_bytes_;
}

BlockPool::Cached BlockPool::EvictOldest() {
  Cached oldest = lru_.front();
  auto& list = by_class_[oldest.bytes];
  list.erase(std::find(list.begin(), list.end(), lru_.begin()));
  if (list.empty()) by_class_.erase(oldest.bytes);
  lru_.pop_front();
  cached_bytes_ -= oldest.bytes;
  return oldest;
}

int BlockPool::Acquire(uint64_t bytes, Block* block, std::string* error) {
  const uint64_t size = SizeClass(bytes);
  std::vector<Cached> to_free;
  uint64_t generation = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation = generation_;
    auto found = by_class_.find(size);
    if (found != by_class_.end()) {
      // The most recently released block of the class: its pages are the likeliest to be warm.
      auto it = found->second.back();
      found->second.pop_back();
      if (found->second.empty()) by_class_.erase(found);
      *block = Block{it->handle, it->bytes, generation_};
      lru_.erase(it);
      cached_bytes_ -= size;
      in_use_bytes_ += size;
      return ATOLL_OK;
    }
    if (size > cap_bytes_ || in_use_bytes_ > cap_bytes_ - size) {
      *error = "needs a device buffer of " + Bytes(size) + " but the GPU's pool is capped at " +
               Bytes(cap_bytes_) + " (\"pool_bytes\"), of which launches in flight hold " +
               Bytes(in_use_bytes_);
      return ATOLL_RESOURCE_EXHAUSTED;
    }
    while (in_use_bytes_ + cached_bytes_ + size > cap_bytes_) to_free.push_back(EvictOldest());
    in_use_bytes_ += size;  // reserved while the allocator runs
  }
  for (const Cached& c : to_free) free_(c.handle);
  to_free.clear();

  uint64_t handle = 0;
  std::string problem;
  int status = allocate_(size, &handle, &problem);
  if (status == ATOLL_RESOURCE_EXHAUSTED) {
    // The device is full: cached blocks of this pool may be what fills it.
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (!lru_.empty()) to_free.push_back(EvictOldest());
    }
    if (!to_free.empty()) {
      for (const Cached& c : to_free) free_(c.handle);
      problem.clear();
      status = allocate_(size, &handle, &problem);
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (status != ATOLL_OK) {
    if (generation == generation_) in_use_bytes_ -= size;
    *error = "cannot allocate a device buffer of " + Bytes(size) + ": " + problem;
    return status;
  }
  *block = Block{handle, size, generation};
  return ATOLL_OK;
}

void BlockPool::Release(const Block& block) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (block.generation != generation_) return;
  in_use_bytes_ -= block.bytes;
  lru_.push_back(Cached{block.handle, block.bytes});
  by_class_[block.bytes].push_back(std::prev(lru_.end()));
  cached_bytes_ += block.bytes;
}

void BlockPool::Trim() {
  std::vector<Cached> to_free;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!lru_.empty()) to_free.push_back(EvictOldest());
  }
  for (const Cached& c : to_free) free_(c.handle);
}

void BlockPool::Forget() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++generation_;
  lru_.clear();
  by_class_.clear();
  cached_bytes_ = 0;
  in_use_bytes_ = 0;
}

}  // namespace atl::cuda
