#include "client/connection.h"

#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "atoll.pb.h"
#include "atoll/atoll.hpp"
#include "common/hop_trace.h"
#include "ipc/ring.h"
#include "ipc/ring_channel.h"
#include "ipc/scratch_message.h"
#include "ipc/socket.h"

namespace atl::client {

void ResponseState::Complete(Status status, std::string payload) {
  std::optional<std::promise<void>> promise;
  {
    std::lock_guard lock(mutex_);
    if (done_) return;
    status_ = std::move(status);
    payload_ = std::move(payload);
    done_.store(true, std::memory_order_release);
    promise = std::move(promise_);
    promise_.reset();
  }
  cv_.notify_all();
  if (promise) {
    if (status_.ok()) {
      promise->set_value();
    } else {
      promise->set_exception(std::make_exception_ptr(
          atoll::error(static_cast<atoll_status_code>(status_.code()), status_.message())));
    }
  }
}

bool ResponseState::done() const {
  // Acquire pairs with Complete's release: status_ and payload_ are visible once done.
  return done_.load(std::memory_order_acquire);
}

bool ResponseState::SpinUntilDone(uint64_t limit_us) const {
  const uint64_t spin_us = std::min<uint64_t>(ClientSpinUs(), limit_us);
  if (spin_us == 0) return done();
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}

void ResponseState::Wait() const {
  if (SpinUntilDone(UINT64_MAX)) {
    ATOLL_HOP("c.woke");
    return;
  }
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return done(); });
  ATOLL_HOP("c.woke_slept");
}

bool ResponseState::WaitFor(uint64_t timeout_ms) const {
  // Never longer than the caller allows: a zero timeout only looks.
  if (SpinUntilDone(timeout_ms > UINT64_MAX / 1000 ? UINT64_MAX : timeout_ms * 1000)) return true;
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return done(); });
}

std::future<void> ResponseState::MakeFuture() {
  std::lock_guard lock(mutex_);
  promise_.emplace();
  return promise_->get_future();
}

uint32_t ClientSpinUs() {
  static const uint32_t spin_us = [] {
    const char* env = std::getenv("ATOLL_SPIN_US");
    if (env != nullptr && env[0] != '\0') {
      char* end = nullptr;
      unsigned long value = std::strtoul(env, &end, 10);
      if (*end == '\0' && env[0] != '-' && value <= 10000) return static_cast<uint32_t>(value);
    }
    return ipc::DefaultSpinUs();
  }();
  return spin_us;
}

namespace {

// Bumped in a forked child: the child must not speak on its parent's connection (its buffers would
// land in the parent's session, and no reader thread runs in the child).
std::atomic<uint64_t> fork_generation{0};
void OnForkChild() { fork_generation.fetch_add(1, std::memory_order_relaxed); }
const int fork_handler_installed = ::pthread_atfork(nullptr, nullptr, &OnForkChild);

}  // namespace

// One established connection. Replaced as a whole when the daemon goes away.
struct Connection::Live {
  uint64_t fork_generation = 0;
  UniqueFd socket;
  // Shared rings beside the socket, when the daemon offered them, and the channel over both:
  // the reader thread alone receives, senders send under Connection::send_mutex_.
  std::unique_ptr<ipc::SharedRings> rings;
  std::unique_ptr<ipc::RingChannel> channel;
  std::atomic<bool> closed{false};
  std::atomic<uint64_t> next_id{1};
  std::mutex pending_mutex;
  std::unordered_map<uint64_t, std::shared_ptr<ResponseState>>
      pending;                                // GUARDED_BY(pending_mutex)
  std::unordered_set<uint64_t> sent_buffers;  // GUARDED_BY(Connection::send_mutex_)
  std::string encode_scratch;                 // GUARDED_BY(Connection::send_mutex_)
  // Every Submit is built here, without touching the heap.
  ipc::ScratchMessage<wire::ClientMessage> submit_scratch;  // GUARDED_BY(Connection::send_mutex_)
};

Connection& Connection::Default() {
  static Connection* connection = new Connection();
  return *connection;
}

std::string Connection::SocketPath() {
  const char* env = std::getenv("ATOLL_SOCKET");
  return (env != nullptr && env[0] != '\0') ? env : ATOLL_DEFAULT_SOCKET;
}

