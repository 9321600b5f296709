// One side of a socket with shared rings beside it (ring.h): sends through the outgoing ring when
// a packet fits and carries no fd, else on the socket; receives from the incoming ring and the
// socket, polling both before it sleeps on the socket. A link between two of the project's own
// processes uses it on both ends (atolld and a device process); atolld's I/O thread serves its
// clients' rings itself, from its epoll loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"
#include "common/unique_fd.h"
#include "ipc/ring.h"
#include "ipc/socket.h"

namespace atl::ipc {

// How a sender orders its socket packets with its ring packets.
enum class RingOrder {
  // Each socket packet's place in the order is marked by an empty packet in the ring, and the
  // receiver hands it out there; a full ring makes the sender wait, as a full socket would.
  kMarked,
  // Socket packets come whenever they come (the receiver matches messages by id); a full ring
  // sends the packet on the socket instead.
  kUnordered,
};

class RingChannel {
 public:
  // `out` and `in` may be null: that way goes through the socket alone. The rings must outlive
  // the channel. `send_order` is how this side sends, `receive_order` how the peer does.
  RingChannel(int socket, Ring* out, RingOrder send_order, Ring* in, RingOrder receive_order)
      : socket_(socket),
        out_(out),
        send_order_(send_order),
        in_(in),
        receive_order_(receive_order) {}
  RingChannel(const RingChannel&) = delete;
  RingChannel& operator=(const RingChannel&) = delete;

  // Sends one packet, with `fd` beside it on the socket when >= 0. UNAVAILABLE when the peer has
  // gone. Not thread-safe: callers serialise their sends.
  Status Send(std::string_view bytes, int fd = -1);

  // The peer's next packet, from the ring or the socket, after polling both for up to `spin_us`;
  // doorbells are consumed here. kClosed once the socket has ended and the ring is empty. A
  // received fd comes in `*fd` (socket packets only). With `dont_wait`, one look at each and
  // kWouldBlock when both are empty. One receiving thread at a time.
  StatusOr<RecvResult> Receive(std::string* buffer, size_t* size, UniqueFd* fd, uint32_t spin_us,
                               bool dont_wait = false);

 private:
  // A packet taken from the socket: false for a doorbell (consumed), else true with `*got` set to
  // what to return (a packet, kClosed or an error). Marked packets that came early are kept.
  bool TakeFromSocket(StatusOr<RecvResult> got, std::string* buffer, size_t* size, UniqueFd* fd,
                      StatusOr<RecvResult>* result);
  // The socket packet an empty ring packet marks: an early one, or the next on the socket.
  StatusOr<RecvResult> MarkedSocketPacket(std::string* buffer, size_t* size, UniqueFd* fd);

  const int socket_;
  Ring* const out_;
  const RingOrder send_order_;
  Ring* const in_;
  const RingOrder receive_order_;
  bool socket_closed_ = false;
  std::deque<std::pair<std::string, UniqueFd>> early_;  // socket packets ahead of their marks
};

}  // namespace atl::ipc
