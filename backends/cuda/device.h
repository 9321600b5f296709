// One GPU of the cuda backend: its primary context, one stream per compute unit, the device
// memory pool, loaded programs, and the threads that complete launches.
//
// A launch enqueues on its compute unit's stream, without waiting: uploads of its input arrays
// (cuMemcpyHtoDAsync from pinned client memory), the kernel, downloads of its outputs, then an
// event. Completion threads poll those events; when one fires they return the launch's device
// memory to the pool and call `done`. Streams of one GPU run independently, so the uploads,
// kernels and downloads of requests on different compute units overlap.
//
// Faults: a kernel that faults leaves its context unusable (a "sticky" error). The completion
// thread that sees it fails every launch in flight on the GPU with the CUDA error's name (the
// driver cannot tell which kernel faulted), then tries to rebuild: destroy the context, create a
// new one, recreate the streams and reload every program, and only then calls their `done`. The
// CUDA drivers measured so far (580, CUDA 13.0) keep the error for the rest of the process: the
// new context cannot be created, so the GPU is marked lost and later launches fail at once with
// UNAVAILABLE until atolld restarts. Launches that arrive during the attempt wait for it.
//
// Timeouts: a launch still running kernel_timeout_ms after it started fails with
// DEADLINE_EXCEEDED, but only when its work has ended: CUDA cannot stop a running kernel short of
// ending the process (destroying or resetting its context waits for it), and until it ends the
// GPU may still write the request's outputs into client memory.
//
// Thread safety: every public method may be called from any thread, concurrently. Lock order:
// state_mutex_ (briefly), then context_mutex_, then a completer's mutex, a stream's enqueue
// mutex, the pool's and the host registry's.
#pragma once

#include <cuda.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "atoll/backend.h"
#include "binary.h"
#include "block_pool.h"
#include "config.h"
#include "driver.h"
#include "geometry.h"
#include "host_registry.h"
#include "nvml.h"

namespace atl::cuda {

class Device;

// PTX builds, by source, GPU architecture and options: in memory, and in `dir` when set.
class JitCache {
 public:
  explicit JitCache(std::string dir) : dir_(std::move(dir)) {}
  // Returns true with the cubin when cached.
  bool Get(const std::string& key, std::string* cubin);
  void Put(const std::string& key, const std::string& cubin);
  uint64_t builds() const { return builds_.load(); }
  void CountBuild() { ++builds_; }

 private:
  std::string dir_;
  std::mutex mutex_;
  std::map<std::string, std::string> memory_;  // GUARDED_BY(mutex_)
  std::atomic<uint64_t> builds_{0};
};

struct Kernel {
  static constexpr uint64_t kMagic = 0x61746c6b65726e6cull;
  uint64_t magic = kMagic;
  struct Program* program = nullptr;
  std::string name;
  uint32_t arg_count = 0;
  std::vector<uint32_t> arg_sizes;  // manifest sizes where known (0: not known), for messages
  // Replaced while the context is rebuilt (context_mutex_ held exclusively); read by launches
  // under the shared lock.
  CUfunction function = nullptr;
  uint32_t max_threads = 0;
};

struct Program {
  static constexpr uint64_t kMagic = 0x61746c70726f6772ull;
  uint64_t magic = kMagic;
  Device* device = nullptr;
  std::string path;
  BinaryKind kind = BinaryKind::kUnknown;
  JitOptions jit;
  std::string image;           // what the module is loaded from: the file, or PTX's cubin
  CUmodule module = nullptr;   // replaced on a rebuild (context_mutex_ held exclusively)
  std::string reload_problem;  // set when a rebuild could not load it again
  std::mutex kernels_mutex;
  std::map<std::string, std::unique_ptr<Kernel>, std::less<>> kernels;  // GUARDED_BY(kernels_mutex)
};

class Device {
 public:
  Device(const Driver& driver, const Config& config, HostRegistry* registry, JitCache* jit,
         uint32_t index, int ordinal);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Reads the GPU's identity, retains its primary context, creates the streams and starts the
  // completion threads. Returns "" or why the GPU cannot be used.
  std::string Start();
  // Waits until every launch has completed (calling `done`) and stops the completion threads.
  void Drain();
  // After Drain: unloads programs, frees device memory and releases the context.
  void Release();

  int Info(const Nvml& nvml, atoll_backend_device_info_v1* info, std::string* error) const;

  int LoadProgram(const std::string& path, const std::string& build_options, Program** program,
                  std::string* error);
  void ReleaseProgram(Program* program);
  int FindKernel(Program* program, const std::string& name, const char* const* arg_types,
                 uint32_t arg_count, Kernel** kernel, std::string* error);
  int Launch(uint32_t compute_unit, Kernel* kernel, const atoll_backend_arg_v1* args,
             uint32_t arg_count, const atoll_backend_geometry_v1* geometry,
             atoll_backend_done_fn done, void* user, std::string* error);
  // register_memory on this GPU's context.
  int RegisterMemory(void* data, uint64_t bytes, std::string* error);
  // Unpins memory this GPU's context pinned (the registry's Unpin callback).
  void Unpin(void* data);

