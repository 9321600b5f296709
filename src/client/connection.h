// The process's connection to atolld: one socket shared by every thread, a reader thread that
// completes responses, and reconnection at the next submit after the daemon went away.
// Thread safety: all methods are thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "client/buffer_table.h"
#include "common/status.h"

namespace atl::client {

// How long the client's threads poll before they sleep: the reader thread for the daemon's next
// message, a waiting thread (atoll_response_wait) for its response. $ATOLL_SPIN_US (0 to 10000)
// when set, else ipc::DefaultSpinUs() (0 on hosts with 2 cores or fewer).
uint32_t ClientSpinUs();

// Completion of one submitted request or query, shared by the caller and the reader thread.
class ResponseState {
 public:
  // Completes once; later calls are ignored. Wakes waiters and fulfils the promise, if any.
  void Complete(Status status, std::string payload = {});
  bool done() const;
  // Blocks until done.
  void Wait() const;
  // False if `timeout_ms` passed first.
  bool WaitFor(uint64_t timeout_ms) const;
  // REQUIRES: done().
  const Status& status() const { return status_; }
  const std::string& payload() const { return payload_; }
  // The returned future completes with this state (throwing atoll::error on failure).
  // REQUIRES: called at most once, before the request is sent.
  std::future<void> MakeFuture();

  uint64_t request_id = 0;

 private:
  // Polls done_ for up to the client's spin time, at most `limit_us`; true if it became set.
  bool SpinUntilDone(uint64_t limit_us) const;

  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::atomic<bool> done_{false};  // written under mutex_; read without it by the spin
  Status status_;
  std::string payload_;
  std::optional<std::promise<void>> promise_;
};

struct ArgumentValue {
  uint32_t index = 0;
  bool is_array = false;
  BufferRange range;  // arrays
  uint64_t size_bytes = 0;
  std::string scalar;  // scalars
};

class Connection {
 public:
  // The process-wide connection (never destroyed, so requests may complete during exit).
  static Connection& Default();

  // Sends a request; `state` completes when the daemon answers or the connection drops (then with
  // UNAVAILABLE, "the Atoll daemon restarted or stopped ..."). Connects first if needed
  // ($ATOLL_SOCKET or ATOLL_DEFAULT_SOCKET), also after the daemon went away: a new connection
  // sends the request's buffers again. Errors: UNAVAILABLE if the daemon is not running,
  // FAILED_PRECONDITION on a protocol version mismatch.
  Status Submit(const std::string& accelerator, const std::vector<ArgumentValue>& args,
                uint64_t timeout_us, const std::shared_ptr<ResponseState>& state,
                int32_t priority = 0);

  // Asks the daemon to cancel a request; a no-op if it already completed.
  void Cancel(uint64_t request_id);

  // Sends an administrative query and waits for its JSON answer.
  StatusOr<std::string> Query(int kind, uint64_t timeout_ms);

  // Tells the daemon a buffer is freed (if it was ever sent on the live connection).
  void ForgetBuffer(uint64_t buffer_id);

  // The socket path a new connection uses now.
  static std::string SocketPath();

 private:
  Connection() = default;
  struct Live;
  Status EnsureConnectedLocked();  // REQUIRES: send_mutex_ held
  // True when live_ is open and belongs to this process (not inherited through fork).
  bool UsableLocked() const;  // REQUIRES: send_mutex_ held
  // Sends the request's new buffers and the request on `live`. `*delivered_nothing` is set when
  // it failed because the daemon had gone before any of it was sent.
  // REQUIRES: send_mutex_ held
  Status SendSubmitLocked(const std::shared_ptr<Live>& live, const std::string& accelerator,
                          const std::vector<ArgumentValue>& args, uint64_t timeout_us,
                          const std::shared_ptr<ResponseState>& state, int32_t priority,
                          bool* delivered_nothing);
  void ReaderLoop(std::shared_ptr<Live> live);
  void FailAll(const std::shared_ptr<Live>& live, const Status& status);

  std::mutex send_mutex_;       // serialises sends so BufferAdd precedes the Submit using it
  std::shared_ptr<Live> live_;  // GUARDED_BY(send_mutex_); null when disconnected
};

}  // namespace atl::client