bool Connection::UsableLocked() const {
  return live_ && !live_->closed.load(std::memory_order_acquire) &&
         live_->fork_generation == fork_generation.load(std::memory_order_relaxed);
}

Status Connection::EnsureConnectedLocked() {
  (void)fork_handler_installed;
  if (live_ && live_->fork_generation != fork_generation.load(std::memory_order_relaxed)) {
    // Inherited from the parent: drop it without failing the parent's requests, which are not
    // this process's to complete.
    live_->closed.store(true, std::memory_order_release);
    live_.reset();
  }
  if (live_ && !live_->closed.load(std::memory_order_acquire)) return OkStatus();
  std::string path = SocketPath();
  ATOLL_ASSIGN_OR_RETURN(UniqueFd fd, ipc::Connect(path));

  wire::ClientMessage hello;
  hello.mutable_hello()->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
  hello.mutable_hello()->set_client("libatoll " ATOLL_VERSION);
  hello.mutable_hello()->set_shared_rings(true);
  ATOLL_RETURN_IF_ERROR(ipc::SendPacket(fd.get(), hello.SerializeAsString()));

  // The handshake is synchronous and bounded: a wedged daemon must not hang the first submit.
  timeval tv{10, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  std::string buffer;
  size_t size = 0;
  UniqueFd rings_fd;
  auto received = ipc::RecvPacket(fd.get(), &buffer, &size, &rings_fd);
  if (!received.ok()) {
    if (received.status().code() == Code::kUnavailable ||
        received.status().message().find("Resource temporarily") != std::string::npos) {
      return UnavailableError("the Atoll daemon at '" + path + "' did not answer the handshake");
    }
    return received.status();
  }
  if (*received != ipc::RecvResult::kPacket) {
    return UnavailableError("the Atoll daemon at '" + path + "' closed the connection during the " +
                            "handshake");
  }
  wire::ServerMessage reply;
  if (!reply.ParseFromArray(buffer.data(), static_cast<int>(size))) {
    return InternalError("the Atoll daemon at '" + path + "' sent a malformed handshake reply");
  }
  if (reply.has_goodbye()) {
    return Status(CodeFromInt(static_cast<int>(reply.goodbye().status().code())),
                  reply.goodbye().status().message());
  }
  if (!reply.has_welcome()) {
    return InternalError("the Atoll daemon at '" + path + "' answered the handshake with " +
                         "an unexpected message");
  }
  timeval none{0, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));

  auto live = std::make_shared<Live>();
  if (reply.welcome().ring_capacity() != 0) {
    if (!rings_fd.valid()) {
      return InternalError("the Atoll daemon at '" + path + "' offered shared rings without " +
                           "their memory");
    }
    auto rings = ipc::SharedRings::Map(rings_fd.get(), reply.welcome().ring_capacity());
    if (!rings.ok()) {
      return Status(rings.status().code(), "mapping the shared rings of the Atoll daemon at '" +
                                               path + "': " + rings.status().message());
    }
    live->rings = std::move(rings).value();
  }
  // The daemon hands out socket packets unmarked (it matches nothing by order to them), and
  // expects the client's marked.
  ipc::Ring* to_daemon = live->rings ? &live->rings->to_creator() : nullptr;
  ipc::Ring* from_daemon = live->rings ? &live->rings->from_creator() : nullptr;
  live->channel = std::make_unique<ipc::RingChannel>(fd.get(), to_daemon, ipc::RingOrder::kMarked,
                                                     from_daemon, ipc::RingOrder::kUnordered);
  live->fork_generation = fork_generation.load(std::memory_order_relaxed);
  live->socket = std::move(fd);
  live_ = live;
  std::thread([this, live] { ReaderLoop(live); }).detach();
  return OkStatus();
}

void Connection::FailAll(const std::shared_ptr<Live>& live, const Status& status) {
  std::unordered_map<uint64_t, std::shared_ptr<ResponseState>> pending;
  {
    std::lock_guard lock(live->pending_mutex);
    live->closed.store(true, std::memory_order_release);
    pending.swap(live->pending);
  }
  for (auto& [id, state] : pending) state->Complete(status);
}