  uint32_t index() const { return index_; }
  uint32_t streams() const { return static_cast<uint32_t>(streams_.size()); }
  std::string Describe() const;  // "GPU 0 (NVIDIA H100 80GB HBM3, sm_90, 0000:3b:00.0)"
  uint64_t resets() const { return resets_.load(); }

 private:
  struct Download {
    CUdeviceptr source;
    void* destination;
    uint64_t bytes;
  };
  // One launch in flight.
  struct Record {
    atoll_backend_done_fn done = nullptr;
    void* user = nullptr;
    CUevent event = nullptr;
    uint64_t generation = 0;
    std::vector<BlockPool::Block> blocks;
    std::vector<void*> leases;        // registered buffers in use (HostRegistry::Release)
    std::vector<Download> downloads;  // outputs in pageable memory: copied after the event
    std::string kernel;
    std::chrono::steady_clock::time_point started;
    bool overran = false;  // ran past kernel_timeout_ms
  };
  struct Completer;
  struct Stream {
    CUstream stream = nullptr;
    std::mutex enqueue_mutex;   // keeps the stream's order and the queue's the same
    std::deque<Record*> queue;  // GUARDED_BY(completer->mutex)
    Completer* completer = nullptr;
  };
  struct Completer {
    std::mutex mutex;
    std::condition_variable wake;
    std::vector<Stream*> streams;
    bool stop = false;     // GUARDED_BY(mutex)
    bool kicked = false;   // GUARDED_BY(mutex): a launch arrived
    bool waiting = false;  // GUARDED_BY(mutex): blocked on `wake`
    std::thread thread;
  };
  struct Outcome {
    Record* record;
    int status;
    std::string message;
  };
  struct Fault {
    CUresult result = CUDA_SUCCESS;
  };

  // Waits out a rebuild, then takes the context for use. Returns false (with the reason) when
  // the GPU is lost or closing.
  bool Enter(std::shared_lock<std::shared_mutex>* lock, std::string* error);
  // The GPU's context: one of the backend's own, or the primary context ("context" setting).
  // Create makes it current on the calling thread; Destroy resets or destroys it, and with it
  // everything made in it. REQUIRES: exclusive use (starting, or context_mutex_ held exclusively).
  std::string CreateContext();
  std::string DestroyContext();
  std::string CreateStreams();  // REQUIRES: context current, exclusive or starting
  void DestroyStreams();        // likewise
  CUevent TakeEvent(CUresult* result);
  void GiveEvent(CUevent event, uint64_t generation);
  void CompletionLoop(Completer* completer);
  // Polls the fronts of `completer`'s queues once; moves finished records to `finished`.
  Fault Poll(Completer* completer, std::vector<Outcome>* finished);
  void Complete(Outcome* outcome);
  void RequestRecovery(CUresult result);
  void Recover(const Fault& fault);
  // Reloads every program's module and kernels after a reset. REQUIRES: exclusive context.
  void ReloadPrograms();
  int Pin(void* data, uint64_t bytes, uint64_t* device_pointer, std::string* error);
  int LoadModule(Program* program, CUmodule* module, std::string* error);
  int CompilePtx(const std::string& ptx, const JitOptions& options, std::string* cubin,
                 std::string* error);
  void AbortEnqueued(Stream* stream, Record* record);
  int StatusOf(CUresult result) const;

  const Driver& cu_;
  const Config& config_;
  HostRegistry* registry_;
  JitCache* jit_;
  const uint32_t index_;
  const int ordinal_;
  CUdevice device_ = 0;

  // Identity, read once at Start.
  std::string name_;
  std::string pci_id_;
  std::string uuid_;  // "GPU-8f0c..." as NVML writes it, or ""
  int cc_major_ = 0;
  int cc_minor_ = 0;
  uint64_t total_memory_ = 0;
  DeviceLimits limits_;
  bool host_pointer_ok_ = false;  // kernels can use a pinned host pointer as is

  std::shared_mutex context_mutex_;  // shared: using the context; exclusive: rebuilding it
  CUcontext context_ = nullptr;
  bool context_retained_ = false;

  mutable std::mutex state_mutex_;
  std::condition_variable state_changed_;
  bool recovering_ = false;  // GUARDED_BY(state_mutex_)
  bool closing_ = false;     // GUARDED_BY(state_mutex_)
  std::string lost_;         // GUARDED_BY(state_mutex_): why the GPU can no longer be used
  std::atomic<bool> recovering_flag_{false};
  std::atomic<int> recovery_requested_{0};  // a CUresult seen by a launch
  std::atomic<uint64_t> generation_{1};     // of the context: bumped by every rebuild
  std::atomic<uint64_t> resets_{0};

  std::vector<std::unique_ptr<Stream>> streams_;
  std::vector<std::unique_ptr<Completer>> completers_;
  std::unique_ptr<BlockPool> pool_;

  std::mutex events_mutex_;
  std::vector<CUevent> free_events_;  // GUARDED_BY(events_mutex_)

  std::mutex programs_mutex_;
  std::set<Program*> programs_;  // GUARDED_BY(programs_mutex_); owned
};

}  // namespace atl::cuda
