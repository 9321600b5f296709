#include "daemon/server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include <google/protobuf/stubs/logging.h>

#include "atoll.pb.h"
#include "common/hop_trace.h"
#include "daemon/protocol.h"
#include "ipc/scratch_message.h"

namespace atl::daemon {

namespace {

constexpr uint64_t kListenerId = 1;
constexpr uint64_t kSignalId = 2;
constexpr uint64_t kInotifyId = 3;

Status AddToEpoll(int epoll, int fd, uint64_t id) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = id;
  if (::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &ev) != 0) return ErrnoError("epoll_ctl", errno);
  return OkStatus();
}

// Refused buffers are remembered for clear errors, but only this many per connection, so that a
// client cannot grow the daemon's memory by sending refusals.
constexpr size_t kMaxRefusedBuffers = 1024;

// A client with shared rings sends a socket packet and then marks its place in the ring; this
// many read ahead of their marks mean a client that does not follow the protocol.
constexpr size_t kMaxEarlyPackets = 64;

// Connections need one fd each; the soft limit is often 1024, below max_connections' default.
void RaiseFileLimit(uint32_t max_connections) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) (void)::getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < uint64_t{max_connections} + 64) {
    spdlog::warn(
        "the open-file limit ({}) is below max_connections ({}) plus the daemon's own fds; "
        "connections beyond it are refused (raise LimitNOFILE or lower max_connections)",
        limit.rlim_cur, max_connections);
  }
}

wire::ServerMessage Goodbye(const Status& status) {
  wire::ServerMessage m;
  m.mutable_goodbye()->mutable_status()->set_code(static_cast<uint32_t>(status.code()));
  m.mutable_goodbye()->mutable_status()->set_message(status.message());
  return m;
}

void QuietProtobufLogs() {
  // Protobuf logs at ERROR level each string field of a client's packet that is not UTF-8: the
  // client's mistake, answered by closing its connection, and no reason to let clients write
  // the daemon's error log.
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel level, const char* file, int line, const std::string& what) {
        if (level == google::protobuf::LOGLEVEL_FATAL) {
          spdlog::critical("protobuf {}:{}: {}", file, line, what);
        } else {
          spdlog::debug("protobuf {}:{}: {}", file, line, what);
        }
      });
}

}  // namespace

void BlockShutdownSignals() {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

Server::Server(Config config, std::string socket_path, Engine* engine)
    : config_(std::move(config)), socket_path_(std::move(socket_path)), engine_(engine) {}

Server::~Server() = default;

Status Server::Start() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.valid()) return ErrnoError("epoll_create1", errno);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  // REQUIRES: main() blocked these signals before starting any thread (BlockShutdownSignals), so
  // that only this signalfd sees them.
  signals_.reset(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!signals_.valid()) return ErrnoError("signalfd", errno);
  ATOLL_RETURN_IF_ERROR(AddToEpoll(epoll_.get(), signals_.get(), kSignalId));

  RaiseFileLimit(config_.max_connections);
  QuietProtobufLogs();
  uid_t owner = static_cast<uid_t>(-1);
  gid_t group = static_cast<gid_t>(-1);
  if (!config_.socket_owner.empty()) {
    ATOLL_ASSIGN_OR_RETURN(owner, LookupUser("socket_owner", config_.socket_owner));
  }
  if (!config_.socket_group.empty()) {
    ATOLL_ASSIGN_OR_RETURN(group, LookupGroup("socket_group", config_.socket_group));
  }
  if (!config_.admin_group.empty()) {
    ATOLL_ASSIGN_OR_RETURN(gid_t admins, LookupGroup("admin_group", config_.admin_group));
    Status applied = repository::Repository(config_.repository).ApplyAdminGroup(admins);
    if (!applied.ok()) return Status(applied.code(), "admin_group: " + applied.message());
  }
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(socket_path_).parent_path(), ec);
  ATOLL_ASSIGN_OR_RETURN(listener_, ipc::Listen(socket_path_, config_.socket_mode, owner, group));
  spare_fd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ATOLL_RETURN_IF_ERROR(AddToEpoll(epoll_.get(), listener_.get(), kListenerId));
  WatchRepository();
  return OkStatus();
}

