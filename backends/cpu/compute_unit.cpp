#include "compute_unit.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <utility>

#include "atoll/status.h"

namespace atl::cpu {
namespace {

// The daemon keeps at most one launch per compute unit in flight, so the queue rarely grows.
constexpr size_t kInitialSlots = 4;
// Scalars are stored at this alignment: the arena comes from operator new, which guarantees it,
// so a kernel may read any scalar type in place.
constexpr size_t kScalarAlignment = __STDCPP_DEFAULT_NEW_ALIGNMENT__;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

void Append(std::vector<char>& bytes, const void* data, size_t size) {
  const char* begin = static_cast<const char*>(data);
  bytes.insert(bytes.end(), begin, begin + size);
}

}  // namespace

ComputeUnit::ComputeUnit(const std::string& thread_name, int64_t spin_ns)
    : spin_ns_(spin_ns), ring_(kInitialSlots) {
  thread_ = std::thread([this] { Run(); });
  // Best effort: the name only helps someone reading `top -H` or a debugger.
  pthread_setname_np(thread_.native_handle(), thread_name.substr(0, 15).c_str());
}

ComputeUnit::~ComputeUnit() {
  RequestStop();
  if (thread_.joinable()) thread_.join();
}

void ComputeUnit::RequestStop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
}

void ComputeUnit::Launch(const Kernel* kernel, const atoll_backend_arg_v1* args, uint32_t arg_count,
                         atoll_backend_done_fn done, void* user) {
  int64_t now_ns = NowNs();
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (count_ == ring_.size()) {
      std::vector<Pending> larger(ring_.size() * 2);
      for (size_t i = 0; i < ring_.size(); ++i) {
        larger[i] = std::move(ring_[(head_ + i) & (ring_.size() - 1)]);
      }
      ring_.swap(larger);
      head_ = 0;
    }
    // If Fill throws, count_ is unchanged and the half-filled slot is simply reused later.
    Pending& slot = ring_[(head_ + count_) & (ring_.size() - 1)];
    Fill(slot, kernel, args, arg_count, done, user);
    slot.queued_at_ns = now_ns;
    ++count_;
    wake = sleeping_;
  }
  published_.fetch_add(1, std::memory_order_release);
  // Notifying only a sleeping worker saves the futex call while it spins or runs.
  if (wake) wake_.notify_one();
}

void ComputeUnit::Fill(Pending& pending, const Kernel* kernel, const atoll_backend_arg_v1* args,
                       uint32_t arg_count, atoll_backend_done_fn done, void* user) {
  pending.kernel = kernel;
  pending.done = done;
  pending.user = user;
  pending.args.resize(arg_count);
  pending.type_offsets.resize(arg_count);
  pending.scalar_offsets.resize(arg_count);
  pending.bytes.clear();
  for (uint32_t i = 0; i < arg_count; ++i) {
    const atoll_backend_arg_v1& arg = args[i];
    // The contract does not promise that `type` outlives the launch call, so it is copied too.
    const char* type = arg.type != nullptr ? arg.type : "";
    pending.type_offsets[i] = pending.bytes.size();
    Append(pending.bytes, type, std::strlen(type) + 1);
    pending.args[i].size_bytes = arg.size_bytes;
    if (arg.kind == ATOLL_BACKEND_ARG_SCALAR) {
      size_t offset = (pending.bytes.size() + kScalarAlignment - 1) & ~(kScalarAlignment - 1);
      pending.bytes.resize(offset);
      if (arg.size_bytes > 0) Append(pending.bytes, arg.data, arg.size_bytes);
      pending.scalar_offsets[i] = offset;
      pending.args[i].data = nullptr;
    } else {
      pending.scalar_offsets[i] = kArrayArg;
      pending.args[i].data = arg.data;
    }
  }
}

void ComputeUnit::Pending::Resolve() {
  for (size_t i = 0; i < args.size(); ++i) {
    args[i].type = bytes.data() + type_offsets[i];
    if (scalar_offsets[i] != kArrayArg) args[i].data = bytes.data() + scalar_offsets[i];
  }
}

void ComputeUnit::Run() {
  bool ran = false;
  for (;;) {
    // Spin only right after a launch, and only while launches arrive within the spin time: a
    // stream of requests keeps the worker awake, while sparse or no traffic costs no CPU.
    if (ran && spin_ns_ > 0 && average_gap_ns_ < spin_ns_) Spin();
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (count_ == 0 && !stopping_) {
        sleeping_ = true;
        wake_.wait(lock, [this] { return count_ > 0 || stopping_; });
        sleeping_ = false;
      }
      // A stop still runs what was queued before it: close() promises every launch its `done`.
      if (count_ == 0) return;
      // Swapping keeps the capacity of both the slot and running_, so nothing is freed here.
      std::swap(running_, ring_[head_]);
      head_ = (head_ + 1) & (ring_.size() - 1);
      --count_;
      published_.fetch_sub(1, std::memory_order_relaxed);
    }
    if (ran) {
      // Capped, so that one long pause is forgotten after a few quick launches.
      int64_t gap_ns = std::clamp<int64_t>(running_.queued_at_ns - last_end_ns_, 0, 2 * spin_ns_);
      average_gap_ns_ = (3 * average_gap_ns_ + gap_ns) / 4;
    }
    running_.Resolve();
    Execute(running_);
    last_end_ns_ = NowNs();
    ran = true;
  }
}

void ComputeUnit::Spin() {
  int64_t deadline_ns = NowNs() + spin_ns_;
  while (published_.load(std::memory_order_acquire) <= 0 && NowNs() < deadline_ns) CpuRelax();
}

void ComputeUnit::Execute(Pending& pending) {
  const Kernel& kernel = *pending.kernel;
  char message[1024];
  message[0] = '\0';
  int status;
  // A kernel is C++ more often than not; an exception escaping it must not kill the daemon.
  try {
    status = kernel.function(pending.args.data(), static_cast<uint32_t>(pending.args.size()),
                             message, sizeof(message));
  } catch (const std::exception& e) {
    status = ATOLL_INTERNAL;
    std::snprintf(message, sizeof(message), "kernel '%s' of %s threw an exception: %s",
                  kernel.name.c_str(), kernel.binary.c_str(), e.what());
  } catch (...) {
    status = ATOLL_INTERNAL;
    std::snprintf(message, sizeof(message), "kernel '%s' of %s threw a non-standard exception",
                  kernel.name.c_str(), kernel.binary.c_str());
  }
  message[sizeof(message) - 1] = '\0';
  if (status == ATOLL_OK) {
    pending.done(pending.user, ATOLL_OK, "");
    return;
  }
  char detail[1200];
  const char* reported = message;
  if (status < ATOLL_CANCELLED || status > ATOLL_UNAUTHENTICATED) {
    std::snprintf(detail, sizeof(detail),
                  "kernel '%s' of %s returned %d, which is not an atoll_status_code; its "
                  "message: '%s'",
                  kernel.name.c_str(), kernel.binary.c_str(), status, message);
    status = ATOLL_UNKNOWN;
    reported = detail;
  } else if (message[0] == '\0') {
    std::snprintf(detail, sizeof(detail), "kernel '%s' of %s failed with status %d and no message",
                  kernel.name.c_str(), kernel.binary.c_str(), status);
    reported = detail;
  }
  pending.done(pending.user, status, reported);
}

}  // namespace atl::cpu
