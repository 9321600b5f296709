#include "ipc/ring_channel.h"

#include <chrono>
#include <thread>

namespace atl::ipc {

namespace {

using Clock = std::chrono::steady_clock;

// While a receiver polls the ring, it looks at the socket this often: a look is a system call.
constexpr auto kSocketLookInterval = std::chrono::microseconds(20);

}  // namespace

Status RingChannel::Send(std::string_view bytes, int fd) {
  if (out_ == nullptr) return SendPacket(socket_, bytes, fd);
  const bool fits = fd < 0 && bytes.size() <= kMaxRingPacketBytes;
  if (!fits) {
    ATOLL_RETURN_IF_ERROR(SendPacket(socket_, bytes, fd));
    if (send_order_ == RingOrder::kUnordered) return OkStatus();
  }
  // The packet, or the empty packet that marks the socket packet's place.
  const std::string_view packet = fits ? bytes : std::string_view();
  for (int waits = 0;; ++waits) {
    bool wake = false;
    Status pushed = out_->Push(packet, &wake);
    if (pushed.ok()) {
      if (wake) RingDoorbell(socket_);
      return OkStatus();
    }
    if (pushed.code() != Code::kResourceExhausted) {
      return UnavailableError("the shared ring to the peer is unusable: " + pushed.message());
    }
    if (send_order_ == RingOrder::kUnordered) return SendPacket(socket_, bytes);  // it fits
    // Full: wait for the peer, waking it in case it sleeps; a doorbell that cannot be sent at
    // all means the peer has gone.
    Status rung = SendPacket(socket_, kDoorbell, -1, /*dont_wait=*/true);
    if (!rung.ok() && rung.code() != Code::kResourceExhausted) return rung;
    if (waits < 64) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

bool RingChannel::TakeFromSocket(StatusOr<RecvResult> got, std::string* buffer, size_t* size,
                                 UniqueFd* fd, StatusOr<RecvResult>* result) {
  if (got.ok() && *got == RecvResult::kWouldBlock) return false;
  if (got.ok() && *got == RecvResult::kClosed) {
    // What the peer pushed before it closed is in the ring: hand that out first.
    socket_closed_ = true;
    return false;
  }
  if (!got.ok()) {
    *result = std::move(got);
    return true;
  }
  if (IsDoorbell(buffer->data(), *size) && (fd == nullptr || !fd->valid())) return false;
  if (receive_order_ == RingOrder::kMarked) {
    early_.emplace_back(std::string(buffer->data(), *size),
                        fd != nullptr ? std::move(*fd) : UniqueFd());
    return false;
  }
  *result = RecvResult::kPacket;
  return true;
}

StatusOr<RecvResult> RingChannel::MarkedSocketPacket(std::string* buffer, size_t* size,
                                                     UniqueFd* fd) {
  if (!early_.empty()) {
    auto [bytes, early_fd] = std::move(early_.front());
    early_.pop_front();
    if (buffer->size() < bytes.size()) buffer->resize(kMaxPacketBytes + 1);
    bytes.copy(buffer->data(), bytes.size());
    *size = bytes.size();
    if (fd != nullptr) *fd = std::move(early_fd);
    return RecvResult::kPacket;
  }
  for (;;) {
    // Sent before it was marked, so it is queued; a peer that closes has nothing more to say.
    auto got = RecvPacket(socket_, buffer, size, fd);
    if (!got.ok() || *got != RecvResult::kPacket) {
      if (got.ok()) socket_closed_ = true;
      return got;
    }
    if (!IsDoorbell(buffer->data(), *size) || (fd != nullptr && fd->valid())) return got;
  }
}

StatusOr<RecvResult> RingChannel::Receive(std::string* buffer, size_t* size, UniqueFd* fd,
                                          uint32_t spin_us, bool dont_wait) {
  if (in_ == nullptr) {
    return dont_wait ? RecvPacket(socket_, buffer, size, fd, /*dont_wait=*/true)
                     : RecvPacketSpinning(socket_, buffer, size, fd, spin_us);
  }
  for (;;) {
    const auto start = Clock::now();
    const auto until = start + std::chrono::microseconds(spin_us);
    auto next_look = start;
    for (;;) {
      auto popped = in_->Pop(buffer, size);
      if (!popped.ok()) return popped;
      if (*popped == RecvResult::kPacket) {
        if (*size == 0 && receive_order_ == RingOrder::kMarked) {
          return MarkedSocketPacket(buffer, size, fd);
        }
        return popped;
      }
      if (socket_closed_) return RecvResult::kClosed;
      const auto now = Clock::now();
      // A receiver that does not poll goes straight to sleep on the socket, which reads it.
      if (now >= next_look && (spin_us > 0 || dont_wait)) {
        auto got = RecvPacket(socket_, buffer, size, fd, /*dont_wait=*/true);
        const bool nothing = got.ok() && *got == RecvResult::kWouldBlock;
        StatusOr<RecvResult> result = RecvResult::kWouldBlock;
        if (TakeFromSocket(std::move(got), buffer, size, fd, &result)) return result;
        if (socket_closed_ || !nothing) continue;  // the ring once more, and the socket again
        next_look = now + kSocketLookInterval;
        if (dont_wait && in_->Empty()) return RecvResult::kWouldBlock;
      }
      if (now >= until) break;
    }
    if (!in_->PrepareToSleep()) continue;
    auto got = RecvPacket(socket_, buffer, size, fd);
    in_->Awake();
    StatusOr<RecvResult> result = RecvResult::kWouldBlock;
    if (TakeFromSocket(std::move(got), buffer, size, fd, &result)) return result;
  }
}

}  // namespace atl::ipc