void Server::WatchRepository() {
  std::error_code ec;
  std::filesystem::create_directories(config_.repository, ec);
  inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify_.valid() ||
      ::inotify_add_watch(inotify_.get(), config_.repository.c_str(),
                          IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_CREATE) < 0 ||
      !AddToEpoll(epoll_.get(), inotify_.get(), kInotifyId).ok()) {
    spdlog::warn("cannot watch the repository '{}' for changes ({}); installs need a restart",
                 config_.repository.string(), std::strerror(errno));
    inotify_.reset();
  }
}

void Server::Accept() {
  for (;;) {
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      // Left pending, the connection would keep the listener readable and spin this loop.
      if ((errno == EMFILE || errno == ENFILE) && ShedConnection()) continue;
      if (errno != EAGAIN) spdlog::warn("accept: {}", std::strerror(errno));
      return;
    }
    UniqueFd socket(fd);
    auto peer = ipc::GetPeerCredentials(fd);
    if (!peer.ok()) continue;
    auto refuse = [&](const std::string& why) {
      ++connections_refused_;
      spdlog::info("refused a connection from pid {} uid {}: {}", peer->pid, peer->uid, why);
      wire::ServerMessage m = Goodbye(ResourceExhaustedError(why));
      (void)ipc::SendPacket(fd, m.SerializeAsString(), -1, true);
    };
    if (sessions_.size() >= config_.max_connections) {
      refuse("atolld already serves " + std::to_string(sessions_.size()) +
             " connections (limit max_connections); try again later");
      continue;
    }
    auto per_uid = connections_per_uid_.find(peer->uid);
    if (per_uid != connections_per_uid_.end() &&
        per_uid->second >= config_.max_connections_per_uid) {
      refuse("uid " + std::to_string(peer->uid) + " already has " +
             std::to_string(per_uid->second) +
             " connections to atolld (limit max_connections_per_uid); close some, or share one "
             "connection between the threads of a process");
      continue;
    }
    uint64_t id = next_session_++;
    auto session = std::make_shared<Session>(id, std::move(socket), *peer, epoll_.get());
    session->set_max_unread_replies(config_.max_unread_replies_per_connection);
    if (!AddToEpoll(epoll_.get(), session->fd(), id).ok()) continue;
    spdlog::debug("connection {} from pid {} uid {} gid {}", id, peer->pid, peer->uid, peer->gid);
    sessions_.emplace(id, std::move(session));
    ++connections_per_uid_[peer->uid];
    handshake_deadlines_.emplace_back(
        std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.handshake_timeout_ms),
        id);
  }
}

bool Server::ShedConnection() {
  if (!spare_fd_.valid()) return false;
  spare_fd_.reset();
  int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    ++connections_refused_;
    wire::ServerMessage m = Goodbye(ResourceExhaustedError(
        "atolld has no file descriptors left (its open-file limit); try again later"));
    (void)ipc::SendPacket(fd, m.SerializeAsString(), -1, true);
    ::close(fd);
  }
  spare_fd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  auto now = std::chrono::steady_clock::now();
  if (now - last_fd_warning_ > std::chrono::seconds(10)) {
    last_fd_warning_ = now;
    spdlog::warn("out of file descriptors: refusing new connections (see max_connections)");
  }
  return fd >= 0;
}

void Server::ExpireHandshakes() {
  const auto now = std::chrono::steady_clock::now();
  while (!handshake_deadlines_.empty()) {
    auto [deadline, id] = handshake_deadlines_.front();
    auto it = sessions_.find(id);
    if (it != sessions_.end() && !it->second->handshaken) {
      if (deadline > now) return;
      ++handshake_timeouts_;
      std::shared_ptr<Session> session = it->second;  // Close erases the map's copy
      Close(
          session,
          Status(Code::kDeadlineExceeded,
                 "protocol error: no Hello within " + std::to_string(config_.handshake_timeout_ms) +
                     " ms (handshake_timeout_ms); atolld closes connections that do not speak"));
    }
    handshake_deadlines_.pop_front();
  }
}

