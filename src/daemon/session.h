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

#include "atoll.pb.h"
#include "common/unique_fd.h"
#include "daemon/mapped_buffer.h"
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

  // I/O thread only.
  bool handshaken = false;
  std::unordered_map<uint64_t, std::shared_ptr<MappedBuffer>> buffers;
  std::unordered_map<uint64_t, std::string> refused_buffers;  // id -> why, for clear errors

  // Guarded by the engine's mutex: client request id -> engine job id.
  std::unordered_map<uint64_t, uint64_t> requests;

 private:
  void ArmWritable(bool on);  // REQUIRES: send_mutex_ held

  const uint64_t id_;
  UniqueFd socket_;
  const ipc::PeerCredentials peer_;
  const int epoll_fd_;
  std::atomic<bool> closed_{false};
  std::mutex send_mutex_;
  std::deque<std::string> outbox_;  // GUARDED_BY(send_mutex_)
  std::string scratch_;             // GUARDED_BY(send_mutex_)
};

}  // namespace atl::daemon
