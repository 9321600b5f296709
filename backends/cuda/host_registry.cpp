#include "host_registry.h"

#include <cstdint>
#include <string>
#include <utility>

#include "atoll/status.h"

namespace atl::cuda {

HostRegistry::HostRegistry(uint64_t cap_bytes, Unpin unpin)
    : cap_bytes_(cap_bytes), unpin_(std::move(unpin)) {}

HostRegistry::~HostRegistry() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [base, region] : regions_) {
    if (region.pinned) unpin_(reinterpret_cast<void*>(base), region.owner);
  }
}

uint64_t HostRegistry::pinned_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pinned_bytes_;
}

size_t HostRegistry::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return regions_.size();
}

int HostRegistry::PinLocked(uintptr_t base, Region* region, uint32_t owner, const Pin& pin,
                            std::string* error) {
  if (region->bytes > cap_bytes_) {
    *error = "the buffer's " + std::to_string(region->bytes) +
             " bytes are more than the cap on pinned memory (\"pinned_bytes\", " +
             std::to_string(cap_bytes_) + ")";
    return ATOLL_RESOURCE_EXHAUSTED;
  }
  while (pinned_bytes_ + region->bytes > cap_bytes_) {
    // The least recently used pinned region no launch is using.
    Region* oldest = nullptr;
    uintptr_t oldest_base = 0;
    for (auto& [other_base, other] : regions_) {
      if (!other.pinned || other.uses > 0 || &other == region) continue;
      if (oldest == nullptr || other.last_use < oldest->last_use) {
        oldest = &other;
        oldest_base = other_base;
      }
    }
    if (oldest == nullptr) {
      *error = "pinning its " + std::to_string(region->bytes) +
               " bytes would exceed the cap on pinned memory (\"pinned_bytes\", " +
               std::to_string(cap_bytes_) + "), and the pinned buffers are all in use";
      return ATOLL_RESOURCE_EXHAUSTED;
    }
    unpin_(reinterpret_cast<void*>(oldest_base), oldest->owner);
    oldest->pinned = false;
    pinned_bytes_ -= oldest->bytes;
  }
  uint64_t device_pointer = 0;
  int status = pin(reinterpret_cast<void*>(base), region->bytes, &device_pointer, error);
  if (status != ATOLL_OK) return status;
  region->pinned = true;
  region->owner = owner;
  region->device_pointer = device_pointer;
  pinned_bytes_ += region->bytes;
  return ATOLL_OK;
}

int HostRegistry::Add(void* data, uint64_t bytes, uint32_t owner, const Pin& pin,
                      std::string* error) {
  if (data == nullptr || bytes == 0) {
    *error = "cannot register an empty buffer";
    return ATOLL_INVALID_ARGUMENT;
  }
  auto base = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(mutex_);
  auto next = regions_.lower_bound(base);
  bool overlaps = next != regions_.end() && next->first < base + bytes;
  if (next != regions_.begin()) {
    auto previous = std::prev(next);
    overlaps = overlaps || previous->first + previous->second.bytes > base;
  }
  if (overlaps) {
    *error = "the buffer overlaps one already registered";
    return ATOLL_ALREADY_EXISTS;
  }
  Region& region = regions_[base];
  region.bytes = bytes;
  region.last_use = ++clock_;
  return PinLocked(base, &region, owner, pin, error);
}

void HostRegistry::Remove(void* data) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = regions_.find(reinterpret_cast<uintptr_t>(data));
  if (found == regions_.end()) return;
  Region& region = found->second;
  if (region.uses > 0) {
    region.removed = true;
    return;
  }
  if (region.pinned) {
    unpin_(data, region.owner);
    pinned_bytes_ -= region.bytes;
  }
  regions_.erase(found);
}

HostRegistry::Lease HostRegistry::Acquire(const void* data, uint64_t bytes, uint32_t device,
                                          const Pin& pin) {
  auto address = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(mutex_);
  auto next = regions_.upper_bound(address);
  if (next == regions_.begin()) return {};
  auto found = std::prev(next);
  Region& region = found->second;
  if (region.removed || address - found->first > region.bytes ||
      bytes > region.bytes - (address - found->first)) {
    return {};
  }
  region.last_use = ++clock_;
  ++region.uses;
  if (!region.pinned) {
    std::string ignored;
    PinLocked(found->first, &region, device, pin, &ignored);
  }
  return Lease{reinterpret_cast<void*>(found->first), region.pinned, region.device_pointer};
}

void HostRegistry::Release(void* base) {
  if (base == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = regions_.find(reinterpret_cast<uintptr_t>(base));
  if (found == regions_.end()) return;
  Region& region = found->second;
  if (region.uses > 0) --region.uses;
  if (region.uses == 0 && region.removed) {
    if (region.pinned) {
      unpin_(base, region.owner);
      pinned_bytes_ -= region.bytes;
    }
    regions_.erase(found);
  }
}

void HostRegistry::DropOwner(uint32_t owner) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [base, region] : regions_) {
    if (region.pinned && region.owner == owner) {
      region.pinned = false;
      pinned_bytes_ -= region.bytes;
    }
  }
}

}  // namespace atl::cuda