int Server::WaitTimeoutMs(int cap_ms) const {
  if (handshake_deadlines_.empty()) return cap_ms;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  handshake_deadlines_.front().first - std::chrono::steady_clock::now())
                  .count() +
              1;
  int wait = static_cast<int>(std::clamp<int64_t>(left, 0, INT_MAX));
  return cap_ms < 0 ? wait : std::min(cap_ms, wait);
}

void Server::Close(const std::shared_ptr<Session>& session, const Status& why) {
  if (sessions_.count(session->id()) == 0) return;  // closed already
  if (!why.ok()) {
    spdlog::info("closing connection {} (pid {}): {}", session->id(), session->peer().pid,
                 why.message());
    session->Send(Goodbye(why));
  }
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, session->fd(), nullptr);
  if (session->has_rings()) {
    ring_sessions_.erase(std::remove(ring_sessions_.begin(), ring_sessions_.end(), session),
                         ring_sessions_.end());
  }
  engine_->Disconnect(session);
  session->buffers.clear();
  session->buffer_bytes = 0;
  const uid_t uid = session->peer().uid;
  sessions_.erase(session->id());
  auto per_uid = connections_per_uid_.find(uid);
  if (per_uid != connections_per_uid_.end() && --per_uid->second == 0) {
    connections_per_uid_.erase(per_uid);
  }
}

void Server::ReadFrom(const std::shared_ptr<Session>& session) {
  // Bounded per wake-up so one busy client cannot starve the others.
  for (int i = 0; i < 64; ++i) {
    if (session->reading_paused()) return;  // resumed by Flush once the client reads
    UniqueFd fd;
    size_t size = 0;
    auto received = ipc::RecvPacket(session->fd(), &recv_buffer_, &size, &fd, true);
    if (!received.ok()) {
      ++protocol_errors_;
      return Close(session, InvalidArgumentError("protocol error: " + received.status().message()));
    }
    if (*received == ipc::RecvResult::kWouldBlock) return;
    if (*received == ipc::RecvResult::kClosed) return Close(session, OkStatus());
    if (session->has_rings()) {
      if (ipc::IsDoorbell(recv_buffer_.data(), size) && !fd.valid()) continue;  // DrainRings looks
      if (session->early_packets.size() >= kMaxEarlyPackets) {
        ++protocol_errors_;
        return Close(session, InvalidArgumentError(
                                  "protocol error: socket packets without their place in the "
                                  "shared ring"));
      }
      session->early_packets.emplace_back(std::string(recv_buffer_.data(), size), std::move(fd));
      // Its mark follows it into the ring at once: read the ring up to it, so that socket reads
      // running ahead of ring reads do not pile packets up here.
      DrainRing(session, /*until_early_handled=*/true);
      if (sessions_.count(session->id()) == 0) return;  // closed
      continue;
    }
    if (!Handle(session, recv_buffer_.data(), size, std::move(fd))) return;
  }
}

bool Server::HandleSocketPacketInOrder(const std::shared_ptr<Session>& session) {
  if (!session->early_packets.empty()) {
    auto [bytes, fd] = std::move(session->early_packets.front());
    session->early_packets.pop_front();
    return Handle(session, bytes.data(), bytes.size(), std::move(fd));
  }
  for (;;) {
    UniqueFd fd;
    size_t size = 0;
    // The client sent the packet before it marked the ring, so it is queued already.
    auto received = ipc::RecvPacket(session->fd(), &recv_buffer_, &size, &fd, true);
    if (received.ok() && *received == ipc::RecvResult::kClosed) {
      Close(session, OkStatus());
      return false;
    }
    if (!received.ok() || *received == ipc::RecvResult::kWouldBlock) {
      ++protocol_errors_;
      Close(session, InvalidArgumentError(
                         "protocol error: " +
                         (received.ok() ? std::string("the shared ring marks a socket packet that "
                                                      "was not sent")
                                        : received.status().message())));
      return false;
    }
    if (ipc::IsDoorbell(recv_buffer_.data(), size) && !fd.valid()) continue;
    return Handle(session, recv_buffer_.data(), size, std::move(fd));
  }
}

