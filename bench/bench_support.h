// Measurement helpers for atoll_bench: latency summaries, the in-process baseline (a kernel of a
// cpu binary loaded with dlopen and called directly, as a user would without Atoll), and CPU-time
// and context-switch counters of the client and the daemon, which tell where a request's time
// goes without a profiler.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "atoll/atoll.h"
#include "atoll/cpu_kernel.h"

namespace atl::bench {

// Throws atoll::error for a failed C API call, with the library's message.
[[noreturn]] void ThrowC(const char* call, atoll_status_code code);

// The C API's request handle, released on every path.
class CRequest {
 public:
  explicit CRequest(const char* accelerator);
  ~CRequest() { atoll_request_release(handle_); }
  CRequest(const CRequest&) = delete;
  CRequest& operator=(const CRequest&) = delete;
  atoll_request get() const { return handle_; }

 private:
  atoll_request handle_;
};

// A C API request for vector.addition of `n` floats: a + b into c, all in Atoll buffers.
void SetVectorAdditionArgs(const CRequest& request, const float* a, const float* b, float* c,
                           int n);
// atoll_submit, then atoll_response_wait; throws atoll::error on failure.
void SubmitAndWaitC(const CRequest& request);

// Microsecond statistics of a set of latencies.
struct LatencySummary {
  size_t count = 0;
  double p50_us = 0;
  double p99_us = 0;
  double mean_us = 0;
  double min_us = 0;
  double max_us = 0;
};

// Nearest-rank percentiles: the reported p99 is a latency that was actually observed, never an
// interpolation between two. Sorts `samples_ns` in place.
LatencySummary Summarize(std::vector<int64_t>& samples_ns);

// The steady clock in nanoseconds, the clock every figure is measured with.
int64_t NowNs();

// Median cost of one NowNs() call, measured here: every latency sample includes about one of it,
// and on some virtual machines it is far from negligible.
double ClockCostNs();

// One kernel of a cpu binary, loaded into this process: the baseline every daemon figure is
// compared against. Throws std::runtime_error (with dlerror's text) when the binary or symbol is
// missing.
class DirectKernel {
 public:
  DirectKernel(const std::string& binary_path, const std::string& symbol);
  ~DirectKernel();
  DirectKernel(const DirectKernel&) = delete;
  DirectKernel& operator=(const DirectKernel&) = delete;

  // Calls the kernel; returns its status (0 on success), with its message in `error`.
  int Call(const atoll_cpu_arg* args, uint32_t count, char* error, size_t error_size) const {
    return function_(args, count, error, error_size);
  }

 private:
  void* handle_ = nullptr;
  atoll_cpu_kernel_fn function_ = nullptr;
};

// The platform floor of a round trip: what any client/daemon design that blocks in the kernel
// pays on this machine, whatever its code does. Atoll's round trip needs two such process
// wake-ups (client to daemon, daemon to client) plus its own thread hand-offs.

// An echo process on a SOCK_SEQPACKET socketpair, the transport atolld uses: RoundTrip() sends
// one packet of `packet_bytes` and waits until it comes back, blocking in recv or, with `poll`,
// retrying a non-blocking recv (which spares the caller's own wake-up but keeps a core busy).
// Throws std::runtime_error when the socketpair or the process cannot be made.
class SocketEcho {
 public:
  explicit SocketEcho(size_t packet_bytes);
  ~SocketEcho();
  SocketEcho(const SocketEcho&) = delete;
  SocketEcho& operator=(const SocketEcho&) = delete;
  void RoundTrip(bool poll);

 private:
  int fd_ = -1;
  pid_t pid_ = -1;
  std::vector<char> packet_;
};

// An echo thread woken through a futex, as a condition variable wakes a worker: RoundTrip() wakes
// it and blocks until it answers.
class ThreadEcho {
 public:
  ThreadEcho();
  ~ThreadEcho();
  ThreadEcho(const ThreadEcho&) = delete;
  ThreadEcho& operator=(const ThreadEcho&) = delete;
  void RoundTrip();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Cumulative resource use, sampled before and after a scenario.
struct Usage {
  int64_t client_cpu_ns = 0;       // this process and its reaped children, user + system
  int64_t client_switches = 0;     // voluntary + involuntary context switches, same scope
  int64_t daemon_cpu_ns = 0;       // all threads of the daemon, on CPU
  int64_t daemon_runqueue_ns = 0;  // time the daemon's threads were runnable but not running
  int64_t daemon_switches = 0;
  bool has_daemon = false;

  Usage& operator+=(const Usage& other);
  Usage operator-(const Usage& other) const;
};

// `daemon` <= 0 samples the client only. Daemon figures come from /proc/PID/task/*/: threads of
// the daemon live as long as it does, so summing the current ones misses nothing. Reading those
// files costs the client tens of microseconds, so a sample at the start of a measurement reads
// them before the client's own counters, and one at the end after, keeping that cost out.
enum class SampleAt { kStart, kEnd };
Usage SampleUsage(pid_t daemon, SampleAt at);

// Machine description for the JSON report.
struct MachineInfo {
  std::string cpu_model;
  unsigned cores = 0;
  std::string kernel;
  std::string clocksource;
  std::string loadavg;
};
MachineInfo DescribeMachine();
std::string LoadAverage();

// The current time as ISO 8601 UTC ("2024-05-01T12:00:00Z").
std::string UtcNow();

// The benchmark programs' command lines: "a,b,,c" -> {"a", "b", "c"}; whether `scenarios` holds
// `scenario`; a progress line on stderr, flushed at once.
std::vector<std::string> SplitCommas(const std::string& text);
bool Wants(const std::vector<std::string>& scenarios, const std::string& scenario);
void Progress(const std::string& line);

}  // namespace atl::bench
