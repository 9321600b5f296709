// One client connection: its socket, peer credentials, buffers, and the requests it has in flight.
//
// Threads: the server's I/O thread reads and owns `buffers`; any thread may Send (completions are
// sent from backend threads). The engine guards `requests` with its own mutex.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "atoll.pb.h"
#include "common/unique_fd.h"
#include "daemon/mapped_buffer.h"
#include "ipc/ring.h"
#include "ipc/socket.h"

namespace atl::daemon {

class Session {
 public:
  Session(uint64_t id, UniqueFd socket, ipc::PeerCredentials peer, int epoll_fd);

  uint64_t id() const { return id_; }
  int fd() const { return socket_.get(); }
  const ipc::PeerCredentials& peer() const { return peer_; }

  // Sends at once when the socket has room, else queues the message and asks the I/O thread to
  // flush when it becomes writable; never blocks. Dropped once the session is closed.
  void Send(const wire::ServerMessage& message);
  // I/O thread, on EPOLLOUT: sends what was queued. False when the peer has gone.
  bool Flush();
  bool closed() const { return closed_.load(std::memory_order_acquire); }
  void MarkClosed() { closed_.store(true, std::memory_order_release); }

  // Backpressure against a client that sends requests but does not read the replies: once
  // `max_unread` replies or kMaxUnreadBytes are queued, the I/O thread stops reading this
  // connection (epoll stops reporting it readable) until Flush has sent half of them. Set once,
  // before the first Send.
  static constexpr size_t kMaxUnreadBytes = 4 << 20;
  void set_max_unread_replies(size_t max_unread) { max_unread_ = max_unread; }
  bool reading_paused() const { return reading_paused_.load(std::memory_order_acquire); }

  // Shared rings, for a client that asked at Hello: replies go through them while they have room
  // (else through the socket, as without rings). I/O thread, once, before any request.
  void EnableRings(std::unique_ptr<ipc::SharedRings> rings);
  bool has_rings() const { return rings_ != nullptr; }
  // REQUIRES: has_rings(). I/O thread only.
  ipc::Ring& ring_from_client() { return rings_->to_creator(); }

  // I/O thread only.
  bool handshaken = false;
  // With rings: socket packets read before the ring reached their place in the order.
  std::deque<std::pair<std::string, UniqueFd>> early_packets;
  std::unordered_map<uint64_t, std::shared_ptr<MappedBuffer>> buffers;
  std::unordered_map<uint64_t, std::string> refused_buffers;  // id -> why, for clear errors
  uint64_t buffer_bytes = 0;  // declared sizes of `buffers`, for max_buffer_bytes_per_connection

  // Guarded by the engine's mutex: client request id -> engine job id.
  std::unordered_map<uint64_t, uint64_t> requests;
  // Guarded by the engine's mutex: the scheduler tenant of this connection's requests (0 until
  // its first request), and the groups of its user, for exclusive devices.
  uint32_t tenant = 0;
  std::vector<uint32_t> groups;

 private:
  void ArmWritable(bool on);   // REQUIRES: send_mutex_ held
  void UpdateEvents();         // REQUIRES: send_mutex_ held; epoll interest from outbox and pause
  bool OutboxFull() const;     // REQUIRES: send_mutex_ held
  bool OutboxDrained() const;  // REQUIRES: send_mutex_ held

  const uint64_t id_;
  UniqueFd socket_;
  const ipc::PeerCredentials peer_;
  const int epoll_fd_;
  std::atomic<bool> closed_{false};
  std::unique_ptr<ipc::SharedRings> rings_;  // set before any Send from another thread
  std::mutex send_mutex_;
  std::deque<std::string> outbox_;  // GUARDED_BY(send_mutex_)
  std::string scratch_;             // GUARDED_BY(send_mutex_)
  size_t max_unread_ = SIZE_MAX;
  size_t outbox_bytes_ = 0;                  // GUARDED_BY(send_mutex_)
  std::atomic<bool> reading_paused_{false};  // written under send_mutex_
};

}  // namespace atl::daemon