void Connection::ReaderLoop(std::shared_ptr<Live> live) {
  std::string buffer;
  ipc::ScratchMessage<wire::ServerMessage> scratch;
  Status close_status = UnavailableError(
      "the Atoll daemon restarted or stopped: its connection closed before the request "
      "completed, so the request's outputs are undefined. The next submit reconnects (sending "
      "its buffers again)");
  // After Goodbye, what else the daemon sent (in the ring, or on the socket when the ring was
  // full) is read without waiting, then the connection ends.
  bool draining = false;
  for (;;) {
    size_t size = 0;
    auto received = live->channel->Receive(&buffer, &size, nullptr, ClientSpinUs(), draining);
    if (received.ok() && *received == ipc::RecvResult::kWouldBlock) break;
    if (!received.ok()) {
      close_status =
          UnavailableError("lost the connection to the Atoll daemon (did the daemon restart?): " +
                           received.status().message() +
                           "; the request's outputs are undefined. The next submit reconnects");
      break;
    }
    if (*received == ipc::RecvResult::kClosed) break;
    ATOLL_HOP("c.recv");
    wire::ServerMessage& message = scratch.Fresh();
    if (!message.ParseFromArray(buffer.data(), static_cast<int>(size))) {
      close_status = InternalError("the Atoll daemon sent a malformed message");
      break;
    }
    uint64_t id = 0;
    Status status;
    std::string payload;
    if (message.has_complete()) {
      id = message.complete().request_id();
      status = Status(CodeFromInt(static_cast<int>(message.complete().status().code())),
                      message.complete().status().message());
    } else if (message.has_query_reply()) {
      id = message.query_reply().query_id();
      status = Status(CodeFromInt(static_cast<int>(message.query_reply().status().code())),
                      message.query_reply().status().message());
      payload = message.query_reply().json();
    } else if (message.has_goodbye()) {
      close_status = Status(CodeFromInt(static_cast<int>(message.goodbye().status().code())),
                            message.goodbye().status().message());
      draining = true;
      continue;
    } else {
      continue;
    }
    std::shared_ptr<ResponseState> state;
    {
      std::lock_guard lock(live->pending_mutex);
      auto it = live->pending.find(id);
      if (it == live->pending.end()) continue;
      state = std::move(it->second);
      live->pending.erase(it);
    }
    ATOLL_HOP("c.complete");
    state->Complete(std::move(status), std::move(payload));
  }
  FailAll(live, close_status);
}

Status Connection::Submit(const std::string& accelerator, const std::vector<ArgumentValue>& args,
                          uint64_t timeout_us, const std::shared_ptr<ResponseState>& state,
                          int32_t priority) {
  ATOLL_HOP("c.submit");
  std::lock_guard lock(send_mutex_);
  for (int attempt = 0;; ++attempt) {
    ATOLL_RETURN_IF_ERROR(EnsureConnectedLocked());
    std::shared_ptr<Live> live = live_;
    bool delivered_nothing = false;
    Status sent =
        SendSubmitLocked(live, accelerator, args, timeout_us, state, priority, &delivered_nothing);
    if (sent.ok() || !delivered_nothing || attempt == 1) return sent;
    // The daemon went away since the last request (a restart, say) before the reader thread
    // noticed. Nothing of this request reached it, so it is safe to send it again on a new
    // connection; the old connection's requests are failed by its reader thread.
    live->closed.store(true, std::memory_order_release);
  }
}