bool Server::DrainRing(const std::shared_ptr<Session>& session, bool until_early_handled) {
  bool worked = false;
  // Bounded per pass, as ReadFrom is, so one busy client cannot starve the others; reading up to
  // a mark is bounded by what a ring can hold.
  const size_t bound = until_early_handled ? ipc::kRingCapacity / sizeof(uint32_t) : 64;
  for (size_t i = 0; i < bound; ++i) {
    if (until_early_handled && session->early_packets.empty()) break;
    if (session->reading_paused()) break;  // resumed by Flush once the client reads
    size_t size = 0;
    auto popped = session->ring_from_client().Pop(&recv_buffer_, &size);
    if (!popped.ok()) {
      ++protocol_errors_;
      Close(session, InvalidArgumentError("protocol error: " + popped.status().message()));
      return true;
    }
    if (*popped == ipc::RecvResult::kWouldBlock) break;
    ATOLL_HOP("d.pop");
    worked = true;
    bool open = size == 0 ? HandleSocketPacketInOrder(session)
                          : Handle(session, recv_buffer_.data(), size, UniqueFd());
    if (!open) return true;
  }
  return worked;
}

bool Server::DrainRings() {
  bool worked = false;
  // By index, holding each session that has work: Close removes sessions from the vector. An
  // empty ring, the common case while polling, costs one load.
  for (size_t i = 0; i < ring_sessions_.size(); ++i) {
    if (ring_sessions_[i]->ring_from_client().Empty()) continue;
    std::shared_ptr<Session> session = ring_sessions_[i];
    worked |= DrainRing(session);
  }
  return worked;
}

bool Server::RingsPrepareToSleep() {
  for (size_t i = 0; i < ring_sessions_.size(); ++i) {
    // A paused connection is not read until Flush resumes it, which an EPOLLOUT wakes.
    if (ring_sessions_[i]->reading_paused()) continue;
    if (!ring_sessions_[i]->ring_from_client().PrepareToSleep()) {
      for (size_t j = 0; j < i; ++j) ring_sessions_[j]->ring_from_client().Awake();
      return false;
    }
  }
  return true;
}

void Server::RingsAwake() {
  for (const auto& session : ring_sessions_) session->ring_from_client().Awake();
}

void Server::Welcome(const std::shared_ptr<Session>& session, bool wants_rings) {
  wire::ServerMessage welcome;
  welcome.mutable_welcome()->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
  welcome.mutable_welcome()->set_daemon_version(ATOLL_VERSION);
  if (!config_.shared_rings || !wants_rings) return session->Send(welcome);
  auto rings = ipc::SharedRings::Create();
  if (!rings.ok()) {
    spdlog::warn("connection {}: no shared rings ({}); it uses its socket alone", session->id(),
                 rings.status().message());
    return session->Send(welcome);
  }
  welcome.mutable_welcome()->set_ring_capacity((*rings)->capacity());
  // The first packet of the connection, so the socket has room for it.
  Status sent = ipc::SendPacket(session->fd(), welcome.SerializeAsString(), (*rings)->fd(),
                                /*dont_wait=*/true);
  if (!sent.ok()) {
    spdlog::info("connection {}: could not send Welcome: {}", session->id(), sent.message());
    return;  // the client has gone; the hang-up closes the session
  }
  (*rings)->CloseFd();
  session->EnableRings(std::move(rings).value());
  ring_sessions_.push_back(session);
}

