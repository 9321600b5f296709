// The client memory the backend has pinned (cuMemHostRegister). atolld registers each client
// buffer once, when it maps it (register_memory), and unregisters it just before unmapping it;
// launches then find the buffer holding each array and copy from it at pinned-memory speed,
// without an extra host copy. Pinned bytes are capped: when a new buffer would exceed the cap,
// the least recently used buffers not in use by a launch are unpinned (they stay registered and
// are pinned again when a launch next uses them, if they fit). A buffer that cannot be pinned is
// still used, through the driver's pageable-memory path.
// Pure code: pinning is done by callbacks, so the logic is unit-tested without a GPU.
//
// Thread safety: every method may be called concurrently; callbacks run with the registry's lock
// held and must not call back into it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

namespace atl::cuda {

class HostRegistry {
 public:
  // Pins [data, data + bytes) in the calling thread's current context; returns 0 with the
  // pointer devices use for `data` (zero-copy access), or an atoll_status_code and a message.
  using Pin =
      std::function<int(void* data, uint64_t bytes, uint64_t* device_pointer, std::string* error)>;
  // Unpins memory pinned in the context of device `owner`.
  using Unpin = std::function<void(void* data, uint32_t owner)>;

  HostRegistry(uint64_t cap_bytes, Unpin unpin);
  ~HostRegistry();  // unpins everything
  HostRegistry(const HostRegistry&) = delete;
  HostRegistry& operator=(const HostRegistry&) = delete;

  // Registers a client buffer and pins it in device `owner`'s context (current on this thread).
  // Returns 0 when pinned; else the buffer is kept registered but unpinned and the status says
  // why (larger than the cap, every other buffer in use, the driver refused). Registering a range
  // that overlaps a registered one fails with ATOLL_ALREADY_EXISTS.
  int Add(void* data, uint64_t bytes, uint32_t owner, const Pin& pin, std::string* error);
  // Forgets a buffer and unpins it, at once or, if launches use it, when the last one ends.
  void Remove(void* data);

  struct Lease {
    void* base = nullptr;         // the registered buffer holding the range; nullptr if none
    bool pinned = false;          // the range can be copied asynchronously
    uint64_t device_pointer = 0;  // zero-copy address of `base` on the devices, when pinned
  };
  // For a launch on device `device` (its context current): the registered buffer holding
  // [data, data + bytes), with its use count raised (call Release(lease.base) when the launch
  // ends) and pinned again if it had been unpinned and now fits. A range outside every
  // registered buffer gives base == nullptr and needs no Release.
  Lease Acquire(const void* data, uint64_t bytes, uint32_t device, const Pin& pin);
  void Release(void* base);
  // Device `owner`'s context was reset, taking its pinnings with it: they count as unpinned.
  void DropOwner(uint32_t owner);

  uint64_t cap_bytes() const { return cap_bytes_; }
  uint64_t pinned_bytes() const;
  size_t size() const;

 private:
  struct Region {
    uint64_t bytes = 0;
    bool pinned = false;
    uint32_t owner = 0;
    uint64_t device_pointer = 0;
    uint32_t uses = 0;
    uint64_t last_use = 0;
    bool removed = false;
  };
  // Pins `region` at `base` if it fits, unpinning least recently used idle regions to make room.
  // REQUIRES: mutex_ held.
  int PinLocked(uintptr_t base, Region* region, uint32_t owner, const Pin& pin, std::string* error);

  const uint64_t cap_bytes_;
  Unpin unpin_;
  mutable std::mutex mutex_;
  std::map<uintptr_t, Region> regions_;  // GUARDED_BY(mutex_), by start address
  uint64_t pinned_bytes_ = 0;            // GUARDED_BY(mutex_)
  uint64_t clock_ = 0;                   // GUARDED_BY(mutex_): ticks of use, for LRU
};

}  // namespace atl::cuda
