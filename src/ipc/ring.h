// Shared-memory rings: a one-way queue of packets in memory two processes share, beside the socket
// that joins them. While the consumer polls the ring, a packet crosses without a system call on
// either side; a consumer about to sleep says so in the ring, and the producer then rings a
// doorbell on the socket (a one-byte packet, kDoorbell) to wake it.
//
// One producer and one consumer at a time: callers serialise their own threads. The peer may be
// hostile (a client of atolld): every index and length read from the shared memory is checked
// before use, and a packet is copied out of the ring before anyone decodes it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "common/unique_fd.h"
#include "ipc/socket.h"

namespace atl::ipc {

// Packet bytes each ring holds; a power of two.
inline constexpr uint32_t kRingCapacity = 256 * 1024;
// The largest packet that travels in a ring: larger ones take the socket.
inline constexpr size_t kMaxRingPacketBytes = 16 * 1024;

// The doorbell: a one-byte packet no protobuf message encodes to (field number 0 is invalid).
inline constexpr std::string_view kDoorbell{"\0", 1};
inline bool IsDoorbell(const char* data, size_t size) { return size == 1 && data[0] == '\0'; }
// Sends a doorbell without blocking. A full socket needs none: its unread packets wake the peer.
void RingDoorbell(int socket);

class Ring {
 public:
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Producer. OK when pushed; then `*wake` tells that the consumer sleeps and this producer must
  // ring the doorbell (one producer is told per sleep). RESOURCE_EXHAUSTED when there is no room
  // now, INVALID_ARGUMENT for a packet larger than kMaxRingPacketBytes, DATA_LOSS when the peer
  // has corrupted the ring.
  Status Push(std::string_view packet, bool* wake);

  // Consumer. kPacket with the packet copied into `buffer` (grown once, then reused) and its
  // length in `*size`; kWouldBlock when the ring is empty; DATA_LOSS when the peer corrupted it.
  StatusOr<RecvResult> Pop(std::string* buffer, size_t* size);
  bool Empty() const;
  // Consumer, before it sleeps: marks the ring so the next push rings the doorbell, then looks
  // again. False (and unmarked) when a packet came meanwhile, so the consumer must not sleep.
  bool PrepareToSleep();
  // Consumer, once awake: pushes stop ringing the doorbell.
  void Awake();

 private:
  friend class SharedRings;
  struct Header;
  void Attach(Header* header, char* data, uint32_t capacity);
  void CopyIn(uint64_t position, const void* from, size_t size);
  void CopyOut(uint64_t position, void* to, size_t size) const;

  Header* header_ = nullptr;
  char* data_ = nullptr;
  uint32_t capacity_ = 0;
  // Each side keeps its own index and trusts the shared copy of the other's only after checking.
  uint64_t tail_ = 0;  // producer
  uint64_t head_ = 0;  // consumer
};

// Two rings in one memfd, one each way. The creator makes the memory, sealed against resizing so
// the peer cannot shrink it under the creator's mapping, and passes fd() to the peer, which maps
// it.
class SharedRings {
 public:
  static StatusOr<std::unique_ptr<SharedRings>> Create(uint32_t capacity = kRingCapacity);
  // Maps memory a peer created with `capacity`; checks its size and seals.
  static StatusOr<std::unique_ptr<SharedRings>> Map(int fd, uint32_t capacity);
  ~SharedRings();
  SharedRings(const SharedRings&) = delete;
  SharedRings& operator=(const SharedRings&) = delete;

  // The creator's memfd, to pass to the peer (invalid on the mapping side).
  int fd() const { return fd_.get(); }
  // Once the peer has the fd: the mapping keeps the memory.
  void CloseFd() { fd_.reset(); }
  uint32_t capacity() const { return capacity_; }
  // Creator -> peer, and peer -> creator.
  Ring& from_creator() { return rings_[0]; }
  Ring& to_creator() { return rings_[1]; }

 private:
  SharedRings() = default;
  static size_t BytesFor(uint32_t capacity);
  void Attach();

  UniqueFd fd_;
  void* memory_ = nullptr;
  size_t bytes_ = 0;
  uint32_t capacity_ = 0;
  Ring rings_[2];
};

}  // namespace atl::ipc
