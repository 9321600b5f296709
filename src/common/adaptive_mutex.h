// A mutex that polls for a few microseconds before it sleeps, for locks that threads on other
// cores hold briefly and often (the engine's, under a stream of requests). A std::mutex that is
// held makes the next locker sleep at once: a futex wait, a futex wake from the holder, and the
// sleeper's wake-up cost 5-10 us on a VM, longer than the holder keeps the lock. On hosts with 2
// cores or fewer it does not poll: the holder may be waiting for the very core that polls.
// Thread safety: a mutex (Lockable); use std::condition_variable_any to wait on it.
#pragma once

#include <unistd.h>

#include <chrono>
#include <mutex>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace atl {

class AdaptiveMutex {
 public:
  // How long lock() polls before it sleeps.
  static constexpr auto kPoll = std::chrono::microseconds(10);

  // `poll` false: a plain mutex. The default polls on hosts with more than 2 cores.
  explicit AdaptiveMutex(bool poll = PollsHere()) : poll_(poll) {}
  AdaptiveMutex(const AdaptiveMutex&) = delete;
  AdaptiveMutex& operator=(const AdaptiveMutex&) = delete;

  void lock() {
    if (mu_.try_lock()) return;
    if (poll_) {
      const auto until = std::chrono::steady_clock::now() + kPoll;
      do {
        for (int i = 0; i < 16; ++i) {
          Pause();
          if (mu_.try_lock()) return;
        }
      } while (std::chrono::steady_clock::now() < until);
    }
    mu_.lock();
  }
  bool try_lock() { return mu_.try_lock(); }
  void unlock() { mu_.unlock(); }

 private:
  static bool PollsHere() {
    static const bool polls = ::sysconf(_SC_NPROCESSORS_ONLN) > 2;
    return polls;
  }
  static void Pause() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#endif
  }

  const bool poll_;
  std::mutex mu_;
};

}  // namespace atl
