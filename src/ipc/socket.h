// Unix SOCK_SEQPACKET transport: one message per packet, optional fd passing, peer credentials.
// Functions are thread-safe as the kernel makes them: a packet is sent or received whole, so
// several threads may send on one socket without interleaving.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"
#include "common/unique_fd.h"

namespace atl::ipc {

// Largest packet either side accepts; larger ones are refused as protocol errors.
inline constexpr size_t kMaxPacketBytes = 64 * 1024;

struct PeerCredentials {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
};

// Creates, binds and listens on `path` (removing a stale socket file first) with permissions
// `mode`, owned by `owner` and `group` (-1 keeps the process's). Ownership and mode are set before
// listen(), so no client can connect while they are still the defaults. The returned fd is
// non-blocking and close-on-exec.
StatusOr<UniqueFd> Listen(const std::string& path, mode_t mode,
                          uid_t owner = static_cast<uid_t>(-1),
                          gid_t group = static_cast<gid_t>(-1));

// Connects to `path`; blocking, close-on-exec. UNAVAILABLE when nobody listens there (the message
// says how to start the daemon), PERMISSION_DENIED when the socket's mode forbids it.
StatusOr<UniqueFd> Connect(const std::string& path);

// Sends one packet, with `pass_fd` in SCM_RIGHTS when >= 0. With `dont_wait`, a full socket gives
// RESOURCE_EXHAUSTED instead of blocking. UNAVAILABLE when the peer has gone.
Status SendPacket(int socket, std::string_view bytes, int pass_fd = -1, bool dont_wait = false);

enum class RecvResult { kPacket, kWouldBlock, kClosed };

// Receives one packet into `buffer` (grown once to kMaxPacketBytes + 1 and then reused, so the hot
// path neither allocates nor clears) with its length in `*size`, and a passed fd into
// `received_fd` if one came (extra fds are closed). OUT_OF_RANGE for a packet larger than
// kMaxPacketBytes (the packet is consumed). With `dont_wait`, kWouldBlock when nothing is queued.
StatusOr<RecvResult> RecvPacket(int socket, std::string* buffer, size_t* size,
                                UniqueFd* received_fd, bool dont_wait = false);

// RecvPacket that first polls for up to `spin_us` microseconds before it sleeps: on a link that
// carries a request's every step (atolld and a device process), waking a sleeping thread costs
// more than the poll.
StatusOr<RecvResult> RecvPacketSpinning(int socket, std::string* buffer, size_t* size,
                                        UniqueFd* received_fd, uint32_t spin_us);

// How long a thread that waits for the next step of a request polls before it sleeps, when nobody
// configured it: 0 on hosts with 2 cores or fewer, where the poll takes the core the other side
// needs; kDefaultSpinUs elsewhere, where a wake-up costs more than polling for it.
inline constexpr uint32_t kDefaultSpinUs = 100;
uint32_t DefaultSpinUs();

StatusOr<PeerCredentials> GetPeerCredentials(int socket);

}  // namespace atl::ipc