bool Server::Handle(const std::shared_ptr<Session>& session, const char* data, size_t size,
                    UniqueFd fd) {
  // The I/O thread's alone; Handle does not run again before it returns.
  thread_local ipc::ScratchMessage<wire::ClientMessage> scratch;
  wire::ClientMessage& message = scratch.Fresh();
  Status decoded = DecodeClientPacket(data, size, session->handshaken, &message);
  if (!decoded.ok()) {
    ++protocol_errors_;
    Close(session, decoded);
    return false;
  }
  if (!session->handshaken) {
    session->handshaken = true;
    Welcome(session, message.hello().shared_rings());
    return true;
  }
  switch (message.kind_case()) {
    case wire::ClientMessage::kSubmit:
      engine_->Submit(session, message.submit());
      return true;
    case wire::ClientMessage::kBufferAdd: {
      const uint64_t id = message.buffer_add().buffer_id();
      const uint64_t size_bytes = message.buffer_add().size_bytes();
      auto refuse = [&](std::string why) {
        ++buffers_refused_;
        if (session->refused_buffers.size() < kMaxRefusedBuffers) {
          session->refused_buffers[id] = std::move(why);
        }
      };
      if (!fd.valid()) {
        refuse("no file descriptor came with it");
        return true;
      }
      if (session->buffers.size() >= config_.max_buffers_per_connection) {
        refuse("too many buffers on one connection (limit max_buffers_per_connection)");
        return true;
      }
      if (size_bytes > config_.max_buffer_bytes_per_connection - session->buffer_bytes) {
        refuse("its " + std::to_string(size_bytes) + " bytes would take this connection past " +
               std::to_string(config_.max_buffer_bytes_per_connection) +
               " mapped bytes (limit max_buffer_bytes_per_connection; " +
               std::to_string(session->buffer_bytes) + " mapped now); free buffers first");
        return true;
      }
      auto buffer = MappedBuffer::Map(fd.get(), size_bytes);
      if (!buffer.ok()) {
        refuse(buffer.status().message());
        return true;
      }
      engine_->RegisterBuffer(*buffer, fd.get());
      fd.reset();  // the mapping (and any device process it was passed to) keeps the memory
      std::shared_ptr<MappedBuffer>& slot = session->buffers[id];
      if (slot != nullptr) session->buffer_bytes -= slot->size_bytes();
      slot = std::move(buffer).value();
      session->buffer_bytes += size_bytes;
      session->refused_buffers.erase(id);
      return true;
    }
    case wire::ClientMessage::kBufferRemove: {
      const uint64_t id = message.buffer_remove().buffer_id();
      auto it = session->buffers.find(id);
      if (it != session->buffers.end()) {
        session->buffer_bytes -= it->second->size_bytes();
        session->buffers.erase(it);
      }
      session->refused_buffers.erase(id);
      return true;
    }
    case wire::ClientMessage::kCancel:
      engine_->Cancel(session, message.cancel().request_id());
      return true;
    case wire::ClientMessage::kQuery: {
      wire::ServerMessage reply;
      auto* r = reply.mutable_query_reply();
      r->set_query_id(message.query().query_id());
      switch (message.query().kind()) {
        case wire::Query::KIND_ACCELERATORS:
          r->set_json(engine_->AcceleratorsJson());
          break;
        case wire::Query::KIND_DEVICES:
          r->set_json(engine_->DevicesJson());
          break;
        case wire::Query::KIND_STATUS: {
          size_t buffers = 0;
          uint64_t bytes = 0;
          for (const auto& [sid, s] : sessions_) {
            buffers += s->buffers.size();
            for (const auto& [bid, b] : s->buffers) bytes += b->size_bytes();
          }
          // The server's own counters join the engine's answer.
          nlohmann::json status =
              nlohmann::json::parse(engine_->StatusJson(sessions_.size(), buffers, bytes));
          size_t paused = 0;
          for (const auto& [sid, s] : sessions_) paused += s->reading_paused() ? 1 : 0;
          status["refused"] = {{"connections", connections_refused_},
                               {"handshake_timeouts", handshake_timeouts_},
                               {"protocol_errors", protocol_errors_},
                               {"buffers", buffers_refused_}};
          status["connections_reading_paused"] = paused;
          r->set_json(status.dump());
          break;
        }
        default:
          r->mutable_status()->set_code(static_cast<uint32_t>(Code::kInvalidArgument));
          r->mutable_status()->set_message("unknown query kind");
      }
      session->Send(reply);
      return true;
    }
    default:
      Close(session, InvalidArgumentError("protocol error: unexpected message"));
      return false;
  }
}

