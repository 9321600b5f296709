#include "daemon/server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <spdlog/spdlog.h>
#include <cerrno>
#include <cstdlib>

#include "atoll.pb.h"

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

wire::ServerMessage Goodbye(const Status& status) {
  wire::ServerMessage m;
  m.mutable_goodbye()->mutable_status()->set_code(static_cast<uint32_t>(status.code()));
  m.mutable_goodbye()->mutable_status()->set_message(status.message());
  return m;
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

  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(socket_path_).parent_path(), ec);
  ATOLL_ASSIGN_OR_RETURN(listener_, ipc::Listen(socket_path_, config_.socket_mode));
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
      if (errno != EAGAIN) spdlog::warn("accept: {}", std::strerror(errno));
      return;
    }
    UniqueFd socket(fd);
    auto peer = ipc::GetPeerCredentials(fd);
    if (!peer.ok()) continue;
    if (sessions_.size() >= config_.max_connections) {
      wire::ServerMessage m = Goodbye(
          ResourceExhaustedError("atolld already serves " + std::to_string(sessions_.size()) +
                                 " connections (limit max_connections); try again later"));
      (void)ipc::SendPacket(fd, m.SerializeAsString(), -1, true);
      continue;
    }
    uint64_t id = next_session_++;
    auto session = std::make_shared<Session>(id, std::move(socket), *peer, epoll_.get());
    if (!AddToEpoll(epoll_.get(), session->fd(), id).ok()) continue;
    spdlog::debug("connection {} from pid {} uid {} gid {}", id, peer->pid, peer->uid, peer->gid);
    sessions_.emplace(id, std::move(session));
  }
}

void Server::Close(const std::shared_ptr<Session>& session, const Status& why) {
  if (!why.ok()) {
    spdlog::info("closing connection {} (pid {}): {}", session->id(), session->peer().pid,
                 why.message());
    session->Send(Goodbye(why));
  }
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, session->fd(), nullptr);
  engine_->Disconnect(session);
  session->buffers.clear();
  sessions_.erase(session->id());
}

void Server::ReadFrom(const std::shared_ptr<Session>& session) {
  // Bounded per wake-up so one busy client cannot starve the others.
  for (int i = 0; i < 64; ++i) {
    UniqueFd fd;
    size_t size = 0;
    auto received = ipc::RecvPacket(session->fd(), &recv_buffer_, &size, &fd, true);
    if (!received.ok()) {
      return Close(session, InvalidArgumentError("protocol error: " + received.status().message()));
    }
    if (*received == ipc::RecvResult::kWouldBlock) return;
    if (*received == ipc::RecvResult::kClosed) return Close(session, OkStatus());
    if (!Handle(session, recv_buffer_.data(), size, std::move(fd))) return;
  }
}

bool Server::Handle(const std::shared_ptr<Session>& session, const char* data, size_t size,
                    UniqueFd fd) {
  thread_local wire::ClientMessage message;
  if (!message.ParseFromArray(data, static_cast<int>(size))) {
    Close(session, InvalidArgumentError("protocol error: a message could not be decoded"));
    return false;
  }
  if (!session->handshaken) {
    if (!message.has_hello()) {
      Close(session, InvalidArgumentError("protocol error: the first message must be Hello"));
      return false;
    }
    if (message.hello().protocol_version() != wire::PROTOCOL_VERSION_CURRENT) {
      Close(session,
            FailedPreconditionError("protocol version mismatch: the client speaks version " +
                                    std::to_string(message.hello().protocol_version()) +
                                    ", this atolld speaks version " +
                                    std::to_string(wire::PROTOCOL_VERSION_CURRENT) +
                                    "; use a libatoll and atolld of the same release"));
      return false;
    }
    session->handshaken = true;
    wire::ServerMessage welcome;
    welcome.mutable_welcome()->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
    welcome.mutable_welcome()->set_daemon_version(ATOLL_VERSION);
    session->Send(welcome);
    return true;
  }
  switch (message.kind_case()) {
    case wire::ClientMessage::kSubmit:
      engine_->Submit(session, message.submit());
      return true;
    case wire::ClientMessage::kBufferAdd: {
      uint64_t id = message.buffer_add().buffer_id();
      if (!fd.valid()) {
        session->refused_buffers[id] = "no file descriptor came with it";
        return true;
      }
      if (session->buffers.size() >= config_.max_buffers_per_connection) {
        session->refused_buffers[id] =
            "too many buffers on one connection (limit "
            "max_buffers_per_connection)";
        return true;
      }
      auto buffer = MappedBuffer::Map(std::move(fd), message.buffer_add().size_bytes());
      if (!buffer.ok()) {
        if (session->refused_buffers.size() < 1024) {
          session->refused_buffers[id] = buffer.status().message();
        }
        return true;
      }
      engine_->RegisterBuffer(*buffer);
      session->buffers[id] = std::move(buffer).value();
      return true;
    }
    case wire::ClientMessage::kBufferRemove:
      session->buffers.erase(message.buffer_remove().buffer_id());
      return true;
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
          r->set_json(engine_->StatusJson(sessions_.size(), buffers, bytes));
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
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), events, 64, deadlines ? 5 : -1);
    if (n < 0 && errno != EINTR) {
      spdlog::critical("epoll_wait: {}", std::strerror(errno));
      return 1;
    }
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
        if (events[i].events & EPOLLOUT) {
          if (!session->Flush()) {
            Close(session, OkStatus());
            continue;
          }
        }
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ReadFrom(session);
      }
    }
    deadlines = engine_->ExpireDeadlines();
  }
}

}  // namespace atl::daemon
