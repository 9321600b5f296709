#include "ipc/ring.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace atl::ipc {

// The shared part of a ring: each index on its own cache line, so the two sides do not bounce
// one line between their cores on every packet.
struct Ring::Header {
  alignas(64) std::atomic<uint64_t> head;      // consumer's: bytes consumed
  alignas(64) std::atomic<uint64_t> tail;      // producer's: bytes published
  alignas(64) std::atomic<uint32_t> sleeping;  // consumer's: 1 while it sleeps on the socket
};

namespace {

static_assert(std::atomic<uint64_t>::is_always_lock_free &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "shared-memory atomics must be lock-free to work across processes");

// Each ring's header takes a page, so packet data starts page-aligned.
constexpr size_t kHeaderBytes = 4096;
constexpr uint32_t kLengthBytes = sizeof(uint32_t);

bool ValidCapacity(uint32_t capacity) {
  return capacity >= 2 * (kMaxRingPacketBytes + kLengthBytes) && capacity <= (64u << 20) &&
         (capacity & (capacity - 1)) == 0;
}

Status CorruptError(const std::string& what) {
  return Status(Code::kDataLoss, "the peer corrupted the shared ring: " + what);
}

}  // namespace

void RingDoorbell(int socket) { (void)SendPacket(socket, kDoorbell, -1, /*dont_wait=*/true); }

void Ring::Attach(Header* header, char* data, uint32_t capacity) {
  header_ = header;
  data_ = data;
  capacity_ = capacity;
  tail_ = 0;
  head_ = 0;
}

void Ring::CopyIn(uint64_t position, const void* from, size_t size) {
  if (size == 0) return;  // an empty packet's data may be null, which memcpy may not take
  const size_t offset = position & (capacity_ - 1);
  const size_t first = std::min<size_t>(size, capacity_ - offset);
  std::memcpy(data_ + offset, from, first);
  std::memcpy(data_, static_cast<const char*>(from) + first, size - first);
}

void Ring::CopyOut(uint64_t position, void* to, size_t size) const {
  if (size == 0) return;
  const size_t offset = position & (capacity_ - 1);
  const size_t first = std::min<size_t>(size, capacity_ - offset);
  std::memcpy(to, data_ + offset, first);
  std::memcpy(static_cast<char*>(to) + first, data_, size - first);
}

Status Ring::Push(std::string_view packet, bool* wake) {
  *wake = false;
  if (packet.size() > kMaxRingPacketBytes) {
    return InvalidArgumentError("a packet of " + std::to_string(packet.size()) +
                                " bytes is larger than a shared ring carries");
  }
  const uint64_t used = tail_ - header_->head.load(std::memory_order_acquire);
  if (used > capacity_) return CorruptError("its read index is out of range");
  const uint64_t need = kLengthBytes + packet.size();
  if (capacity_ - used < need) return ResourceExhaustedError("the shared ring is full");
  const auto length = static_cast<uint32_t>(packet.size());
  CopyIn(tail_, &length, kLengthBytes);
  CopyIn(tail_ + kLengthBytes, packet.data(), packet.size());
  tail_ += need;
  header_->tail.store(tail_, std::memory_order_release);
  // Pairs with PrepareToSleep's fence: either the consumer sees this packet before it sleeps, or
  // this producer sees that it sleeps.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  *wake = header_->sleeping.load(std::memory_order_relaxed) != 0 &&
          header_->sleeping.exchange(0, std::memory_order_acq_rel) != 0;
  return OkStatus();
}

StatusOr<RecvResult> Ring::Pop(std::string* buffer, size_t* size) {
  *size = 0;
  const uint64_t available = header_->tail.load(std::memory_order_acquire) - head_;
  if (available == 0) return RecvResult::kWouldBlock;
  if (available > capacity_ || available < kLengthBytes) {
    return CorruptError("its write index is out of range");
  }
  uint32_t length = 0;
  CopyOut(head_, &length, kLengthBytes);
  if (length > kMaxRingPacketBytes || kLengthBytes + uint64_t{length} > available) {
    return CorruptError("a packet's length is out of range");
  }
  if (buffer->size() < kMaxRingPacketBytes) buffer->resize(kMaxRingPacketBytes);
  CopyOut(head_ + kLengthBytes, buffer->data(), length);
  head_ += kLengthBytes + length;
  header_->head.store(head_, std::memory_order_release);
  *size = length;
  return RecvResult::kPacket;
}

bool Ring::Empty() const { return header_->tail.load(std::memory_order_acquire) == head_; }

bool Ring::PrepareToSleep() {
  header_->sleeping.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (Empty()) return true;
  Awake();
  return false;
}

void Ring::Awake() { header_->sleeping.store(0, std::memory_order_relaxed); }

size_t SharedRings::BytesFor(uint32_t capacity) { return 2 * (kHeaderBytes + capacity); }

void SharedRings::Attach() {
  char* base = static_cast<char*>(memory_);
  for (int i = 0; i < 2; ++i) {
    char* ring = base + i * (kHeaderBytes + capacity_);
    rings_[i].Attach(reinterpret_cast<Ring::Header*>(ring), ring + kHeaderBytes, capacity_);
  }
}

StatusOr<std::unique_ptr<SharedRings>> SharedRings::Create(uint32_t capacity) {
  if (!ValidCapacity(capacity)) {
    return InvalidArgumentError("shared ring capacity " + std::to_string(capacity) +
                                " is not a power of two between twice the largest ring packet "
                                "and 64 MiB");
  }
  std::unique_ptr<SharedRings> rings(new SharedRings());
  rings->capacity_ = capacity;
  rings->bytes_ = BytesFor(capacity);
  rings->fd_.reset(::memfd_create("atoll-rings", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!rings->fd_.valid()) return ErrnoError("memfd_create for shared rings", errno);
  if (::ftruncate(rings->fd_.get(), static_cast<off_t>(rings->bytes_)) != 0) {
    return ErrnoError("sizing shared rings", errno);
  }
  if (::fcntl(rings->fd_.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return ErrnoError("sealing shared rings", errno);
  }
  void* memory =
      ::mmap(nullptr, rings->bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, rings->fd_.get(), 0);
  if (memory == MAP_FAILED) return ErrnoError("mapping shared rings", errno);
  rings->memory_ = memory;  // a fresh memfd reads as zeros: both rings start empty and awake
  rings->Attach();
  return rings;
}

StatusOr<std::unique_ptr<SharedRings>> SharedRings::Map(int fd, uint32_t capacity) {
  if (!ValidCapacity(capacity)) {
    return InvalidArgumentError("the peer's shared ring capacity " + std::to_string(capacity) +
                                " is out of range");
  }
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return InvalidArgumentError("the peer's shared rings are not sealed against shrinking");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoError("fstat of shared rings", errno);
  std::unique_ptr<SharedRings> rings(new SharedRings());
  rings->capacity_ = capacity;
  rings->bytes_ = BytesFor(capacity);
  if (static_cast<uint64_t>(st.st_size) != rings->bytes_) {
    return InvalidArgumentError("the peer's shared rings are " + std::to_string(st.st_size) +
                                " bytes, not the " + std::to_string(rings->bytes_) + " expected");
  }
  void* memory = ::mmap(nullptr, rings->bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (memory == MAP_FAILED) return ErrnoError("mapping shared rings", errno);
  rings->memory_ = memory;
  rings->Attach();
  return rings;
}

SharedRings::~SharedRings() {
  if (memory_ != nullptr) ::munmap(memory_, bytes_);
}

}  // namespace atl::ipc
