// The daemon's I/O loop: accepts connections, reads and decodes client messages, hands requests to
// the engine, answers queries, watches the repository for changes and shuts down on SIGTERM or
// SIGINT. Single-threaded: everything here runs on the thread that calls Run().
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/unique_fd.h"
#include "daemon/config.h"
#include "daemon/engine.h"
#include "daemon/session.h"

namespace atl::daemon {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it starts later, so
// they reach the server's signalfd instead of killing the process. Call first thing in main().
void BlockShutdownSignals();

class Server {
 public:
  Server(Config config, std::string socket_path, Engine* engine);
  ~Server();

  // Listens on the socket, opens a signalfd for SIGTERM/SIGINT/SIGHUP and starts watching the
  // repository. Errors name the socket path or the failing call.
  Status Start();
  // Serves until SIGTERM or SIGINT, then shuts down gracefully. Returns the exit code.
  int Run();

 private:
  void Accept();
  void ReadFrom(const std::shared_ptr<Session>& session);
  // Handles what the clients' shared rings hold (up to a bound per connection). True if any.
  bool DrainRings();
  // One client's ring: up to 64 messages, or with `until_early_handled` until no socket packet
  // waits for its mark. True if it handled any.
  bool DrainRing(const std::shared_ptr<Session>& session, bool until_early_handled = false);
  // A ring's empty packet: the next socket packet takes its place in the order. False when the
  // session was closed.
  bool HandleSocketPacketInOrder(const std::shared_ptr<Session>& session);
  // Before epoll_wait sleeps: marks the rings so the clients ring their doorbells. False (nothing
  // marked) when a ring holds a message after all.
  bool RingsPrepareToSleep();
  void RingsAwake();
  // Answers Hello: Welcome, with shared rings when the client asked and the daemon allows.
  void Welcome(const std::shared_ptr<Session>& session, bool wants_rings);
  // False when the session must be closed.
  bool Handle(const std::shared_ptr<Session>& session, const char* data, size_t size, UniqueFd fd);
  // REQUIRES: `session` is the caller's own reference, not the one in sessions_, which this erases.
  void Close(const std::shared_ptr<Session>& session, const Status& why);
  void WatchRepository();
  // Closes connections that did not send Hello within handshake_timeout_ms.
  void ExpireHandshakes();
  // How long epoll_wait may sleep: until the next handshake deadline, at most `cap_ms` (-1: none).
  int WaitTimeoutMs(int cap_ms) const;
  // Accepts one pending connection and closes it at once: the way out when no fd is left. False
  // when none could be accepted.
  bool ShedConnection();

  Config config_;
  std::string socket_path_;
  Engine* engine_;
  UniqueFd epoll_;
  UniqueFd listener_;
  UniqueFd signals_;
  UniqueFd inotify_;
  uint64_t next_session_ = 16;  // ids below are reserved for the server's own fds
  std::unordered_map<uint64_t, std::shared_ptr<Session>> sessions_;
  std::vector<std::shared_ptr<Session>> ring_sessions_;  // the open ones with shared rings
  std::string recv_buffer_;
  std::unordered_map<uid_t, uint32_t> connections_per_uid_;
  // Connections awaiting Hello, by deadline; accept order is deadline order.
  std::deque<std::pair<std::chrono::steady_clock::time_point, uint64_t>> handshake_deadlines_;
  UniqueFd spare_fd_;  // closed to accept and shed a connection when fds run out
  std::chrono::steady_clock::time_point last_fd_warning_;
  // Refusals, reported by `atoll status`.
  uint64_t connections_refused_ = 0;
  uint64_t handshake_timeouts_ = 0;
  uint64_t protocol_errors_ = 0;
  uint64_t buffers_refused_ = 0;
};

}  // namespace atl::daemon
