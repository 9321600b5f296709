// A compute unit of the cpu backend: one dedicated worker thread with its own queue of launches.
//
// Thread safety: Launch may be called from any number of threads at once. The worker runs
// launches in FIFO order, one at a time, and calls each launch's `done` from the worker thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "atoll/backend.h"
#include "atoll/cpu_kernel.h"
#include "kernel.h"

namespace atl::cpu {

class ComputeUnit {
 public:
  // Starts the worker thread, named `thread_name` (at most 15 characters show). After running a
  // launch the worker polls its queue for up to `spin_ns` before it sleeps, so that a launch
  // arriving soon after does not pay for a futex wake-up; it polls only while launches have
  // lately been arriving within that time, so sparse traffic burns no CPU. 0 never polls.
  // Throws std::system_error when the thread cannot start.
  ComputeUnit(const std::string& thread_name, int64_t spin_ns);
  // Runs the launches still queued (calling their `done`) and joins the worker.
  ~ComputeUnit();

  ComputeUnit(const ComputeUnit&) = delete;
  ComputeUnit& operator=(const ComputeUnit&) = delete;

  // Copies the scalar bytes and type names of `args`, queues the launch and returns without
  // waiting for it. Array data must stay valid until `done` is called. Never fails except by
  // throwing std::bad_alloc when the queue or a launch's argument storage must grow.
  void Launch(const Kernel* kernel, const atoll_backend_arg_v1* args, uint32_t arg_count,
              atoll_backend_done_fn done, void* user);

  // Makes the worker exit once its queue is empty; the destructor joins it. Calling RequestStop
  // on every compute unit first lets them all drain in parallel.
  void RequestStop();

 private:
  // A queued launch. Slots of the queue are reused, and their vectors keep their capacity, so a
  // steady stream of launches allocates nothing. Scalars and type names live in `bytes`; `args`
  // holds their offsets until Resolve turns them into pointers, because a slot may move while
  // the queue grows.
  struct Pending {
    const Kernel* kernel = nullptr;
    atoll_backend_done_fn done = nullptr;
    void* user = nullptr;
    int64_t queued_at_ns = 0;  // steady clock
    std::vector<atoll_cpu_arg> args;
    std::vector<uint64_t> type_offsets;
    std::vector<uint64_t> scalar_offsets;  // kArrayArg for an array argument
    std::vector<char> bytes;

    void Resolve();
  };
  static constexpr uint64_t kArrayArg = ~uint64_t{0};

  static void Fill(Pending& pending, const Kernel* kernel, const atoll_backend_arg_v1* args,
                   uint32_t arg_count, atoll_backend_done_fn done, void* user);
  void Run();
  // Polls for a published launch for up to spin_ns_.
  void Spin();
  void Execute(Pending& pending);

  const int64_t spin_ns_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Pending> ring_;  // a circular queue; its size is a power of two
  size_t head_ = 0;
  size_t count_ = 0;
  bool sleeping_ = false;  // the worker waits on `wake_`: Launch must notify
  bool stopping_ = false;
  // Launches queued minus launches taken, raised only after Launch has released the mutex: the
  // spinning worker reads it without the mutex, and seeing work before the launcher unlocks
  // would send both threads into the futex. Only a hint; may briefly be -1.
  std::atomic<int64_t> published_{0};

  // Owned by the worker thread.
  Pending running_;
  int64_t last_end_ns_ = 0;     // when the previous launch's `done` returned
  int64_t average_gap_ns_ = 0;  // from one launch's end to the next one's arrival, smoothed
  std::thread thread_;
};

}  // namespace atl::cpu
