#include "daemon/session.h"

#include <sys/epoll.h>
#include <sys/socket.h>

namespace atl::daemon {

Session::Session(uint64_t id, UniqueFd socket, ipc::PeerCredentials peer, int epoll_fd)
    : id_(id), socket_(std::move(socket)), peer_(peer), epoll_fd_(epoll_fd) {}

void Session::ArmWritable(bool on) {
  epoll_event ev{};
  ev.events = on ? (EPOLLIN | EPOLLOUT) : EPOLLIN;
  if (reading_paused()) ev.events &= ~EPOLLIN;
  ev.data.u64 = id_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, socket_.get(), &ev);
}

bool Session::OutboxFull() const {
  return outbox_.size() >= max_unread_ || outbox_bytes_ >= kMaxUnreadBytes;
}

bool Session::OutboxDrained() const {
  return outbox_.size() <= max_unread_ / 2 && outbox_bytes_ <= kMaxUnreadBytes / 2;
}

void Session::UpdateEvents() {
  bool pause = OutboxFull() || (reading_paused() && !OutboxDrained());
  reading_paused_.store(pause, std::memory_order_release);
  ArmWritable(!outbox_.empty());
}

void Session::EnableRings(std::unique_ptr<ipc::SharedRings> rings) {
  std::lock_guard lock(send_mutex_);
  rings_ = std::move(rings);
}

void Session::Send(const wire::ServerMessage& message) {
  if (closed()) return;
  std::lock_guard lock(send_mutex_);
  message.SerializeToString(&scratch_);
  if (outbox_.empty()) {
    if (rings_ != nullptr && scratch_.size() <= ipc::kMaxRingPacketBytes) {
      bool wake = false;
      Status pushed = rings_->from_creator().Push(scratch_, &wake);
      if (pushed.ok()) {
        if (wake) ipc::RingDoorbell(socket_.get());
        return;
      }
      if (pushed.code() == Code::kDataLoss) {
        // The client wrote into the daemon's side of the ring. The I/O thread sees the hang-up
        // and closes the connection.
        ::shutdown(socket_.get(), SHUT_RDWR);
        return;
      }
      // Full: the socket takes it. The client matches replies by id, so order does not matter.
    }
    Status sent = ipc::SendPacket(socket_.get(), scratch_, -1, /*dont_wait=*/true);
    if (sent.ok()) return;
    if (sent.code() != Code::kResourceExhausted) return;  // peer gone: the I/O thread cleans up
    outbox_.push_back(scratch_);
    outbox_bytes_ += scratch_.size();
    UpdateEvents();
    return;
  }
  outbox_.push_back(scratch_);
  outbox_bytes_ += scratch_.size();
  if (!reading_paused() && OutboxFull()) UpdateEvents();
}

bool Session::Flush() {
  std::lock_guard lock(send_mutex_);
  while (!outbox_.empty()) {
    Status sent = ipc::SendPacket(socket_.get(), outbox_.front(), -1, /*dont_wait=*/true);
    if (sent.code() == Code::kResourceExhausted) return true;
    if (!sent.ok()) return false;
    outbox_bytes_ -= outbox_.front().size();
    outbox_.pop_front();
    if (reading_paused() && OutboxDrained()) UpdateEvents();
  }
  UpdateEvents();
  return true;
}

}  // namespace atl::daemon