Status Connection::SendSubmitLocked(const std::shared_ptr<Live>& live,
                                    const std::string& accelerator,
                                    const std::vector<ArgumentValue>& args, uint64_t timeout_us,
                                    const std::shared_ptr<ResponseState>& state, int32_t priority,
                                    bool* delivered_nothing) {
  // Buffers travel once per connection, before the first request that names them.
  for (const ArgumentValue& arg : args) {
    if (!arg.is_array) continue;
    const Buffer& buffer = *arg.range.buffer;
    if (live->sent_buffers.count(buffer.id) != 0) continue;
    wire::ClientMessage add;
    add.mutable_buffer_add()->set_buffer_id(buffer.id);
    add.mutable_buffer_add()->set_size_bytes(buffer.size_bytes);
    Status sent = live->channel->Send(add.SerializeAsString(), buffer.fd);
    if (!sent.ok()) {
      *delivered_nothing = sent.code() == Code::kUnavailable;
      return UnavailableError("could not send a buffer to the Atoll daemon: " + sent.message());
    }
    live->sent_buffers.insert(buffer.id);
  }

  uint64_t id = live->next_id.fetch_add(1, std::memory_order_relaxed);
  state->request_id = id;
  wire::ClientMessage& message = live->submit_scratch.Fresh();
  wire::Submit* submit = message.mutable_submit();
  submit->set_request_id(id);
  submit->set_accelerator(accelerator);
  submit->set_timeout_us(timeout_us);
  submit->set_priority(priority);
  for (const ArgumentValue& arg : args) {
    wire::Argument* out = submit->add_arguments();
    out->set_index(arg.index);
    if (arg.is_array) {
      wire::ArrayRef* ref = out->mutable_array();
      ref->set_buffer_id(arg.range.buffer->id);
      ref->set_offset(arg.range.offset);
      ref->set_size_bytes(arg.size_bytes);
    } else {
      out->set_scalar(arg.scalar);
    }
  }
  {
    std::lock_guard pending_lock(live->pending_mutex);
    if (live->closed.load(std::memory_order_acquire)) {
      *delivered_nothing = true;
      return UnavailableError("the connection to the Atoll daemon closed; submit again");
    }
    live->pending.emplace(id, state);
  }
  message.SerializeToString(&live->encode_scratch);
  if (live->encode_scratch.size() > ipc::kMaxPacketBytes) {
    // Refused here: the daemon would close the connection, failing every request in flight.
    std::lock_guard pending_lock(live->pending_mutex);
    live->pending.erase(id);
    return InvalidArgumentError("request for '" + accelerator + "' encodes to " +
                                std::to_string(live->encode_scratch.size()) +
                                " bytes, more than the protocol's " +
                                std::to_string(ipc::kMaxPacketBytes) +
                                "-byte limit: pass large data in Atoll buffers, not as scalars");
  }
  Status sent = live->channel->Send(live->encode_scratch);
  if (!sent.ok()) {
    std::lock_guard pending_lock(live->pending_mutex);
    live->pending.erase(id);
    if (sent.code() == Code::kOutOfRange) {
      return InvalidArgumentError("request for '" + accelerator + "' is too large to send (" +
                                  sent.message() + "): pass large data in Atoll buffers");
    }
    *delivered_nothing = sent.code() == Code::kUnavailable;
    return UnavailableError("could not send the request to the Atoll daemon: " + sent.message());
  }
  ATOLL_HOP("c.sent");
  return OkStatus();
}

void Connection::Cancel(uint64_t request_id) {
  std::lock_guard lock(send_mutex_);
  if (!UsableLocked()) return;
  {
    std::lock_guard pending_lock(live_->pending_mutex);
    if (live_->pending.count(request_id) == 0) return;
  }
  wire::ClientMessage message;
  message.mutable_cancel()->set_request_id(request_id);
  (void)live_->channel->Send(message.SerializeAsString());
}

StatusOr<std::string> Connection::Query(int kind, uint64_t timeout_ms) {
  auto state = std::make_shared<ResponseState>();
  {
    std::lock_guard lock(send_mutex_);
    ATOLL_RETURN_IF_ERROR(EnsureConnectedLocked());
    std::shared_ptr<Live> live = live_;
    uint64_t id = live->next_id.fetch_add(1, std::memory_order_relaxed);
    wire::ClientMessage message;
    message.mutable_query()->set_query_id(id);
    message.mutable_query()->set_kind(static_cast<wire::Query::Kind>(kind));
    {
      std::lock_guard pending_lock(live->pending_mutex);
      live->pending.emplace(id, state);
    }
    Status sent = live->channel->Send(message.SerializeAsString());
    if (!sent.ok()) {
      std::lock_guard pending_lock(live->pending_mutex);
      live->pending.erase(id);
      return UnavailableError("could not send a query to the Atoll daemon: " + sent.message());
    }
  }
  if (!state->WaitFor(timeout_ms)) {
    return Status(Code::kDeadlineExceeded,
                  "the Atoll daemon did not answer within " + std::to_string(timeout_ms) + " ms");
  }
  if (!state->status().ok()) return state->status();
  return state->payload();
}

void Connection::ForgetBuffer(uint64_t buffer_id) {
  std::lock_guard lock(send_mutex_);
  if (!UsableLocked()) return;
  if (live_->sent_buffers.erase(buffer_id) == 0) return;
  wire::ClientMessage message;
  message.mutable_buffer_remove()->set_buffer_id(buffer_id);
  (void)live_->channel->Send(message.SerializeAsString());
}

}  // namespace atl::client