int Server::Run() {
  spdlog::info("atolld {} listening on {}", ATOLL_VERSION, socket_path_);
  epoll_event events[64];
  bool deadlines = false;
  const auto spin = std::chrono::microseconds(config_.io_spin_us);
  // While the thread polls, it looks at the shared rings on every pass but at epoll (signals, new
  // connections, socket packets) only this often: epoll_wait is a system call.
  constexpr auto kEpollPollInterval = std::chrono::microseconds(20);
  // Request deadlines and handshakes are checked at least this often while polling.
  constexpr auto kExpireInterval = std::chrono::milliseconds(1);
  auto last_event = std::chrono::steady_clock::now();
  auto last_epoll = last_event;
  auto last_expire = last_event;
  // A request that came through a ring may carry a deadline: the next check must not be skipped.
  bool expire_due = false;
  auto expire = [&] {
    deadlines = engine_->ExpireDeadlines();
    ExpireHandshakes();
    last_expire = std::chrono::steady_clock::now();
    expire_due = false;
  };
  for (;;) {
    // Poll while messages came recently (a client waiting on its reply sends its next request
    // within microseconds), then sleep until the next one.
    const bool worked = DrainRings();
    auto now = std::chrono::steady_clock::now();
    if (worked) {
      last_event = now;
      expire_due = true;
    }
    int n = 0;
    bool polled = true;
    if (now - last_event < spin || worked) {
      if (!ring_sessions_.empty() && now - last_epoll < kEpollPollInterval) continue;
      n = ::epoll_wait(epoll_.get(), events, 64, 0);
      last_epoll = now;
    } else if (expire_due) {
      expire();  // before sleeping: the sleep's length depends on the deadlines
      continue;
    } else if (RingsPrepareToSleep()) {
      polled = false;
      n = ::epoll_wait(epoll_.get(), events, 64, WaitTimeoutMs(deadlines ? 5 : -1));
      RingsAwake();
    } else {
      continue;  // a ring got a message
    }
    if (n > 0) last_event = std::chrono::steady_clock::now();
    if (n < 0 && errno != EINTR) {
      spdlog::critical("epoll_wait: {}", std::strerror(errno));
      return 1;
    }
    if (n == 0 && polled && !expire_due && now - last_expire < kExpireInterval) continue;
    for (int i = 0; i < n; ++i) {
      uint64_t id = events[i].data.u64;
      if (id == kListenerId) {
        Accept();
      } else if (id == kSignalId) {
        signalfd_siginfo info;
        while (::read(signals_.get(), &info, sizeof(info)) == sizeof(info)) {
          if (info.ssi_signo == SIGHUP) {
            engine_->ReloadRepository();
            continue;
          }
          spdlog::info("signal {}: shutting down", info.ssi_signo);
          listener_.reset();
          ::unlink(socket_path_.c_str());
          size_t left = engine_->Shutdown(std::chrono::milliseconds(config_.shutdown_grace_ms));
          for (auto& [sid, session] : sessions_) {
            session->Send(Goodbye(UnavailableError("atolld is shutting down")));
            session->Flush();
          }
          if (left != 0) {
            // A kernel that outlives the grace period cannot be interrupted; its clients have
            // been told the daemon is going, so exit without waiting for it.
            spdlog::warn("{} requests still running after {} ms; exiting without them", left,
                         config_.shutdown_grace_ms);
            std::_Exit(0);
          }
          sessions_.clear();
          return 0;
        }
      } else if (id == kInotifyId) {
        char buf[4096];
        while (::read(inotify_.get(), buf, sizeof(buf)) > 0) {
        }
        engine_->ReloadRepository();
      } else {
        auto it = sessions_.find(id);
        if (it == sessions_.end()) continue;
        std::shared_ptr<Session> session = it->second;
        if (session->reading_paused() && (events[i].events & (EPOLLHUP | EPOLLERR))) {
          Close(session, OkStatus());  // gone without reading its replies
          continue;
        }
        if (events[i].events & EPOLLOUT) {
          if (!session->Flush()) {
            Close(session, OkStatus());
            continue;
          }
        }
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ReadFrom(session);
      }
    }
    expire();
  }
}

}  // namespace atl::daemon
