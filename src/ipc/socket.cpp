#include "ipc/socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace atl::ipc {

namespace {

Status FillAddress(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty()) return InvalidArgumentError("socket path is empty");
  if (path.size() >= sizeof(addr->sun_path)) {
    return InvalidArgumentError("socket path '" + path + "' is longer than " +
                                std::to_string(sizeof(addr->sun_path) - 1) +
                                " bytes; choose a shorter path");
  }
  std::memcpy(addr->sun_path, path.data(), path.size());
  return OkStatus();
}

}  // namespace

StatusOr<UniqueFd> Listen(const std::string& path, mode_t mode, uid_t owner, gid_t group) {
  sockaddr_un addr;
  ATOLL_RETURN_IF_ERROR(FillAddress(path, &addr));
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoError("socket", errno);
  // A socket file left by a daemon that died is stale only if nobody answers on it.
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return FailedPreconditionError("'" + path + "' exists and is not a socket; remove it or " +
                                     "choose another socket path");
    }
    UniqueFd probe(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      return AlreadyExistsError("another daemon is already listening on '" + path + "'");
    }
    ::unlink(path.c_str());
  }
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoError("bind '" + path + "'", errno);
  }
  if ((owner != static_cast<uid_t>(-1) || group != static_cast<gid_t>(-1)) &&
      ::chown(path.c_str(), owner, group) != 0) {
    int e = errno;
    ::unlink(path.c_str());
    return ErrnoError("chown '" + path + "' to uid " + std::to_string(static_cast<int>(owner)) +
                          " gid " + std::to_string(static_cast<int>(group)) +
                          " (socket_owner, socket_group)",
                      e);
  }
  // chown may clear set-id bits, so the mode is set after it.
  if (::chmod(path.c_str(), mode) != 0) return ErrnoError("chmod '" + path + "'", errno);
  if (::listen(fd.get(), SOMAXCONN) != 0) return ErrnoError("listen '" + path + "'", errno);
  return fd;
}

StatusOr<UniqueFd> Connect(const std::string& path) {
  sockaddr_un addr;
  ATOLL_RETURN_IF_ERROR(FillAddress(path, &addr));
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoError("socket", errno);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    if (e == ENOENT || e == ECONNREFUSED) {
      return UnavailableError("the Atoll daemon is not running: nothing listens on '" + path +
                              "' (" + std::strerror(e) +
                              "). Start it with `atolld` (or `atoll daemon`), or set ATOLL_SOCKET "
                              "to the socket of a running daemon");
    }
    if (e == EACCES || e == EPERM) {
      return PermissionDeniedError("permission denied connecting to '" + path +
                                   "': ask the administrator to add you to the daemon's socket "
                                   "group, or use a socket you may open");
    }
    return ErrnoError("connect '" + path + "'", e);
  }
  return fd;
}

Status SendPacket(int socket, std::string_view bytes, int pass_fd, bool dont_wait) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (pass_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
  }
  int flags = MSG_NOSIGNAL | (dont_wait ? MSG_DONTWAIT : 0);
  for (;;) {
    ssize_t n = ::sendmsg(socket, &msg, flags);
    if (n >= 0) return OkStatus();
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return ResourceExhaustedError("socket send buffer is full");
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
      return UnavailableError("the connection to the peer is closed");
    }
    if (errno == EMSGSIZE) {
      return OutOfRangeError("message of " + std::to_string(bytes.size()) +
                             " bytes is too large for the socket");
    }
    return ErrnoError("sendmsg", errno);
  }
}

StatusOr<RecvResult> RecvPacket(int socket, std::string* buffer, size_t* size,
                                UniqueFd* received_fd, bool dont_wait) {
  if (buffer->size() < kMaxPacketBytes + 1) buffer->resize(kMaxPacketBytes + 1);
  *size = 0;
  iovec iov{buffer->data(), kMaxPacketBytes + 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  int flags = MSG_CMSG_CLOEXEC | (dont_wait ? MSG_DONTWAIT : 0);
  ssize_t n;
  for (;;) {
    n = ::recvmsg(socket, &msg, flags);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return RecvResult::kWouldBlock;
    if (errno == ECONNRESET) return RecvResult::kClosed;
    return ErrnoError("recvmsg", errno);
  }
  bool got_fd = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (!got_fd && received_fd != nullptr) {
        received_fd->reset(fd);
        got_fd = true;
      } else {
        ::close(fd);
      }
    }
  }
  if (n == 0 && !got_fd) return RecvResult::kClosed;
  if ((msg.msg_flags & MSG_TRUNC) || static_cast<size_t>(n) > kMaxPacketBytes) {
    return OutOfRangeError("packet larger than " + std::to_string(kMaxPacketBytes) + " bytes");
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    return InvalidArgumentError("too many file descriptors in one packet");
  }
  *size = static_cast<size_t>(n);
  return RecvResult::kPacket;
}

StatusOr<RecvResult> RecvPacketSpinning(int socket, std::string* buffer, size_t* size,
                                        UniqueFd* received_fd, uint32_t spin_us) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
  while (spin_us > 0 && std::chrono::steady_clock::now() < until) {
    auto got = RecvPacket(socket, buffer, size, received_fd, /*dont_wait=*/true);
    if (!got.ok() || *got != RecvResult::kWouldBlock) return got;
  }
  return RecvPacket(socket, buffer, size, received_fd);
}

uint32_t DefaultSpinUs() {
  static const uint32_t spin_us = ::sysconf(_SC_NPROCESSORS_ONLN) > 2 ? kDefaultSpinUs : 0;
  return spin_us;
}

StatusOr<PeerCredentials> GetPeerCredentials(int socket) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return ErrnoError("getsockopt SO_PEERCRED", errno);
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

}  // namespace atl::ipc
