// The daemon's I/O loop: accepts connections, reads and decodes client messages, hands requests to
// the engine, answers queries, watches the repository for changes and shuts down on SIGTERM or
// SIGINT. Single-threaded: everything here runs on the thread that calls Run().
#pragma once

#include <memory>
#include <string>
#include <unordered_map>

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
  // False when the session must be closed.
  bool Handle(const std::shared_ptr<Session>& session, const char* data, size_t size, UniqueFd fd);
  void Close(const std::shared_ptr<Session>& session, const Status& why);
  void WatchRepository();

  Config config_;
  std::string socket_path_;
  Engine* engine_;
  UniqueFd epoll_;
  UniqueFd listener_;
  UniqueFd signals_;
  UniqueFd inotify_;
  uint64_t next_session_ = 16;  // ids below are reserved for the server's own fds
  std::unordered_map<uint64_t, std::shared_ptr<Session>> sessions_;
  std::string recv_buffer_;
};

}  // namespace atl::daemon
