// atoll_bench: what Atoll costs a program, measured against what the program would otherwise do,
// which is call the kernel itself in-process (docs: DESIGN.md, "Performance: how it is judged").
//
//   roundtrip  vector.addition on 1024 floats, one request at a time, through the C++ API
//              (submit(r).get()) and through the C API (atoll_submit + atoll_response_wait),
//              against atoll_kernel_vadd called directly. Issue target: at most 10 us added at p50.
//              Measured in the same rounds: the platform floor, i.e. a packet to an echo process
//              and back (blocking, and with the caller polling), and a futex wake-up of another
//              thread and back, which show how much of the round trip any design pays here.
//   threads    testing.noop with W requests in flight per client thread, 1, 2 and 4 threads of one
//              process sharing its connection, against atoll_kernel_noop called directly by as
//              many threads. Issue target: at least 100k requests/s on a 2-core machine.
//   processes  the same with 1, 2 and 4 client processes, each with its own connection.
//   opencl     vector.addition on 1024 floats through a daemon whose only backend is opencl, one
//              request at a time, against vector.cl's vadd called directly through OpenCL in this
//              process (buffers, writes, NDRange, read, finish). Issue target: at most 1.2x the
//              direct call at p50. Measured in the same rounds: Atoll's opencl backend driven in
//              this process without the daemon. bench/run.sh runs it against its own daemon.
//   devices, tenants, reprogram
//              the scheduler on simulated cpu devices, each against daemons of its own
//              (scheduling_bench.h): throughput over 1-8 devices, two tenants sharing a device,
//              and reprogrammings of the fair policy against the old FIFO one.
//
// It expects a running atolld at $ATOLL_SOCKET with the vector and testing accelerators installed;
// bench/run.sh provides a private one. Results are printed as a table and, with --json, written
// as a JSON document. The figures are never asserted: this is a benchmark, not a test.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <latch>
#include <limits>
#include <map>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "atoll/atoll.h"
#include "atoll/atoll.hpp"
#include "atoll/cpu_kernel.h"
#include "bench_support.h"
#include "report.h"
#include "scheduling_bench.h"
#ifdef ATOLL_BENCH_OPENCL
#include "opencl_bench.h"
#endif

namespace atl::bench {
namespace {

constexpr int kVectorLength = 1024;
constexpr double kNoopTarget = 100000;      // requests/s, from the issue
constexpr double kOverheadTargetUs = 10.0;  // added at p50, from the issue
constexpr double kOpenclTargetRatio = 1.2;  // Atoll's opencl round trip over the direct call

struct Options {
  std::string build_dir;
  std::string json_path;
  std::string git;
  int daemon_pid = 0;
  int iterations = 20000;
  int warmup = 2000;
  int rounds = 4;
  double duration_s = 2.0;
  double baseline_duration_s = 0.5;
  int window = 64;
  std::vector<int> clients = {1, 2, 4};
  std::vector<std::string> scenarios = {"roundtrip", "threads", "processes"};
  bool quick = false;
  bool child = false;  // internal: run as one client process of the `processes` scenario
  // Internal: one client process of the scheduling scenarios (scheduling_bench.h).
  bool child_hold = false;
  std::string hold_accelerators = "testing.hold";
  int hold_mix = 100;
  int hold_us = 2000;
};

// ---- Round trip ---------------------------------------------------------------------------------

// One way of running vector.addition once, and what it was measured at.
struct Variant {
  std::string key;
  std::function<void()> call;
  std::vector<int64_t> samples_ns;
  Usage usage;
  int64_t wall_ns = 0;
};

void CheckSum(const char* what, const float* a, const float* b, const float* c, int n) {
  for (int i = 0; i < n; ++i) {
    if (c[i] != a[i] + b[i]) {
      throw std::runtime_error(std::string(what) + ": c[" + std::to_string(i) + "] = " +
                               std::to_string(c[i]) + ", expected " + std::to_string(a[i] + b[i]));
    }
  }
}

// Warms every variant up, then times each call of each. The variants take turns in rounds, so
// that a slow phase of a shared machine (another tenant's build, frequency changes) spreads over
// all of them instead of skewing one ratio.
void MeasureInRounds(const Options& o, std::vector<Variant>* variants) {
  // For the daemon's variants, warm-up connects, sends the buffers, loads the binary in the
  // daemon and faults in the code.
  for (Variant& v : *variants) {
    for (int i = 0; i < o.warmup; ++i) v.call();
  }
  const int rounds = std::max(1, o.rounds);
  const int per_round = std::max(1, o.iterations / rounds);
  for (Variant& v : *variants) v.samples_ns.reserve(static_cast<size_t>(per_round) * rounds);
  for (int round = 0; round < rounds; ++round) {
    for (Variant& v : *variants) {
      Usage before = SampleUsage(o.daemon_pid, SampleAt::kStart);
      int64_t begin = NowNs();
      for (int i = 0; i < per_round; ++i) {
        int64_t t0 = NowNs();
        v.call();
        v.samples_ns.push_back(NowNs() - t0);
      }
      v.wall_ns += NowNs() - begin;
      v.usage += SampleUsage(o.daemon_pid, SampleAt::kEnd) - before;
    }
  }
}

Result Microseconds(const std::string& section, const std::string& name, double value,
                    double baseline, const std::string& baseline_name,
                    nlohmann::json details = nlohmann::json::object()) {
  Result r;
  r.section = section;
  r.name = name;
  r.value = value;
  r.unit = "us";
  r.baseline = baseline;
  r.baseline_name = baseline_name;
  r.details = std::move(details);
  return r;
}

nlohmann::json Details(const LatencySummary& x, const char* what = nullptr) {
  nlohmann::json j{{"samples", x.count}, {"min_us", x.min_us}, {"max_us", x.max_us}};
  if (what != nullptr) j["what"] = what;
  return j;
}

// Sorts each variant's samples.
void ReportRoundTrip(std::vector<Variant>* variants, Report* report) {
  std::map<std::string, LatencySummary> s;
  for (Variant& v : *variants) s[v.key] = Summarize(v.samples_ns);
  const LatencySummary& d = s["direct"];
  const double none = std::numeric_limits<double>::quiet_NaN();
  const std::string section = "Round trip: vector.addition on " + std::to_string(kVectorLength) +
                              " floats, one request at a time (baseline: atoll_kernel_vadd "
                              "called in-process)";
  report->Add(Microseconds(section, "roundtrip.direct.p50", d.p50_us, none, "", Details(d)));
  report->Add(Microseconds(section, "roundtrip.direct.p99", d.p99_us, none, ""));
  report->Add(Microseconds(section, "roundtrip.direct.mean", d.mean_us, none, ""));
  for (const char* api : {"cpp", "c"}) {
    const LatencySummary& x = s[api];
    std::string prefix = std::string("roundtrip.") + api;
    report->Add(Microseconds(section, prefix + ".p50", x.p50_us, d.p50_us, "roundtrip.direct.p50",
                             Details(x)));
    report->Add(Microseconds(section, prefix + ".p99", x.p99_us, d.p99_us, "roundtrip.direct.p99"));
    report->Add(
        Microseconds(section, prefix + ".mean", x.mean_us, d.mean_us, "roundtrip.direct.mean"));
    Result overhead = Microseconds(section, prefix + ".overhead_p50", x.p50_us - d.p50_us, d.p50_us,
                                   "roundtrip.direct.p50");
    overhead.target = "<= 10 us";
    overhead.target_met = overhead.value <= kOverheadTargetUs;
    report->Add(std::move(overhead));
  }
  // What the std::future costs over the C API's handle: positive when the C++ path is slower.
  report->Add(Microseconds(section, "roundtrip.cpp_minus_c.p50", s["cpp"].p50_us - s["c"].p50_us,
                           s["c"].p50_us, "roundtrip.c.p50"));

  // What hand-offs cost on this machine whatever the code does: a request through a daemon needs
  // at least one process wake-up each way (the socket floor); Atoll's path also hands each
  // request from thread to thread inside both processes (each about half a thread floor).
  const std::string floor_section =
      "Platform floor of a round trip: hand-offs between processes and threads on this machine, "
      "whatever the code (baseline: atoll_kernel_vadd called in-process)";
  const LatencySummary& socket = s["floor_socket"];
  const LatencySummary& polling = s["floor_socket_poll"];
  const LatencySummary& thread = s["floor_thread"];
  report->Add(Microseconds(floor_section, "floor.process_socket.p50", socket.p50_us, d.p50_us,
                           "roundtrip.direct.p50",
                           Details(socket,
                                   "64-byte packet to an echo process and back over a "
                                   "SOCK_SEQPACKET socketpair, both blocking")));
  report->Add(Microseconds(floor_section, "floor.process_socket.p99", socket.p99_us, d.p99_us,
                           "roundtrip.direct.p99"));
  report->Add(Microseconds(floor_section, "floor.process_socket_polling.p50", polling.p50_us,
                           d.p50_us, "roundtrip.direct.p50",
                           Details(polling,
                                   "the same, the caller polling a non-blocking recv: one "
                                   "process wake-up instead of two")));
  report->Add(Microseconds(floor_section, "floor.thread_futex.p50", thread.p50_us, d.p50_us,
                           "roundtrip.direct.p50",
                           Details(thread,
                                   "wake an echo thread through a futex and be woken "
                                   "back")));
  report->Add(Microseconds(floor_section, "floor.thread_futex.p99", thread.p99_us, d.p99_us,
                           "roundtrip.direct.p99"));
  // What Atoll adds on top of the two process wake-ups no daemon design can avoid.
  for (const char* api : {"cpp", "c"}) {
    report->Add(Microseconds(floor_section, std::string("roundtrip.") + api + ".above_floor_p50",
                             s[api].p50_us - socket.p50_us, socket.p50_us,
                             "floor.process_socket.p50"));
  }

  for (const Variant& v : *variants) {
    report->Add(Diagnostic{"roundtrip." + v.key, static_cast<double>(v.samples_ns.size()),
                           static_cast<double>(v.wall_ns) / 1e9, v.usage});
  }
}

void RoundTrip(const Options& o, Report* report) {
  int n = kVectorLength;
  const uint64_t bytes = static_cast<uint64_t>(n) * sizeof(float);
  DirectKernel vadd(o.build_dir + "/accelerators/vector/vector.so", "atoll_kernel_vadd");

  // The baseline uses ordinary memory, as a program without Atoll would.
  std::vector<float> da(n), db(n), dc(n);
  // The daemon's variants reuse one set of shared buffers, as a real program would: a buffer is
  // sent to the daemon once per connection, so only the first request pays for mapping it.
  atoll::vector<float> a(n), b(n), c_cpp(n), c_c(n);
  for (int i = 0; i < n; ++i) {
    a[i] = da[i] = static_cast<float>(i) * 0.5f;
    b[i] = db[i] = static_cast<float>(n - i);
  }

  atoll_cpu_arg direct_args[4] = {{"float*", da.data(), bytes},
                                  {"float*", db.data(), bytes},
                                  {"float*", dc.data(), bytes},
                                  {"int", &n, sizeof(n)}};
  char error[256] = "";
  auto direct = [&] {
    if (vadd.Call(direct_args, 4, error, sizeof(error)) != 0) {
      throw std::runtime_error(std::string("atoll_kernel_vadd failed: ") + error);
    }
  };

  atoll::request cpp_request("vector.addition");
  cpp_request.arg(a).arg(b).arg(c_cpp).arg(n);
  auto cpp = [&] { atoll::submit(cpp_request).get(); };

  CRequest c_request("vector.addition");
  SetVectorAdditionArgs(c_request, a.data(), b.data(), c_c.data(), n);
  auto c_api = [&] { SubmitAndWaitC(c_request); };

  // The platform floor, measured in the same rounds: a Submit packet of vector.addition is about
  // this size on the wire.
  constexpr size_t kSubmitPacketBytes = 64;
  SocketEcho socket_echo(kSubmitPacketBytes);
  ThreadEcho thread_echo;

  std::vector<Variant> variants;
  variants.push_back({"direct", direct, {}, {}, 0});
  variants.push_back({"cpp", cpp, {}, {}, 0});
  variants.push_back({"c", c_api, {}, {}, 0});
  variants.push_back({"floor_socket", [&] { socket_echo.RoundTrip(false); }, {}, {}, 0});
  variants.push_back({"floor_thread", [&] { thread_echo.RoundTrip(); }, {}, {}, 0});
  variants.push_back({"floor_socket_poll", [&] { socket_echo.RoundTrip(true); }, {}, {}, 0});

  MeasureInRounds(o, &variants);
  CheckSum("direct call", da.data(), db.data(), dc.data(), n);
  CheckSum("C++ API", a.data(), b.data(), c_cpp.data(), n);
  CheckSum("C API", a.data(), b.data(), c_c.data(), n);
  ReportRoundTrip(&variants, report);
}

// ---- OpenCL round trip --------------------------------------------------------------------------

#ifdef ATOLL_BENCH_OPENCL
// Page-aligned memory, as the daemon's mapping of a client buffer is: what the backend sees.
class PageAligned {
 public:
  explicit PageAligned(size_t floats)
      : data_(static_cast<float*>(
            std::aligned_alloc(4096, (floats * sizeof(float) + 4095) / 4096 * 4096))) {
    if (data_ == nullptr) throw std::bad_alloc();
  }
  ~PageAligned() { std::free(data_); }
  PageAligned(const PageAligned&) = delete;
  PageAligned& operator=(const PageAligned&) = delete;
  float* data() { return data_; }

 private:
  float* data_;
};

void OpenclRoundTrip(const Options& o, Report* report) {
  std::string unavailable = DirectOpencl::Unavailable();
  if (!unavailable.empty()) {
    Progress("  skipped: " + unavailable);
    return;
  }
  int n = kVectorLength;
  // vector-opencl's manifest: {"global": "size", "local": 64}.
  constexpr uint32_t kLocal = 64;
  const std::string source = o.build_dir + "/accelerators/vector-opencl/vector.cl";
  DirectOpencl direct(source, "vadd");
  PluginOpencl plugin(o.build_dir + "/lib/atoll/backends/libatoll_backend_opencl.so", source,
                      "vadd");

  // The baseline uses ordinary memory, as a program without Atoll would.
  std::vector<float> da(n), db(n), dc(n);
  PageAligned pa(n), pb(n), pc(n);
  atoll::vector<float> a(n), b(n), c(n);
  for (int i = 0; i < n; ++i) {
    a[i] = da[i] = pa.data()[i] = static_cast<float>(i) * 0.5f;
    b[i] = db[i] = pb.data()[i] = static_cast<float>(n - i);
  }
  atoll::request request("vector.addition");
  request.arg(a).arg(b).arg(c).arg(n);

  std::vector<Variant> variants;
  variants.push_back({"opencl_direct",
                      [&] { direct.Vadd(da.data(), db.data(), dc.data(), n, kLocal); },
                      {},
                      {},
                      0});
  variants.push_back({"opencl_atoll", [&] { atoll::submit(request).get(); }, {}, {}, 0});
  variants.push_back({"opencl_plugin",
                      [&] { plugin.Vadd(pa.data(), pb.data(), pc.data(), n, kLocal); },
                      {},
                      {},
                      0});
  MeasureInRounds(o, &variants);
  CheckSum("direct OpenCL call", da.data(), db.data(), dc.data(), n);
  CheckSum("Atoll on opencl", a.data(), b.data(), c.data(), n);
  CheckSum("opencl backend in-process", pa.data(), pb.data(), pc.data(), n);

  std::map<std::string, LatencySummary> s;
  for (Variant& v : variants) s[v.key] = Summarize(v.samples_ns);
  const LatencySummary& d = s["opencl_direct"];
  const LatencySummary& atoll_path = s["opencl_atoll"];
  const LatencySummary& in_process = s["opencl_plugin"];
  const double none = std::numeric_limits<double>::quiet_NaN();
  const std::string section =
      "OpenCL round trip: vector.addition on " + std::to_string(kVectorLength) + " floats on " +
      direct.device_name() +
      " (baseline: vector.cl's vadd called directly through OpenCL in-process)";
  report->Add(Microseconds(section, "opencl.direct.p50", d.p50_us, none, "",
                           Details(d, "clCreateBuffer x3, 2 writes, NDRange, read, clFinish")));
  report->Add(Microseconds(section, "opencl.direct.p99", d.p99_us, none, ""));
  Result p50 =
      Microseconds(section, "opencl.atoll.p50", atoll_path.p50_us, d.p50_us, "opencl.direct.p50",
                   Details(atoll_path,
                           "atoll::submit(r).get() through atolld, whose "
                           "only backend is opencl"));
  p50.target = "<= 1.2x direct";
  p50.target_met = atoll_path.p50_us <= kOpenclTargetRatio * d.p50_us;
  report->Add(std::move(p50));
  report->Add(
      Microseconds(section, "opencl.atoll.p99", atoll_path.p99_us, d.p99_us, "opencl.direct.p99"));
  report->Add(Microseconds(section, "opencl.atoll.overhead_p50", atoll_path.p50_us - d.p50_us,
                           d.p50_us, "opencl.direct.p50"));
  report->Add(Microseconds(section, "opencl.backend_in_process.p50", in_process.p50_us, d.p50_us,
                           "opencl.direct.p50",
                           Details(in_process,
                                   "Atoll's opencl backend plugin driven in this "
                                   "process, no daemon: launch, then wait for done")));
  report->Add(Microseconds(section, "opencl.backend_in_process.p99", in_process.p99_us, d.p99_us,
                           "opencl.direct.p99"));
  for (const Variant& v : variants) {
    report->Add(Diagnostic{"roundtrip." + v.key, static_cast<double>(v.samples_ns.size()),
                           static_cast<double>(v.wall_ns) / 1e9, v.usage});
  }
}
#endif

// ---- Request rate -------------------------------------------------------------------------------

// Keeps `window` testing.noop requests in flight until `deadline_ns`: waits for the oldest before
// submitting the next, as a pipelining client does, then waits for the rest. Returns how many
// completed.
uint64_t PipelineNoop(int window, int64_t deadline_ns) {
  atoll::request noop("testing.noop");
  std::vector<std::future<void>> ring(static_cast<size_t>(window));
  for (auto& f : ring) f = atoll::submit(noop);
  uint64_t done = 0;
  size_t oldest = 0;
  while (NowNs() < deadline_ns) {
    ring[oldest].get();
    ++done;
    ring[oldest] = atoll::submit(noop);
    if (++oldest == ring.size()) oldest = 0;
  }
  for (size_t i = 0; i < ring.size(); ++i) {
    ring[(oldest + i) % ring.size()].get();
    ++done;
  }
  return done;
}

int64_t Seconds(double s) { return static_cast<int64_t>(s * 1e9); }

// A short run that connects and brings the daemon's workers to their steady state.
int64_t WarmupNs(const Options& o) { return std::min(Seconds(0.2), Seconds(o.duration_s / 10)); }

// Baseline: `threads` threads calling atoll_kernel_noop back to back for `duration_s`.
double DirectNoopRate(const DirectKernel& noop, int threads, double duration_s) {
  std::atomic<bool> stop{false};
  std::latch ready(threads + 1);
  std::vector<uint64_t> counts(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      char error[64];
      uint64_t calls = 0;
      ready.arrive_and_wait();
      while (!stop.load(std::memory_order_relaxed)) {
        // Batches keep the stop check out of the figure.
        for (int i = 0; i < 256; ++i) noop.Call(nullptr, 0, error, sizeof(error));
        calls += 256;
      }
      counts[static_cast<size_t>(t)] = calls;
    });
  }
  ready.arrive_and_wait();
  int64_t begin = NowNs();
  std::this_thread::sleep_for(std::chrono::nanoseconds(Seconds(duration_s)));
  stop.store(true);
  for (auto& w : workers) w.join();
  double elapsed = static_cast<double>(NowNs() - begin) / 1e9;
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return static_cast<double>(total) / elapsed;
}

struct RateRun {
  uint64_t requests = 0;
  double elapsed_s = 0;
  Usage usage;
  double rate() const { return elapsed_s > 0 ? static_cast<double>(requests) / elapsed_s : 0; }
};

// `threads` client threads of this process, all on its one connection to the daemon.
RateRun DaemonNoopThreads(const Options& o, int threads) {
  std::latch ready(threads + 1), go(1);
  std::atomic<int64_t> deadline{0};
  std::vector<uint64_t> counts(static_cast<size_t>(threads));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        PipelineNoop(o.window, NowNs() + WarmupNs(o));
      } catch (...) {
        errors[static_cast<size_t>(t)] = std::current_exception();
      }
      ready.count_down();
      go.wait();
      if (errors[static_cast<size_t>(t)]) return;
      try {
        counts[static_cast<size_t>(t)] = PipelineNoop(o.window, deadline.load());
      } catch (...) {
        errors[static_cast<size_t>(t)] = std::current_exception();
      }
    });
  }
  ready.arrive_and_wait();
  RateRun run;
  Usage before = SampleUsage(o.daemon_pid, SampleAt::kStart);
  int64_t begin = NowNs();
  deadline.store(begin + Seconds(o.duration_s));
  go.count_down();
  for (auto& w : workers) w.join();
  run.elapsed_s = static_cast<double>(NowNs() - begin) / 1e9;
  run.usage = SampleUsage(o.daemon_pid, SampleAt::kEnd) - before;
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  for (uint64_t c : counts) run.requests += c;
  return run;
}

// ---- Client processes ---------------------------------------------------------------------------
//
// Each client process is this binary run again with --child-noop, not a bare fork: by then this
// process has threads (libatoll's reader, at least), and POSIX allows a forked child of a
// threaded process only async-signal-safe calls until it execs. A fresh program also sets up
// libatoll and its connection exactly as an independent client would. The parent and a child
// talk over two pipes: the child writes "ready" once connected and warm, waits for one byte, runs
// for the duration and writes "<requests> <CPU ns> <context switches>" of that run.

std::string ReadLine(int fd) {
  std::string line;
  char ch;
  for (;;) {
    ssize_t n = ::read(fd, &ch, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("a client process exited early (see its errors above)");
    if (ch == '\n') return line;
    line += ch;
  }
}

void WriteAll(int fd, const std::string& text) {
  size_t sent = 0;
  while (sent < text.size()) {
    ssize_t n = ::write(fd, text.data() + sent, text.size() - sent);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(std::string("write to a pipe: ") + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
}

struct Child {
  pid_t pid = -1;
  int to_child = -1;
  int from_child = -1;
};

Child SpawnClient(const Options& o) {
  int to[2], from[2];
  if (::pipe2(to, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  if (::pipe2(from, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are allowed in a process that has threads.
  std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<std::string> args = {self,         "--child-noop",
                                   "--window",   std::to_string(o.window),
                                   "--duration", std::to_string(o.duration_s)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::dup2(to[0], STDIN_FILENO);
    ::dup2(from[1], STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(to[0]);
  ::close(from[1]);
  return Child{pid, to[1], from[0]};
}

RateRun DaemonNoopProcesses(const Options& o, int processes) {
  std::vector<Child> children;
  auto reap = [&] {
    for (Child& c : children) {
      ::close(c.to_child);
      ::close(c.from_child);
      int status = 0;
      ::waitpid(c.pid, &status, 0);
    }
    children.clear();
  };
  try {
    for (int p = 0; p < processes; ++p) children.push_back(SpawnClient(o));
    for (Child& c : children) {
      if (ReadLine(c.from_child) != "ready") throw std::runtime_error("bad client handshake");
    }
    RateRun run;
    Usage before = SampleUsage(o.daemon_pid, SampleAt::kStart);
    int64_t begin = NowNs();
    for (Child& c : children) WriteAll(c.to_child, "g");
    Usage clients;
    for (Child& c : children) {
      std::istringstream report(ReadLine(c.from_child));
      uint64_t requests = 0;
      int64_t cpu_ns = 0, switches = 0;
      if (!(report >> requests >> cpu_ns >> switches)) {
        throw std::runtime_error("a client process sent a malformed report");
      }
      run.requests += requests;
      clients.client_cpu_ns += cpu_ns;
      clients.client_switches += switches;
    }
    run.elapsed_s = static_cast<double>(NowNs() - begin) / 1e9;
    // Sampled before the children are reaped, so that RUSAGE_CHILDREN does not add their
    // start-up and warm-up: each child reported what its measured phase cost.
    run.usage = SampleUsage(o.daemon_pid, SampleAt::kEnd) - before;
    run.usage.client_cpu_ns += clients.client_cpu_ns;
    run.usage.client_switches += clients.client_switches;
    reap();
    return run;
  } catch (...) {
    for (Child& c : children) ::kill(c.pid, SIGTERM);
    reap();
    throw;
  }
}

int ChildNoop(const Options& o) {
  try {
    PipelineNoop(o.window, NowNs() + WarmupNs(o));
    WriteAll(STDOUT_FILENO, "ready\n");
    char go;
    while (::read(STDIN_FILENO, &go, 1) < 0 && errno == EINTR) {
    }
    Usage before = SampleUsage(0, SampleAt::kStart);
    uint64_t done = PipelineNoop(o.window, NowNs() + Seconds(o.duration_s));
    Usage used = SampleUsage(0, SampleAt::kEnd) - before;
    WriteAll(STDOUT_FILENO, std::to_string(done) + " " + std::to_string(used.client_cpu_ns) + " " +
                                std::to_string(used.client_switches) + "\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "atoll_bench client process: %s\n", e.what());
    return 1;
  }
}

void Rates(const Options& o, Report* report) {
  DirectKernel noop(o.build_dir + "/accelerators/testing/testing.so", "atoll_kernel_noop");
  const std::string section = "Pipelined requests: testing.noop, " + std::to_string(o.window) +
                              " in flight per client (baseline: atoll_kernel_noop called "
                              "in-process by as many threads)";
  std::map<int, double> direct;
  for (int clients : o.clients) {
    if (direct.count(clients) != 0) continue;
    Progress("  direct atoll_kernel_noop, " + std::to_string(clients) + " thread(s)");
    direct[clients] = DirectNoopRate(noop, clients, o.baseline_duration_s);
    Result r;
    r.section = section;
    r.name = "rate.direct.threads" + std::to_string(clients);
    r.value = direct[clients];
    r.unit = "req/s";
    report->Add(std::move(r));
  }
  for (const char* kind : {"threads", "processes"}) {
    if (!Wants(o.scenarios, kind)) continue;
    for (int clients : o.clients) {
      Progress("  testing.noop through atolld, " + std::to_string(clients) + " " + kind);
      RateRun run = std::string(kind) == "threads" ? DaemonNoopThreads(o, clients)
                                                   : DaemonNoopProcesses(o, clients);
      std::string key = std::string(kind) + std::to_string(clients);
      Result r;
      r.section = section;
      r.name = "rate." + key;
      r.value = run.rate();
      r.unit = "req/s";
      r.baseline = direct[clients];
      r.baseline_name = "rate.direct.threads" + std::to_string(clients);
      r.target = ">= 100000 req/s";
      r.target_met = r.value >= kNoopTarget;
      // Little's law: with this many requests in flight, the rate implies this time per request.
      double in_flight = static_cast<double>(clients) * o.window;
      r.details = {{"requests", run.requests},
                   {"elapsed_s", run.elapsed_s},
                   {"clients", clients},
                   {"window", o.window},
                   {"mean_time_in_flight_us", r.value > 0 ? in_flight / r.value * 1e6 : 0}};
      report->Add(std::move(r));
      report->Add(
          Diagnostic{"rate." + key, static_cast<double>(run.requests), run.elapsed_s, run.usage});
    }
  }
}

// ---- Main ---------------------------------------------------------------------------------------

// CLI11's own list splitting trips GCC 12's -Wnull-dereference inside libstdc++; lists are
// split here instead.
std::string DefaultBuildDir() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "build";
  return self.parent_path().parent_path().string();  // <build>/bin/atoll_bench
}

int Run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "atoll_bench: Atoll's overhead and request rate, each figure a ratio against the same "
      "kernel called directly in this process, measured in the same run. Needs a running atolld "
      "at $ATOLL_SOCKET with the vector and testing accelerators installed; bench/run.sh starts "
      "a private one and runs this.",
      "atoll_bench"};
  app.add_option("--build", o.build_dir,
                 "build folder holding accelerators/{vector,testing}/*.so for the direct "
                 "baselines. Default: the folder above this binary's bin/");
  app.add_option("--json", o.json_path, "also write the results as JSON to this file");
  app.add_flag("--quick", o.quick,
               "a smoke run of about 3 s: few iterations and short durations (explicit options "
               "still win)");
  app.add_option("--iterations", o.iterations, "timed round trips per variant")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed round trips per variant first")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--rounds", o.rounds, "round-trip variants take turns in this many rounds")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--duration", o.duration_s, "seconds per request-rate run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--baseline-duration", o.baseline_duration_s,
                 "seconds per direct no-op call-rate run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--window", o.window, "requests in flight per client in the rate runs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  std::string clients = "1,2,4",
              scenarios = "roundtrip,threads,processes,devices,tenants,reprogram";
  app.add_option("--clients", clients, "client thread/process counts for the rate runs")
      ->capture_default_str();
  app.add_option("--scenarios", scenarios,
                 "which to run, of roundtrip, threads, processes, opencl, devices, tenants and "
                 "reprogram (comma-separated); opencl needs a daemon whose only backend is "
                 "opencl, as bench/run.sh starts; devices, tenants and reprogram start their own")
      ->capture_default_str();
  app.add_option("--daemon-pid", o.daemon_pid,
                 "the daemon's pid, to report its CPU time and context switches per request");
  app.add_option("--git", o.git, "the source revision, recorded in the JSON");
  app.add_flag("--child-noop", o.child, "internal: one client process of the processes scenario")
      ->group("");
  app.add_option("--hold-us", o.hold_us, "testing.hold's time in the scheduling scenarios")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--child-hold", o.child_hold, "internal: a client of the scheduling scenarios")
      ->group("");
  app.add_option("--hold-accelerators", o.hold_accelerators, "internal")->group("");
  app.add_option("--hold-mix", o.hold_mix, "internal")->group("");
  CLI11_PARSE(app, argc, argv);

  if (o.child) return ChildNoop(o);
  if (o.child_hold) {
    return ChildHold(SplitCommas(o.hold_accelerators), o.hold_mix, o.hold_us, o.window,
                     o.duration_s);
  }
  o.clients.clear();
  for (const std::string& item : SplitCommas(clients)) {
    int count = 0;
    if (std::sscanf(item.c_str(), "%d", &count) != 1 || count <= 0 || count > 1024) {
      std::fprintf(stderr, "atoll_bench: --clients: '%s' is not a count from 1 to 1024\n",
                   item.c_str());
      return 2;
    }
    o.clients.push_back(count);
  }
  o.scenarios = SplitCommas(scenarios);
  for (const std::string& item : o.scenarios) {
    if (item != "roundtrip" && item != "threads" && item != "processes" && item != "opencl" &&
        item != "devices" && item != "tenants" && item != "reprogram") {
      std::fprintf(stderr,
                   "atoll_bench: --scenarios: unknown '%s' (roundtrip, threads, processes, "
                   "opencl, devices, tenants, reprogram)\n",
                   item.c_str());
      return 2;
    }
#ifndef ATOLL_BENCH_OPENCL
    if (item == "opencl") {
      std::fprintf(stderr,
                   "atoll_bench: --scenarios: this build has no opencl backend (CMake found no "
                   "OpenCL)\n");
      return 2;
    }
#endif
  }
  if (o.quick) {
    auto unless_given = [&](const char* flag, auto* field, auto value) {
      if (app.count(flag) == 0) *field = value;
    };
    unless_given("--iterations", &o.iterations, 600);
    unless_given("--warmup", &o.warmup, 200);
    unless_given("--rounds", &o.rounds, 2);
    unless_given("--duration", &o.duration_s, 0.25);
    unless_given("--baseline-duration", &o.baseline_duration_s, 0.05);
  }
  if (o.build_dir.empty()) o.build_dir = DefaultBuildDir();
  const char* socket = std::getenv("ATOLL_SOCKET");
  std::string socket_path = socket != nullptr && socket[0] != '\0' ? socket : ATOLL_DEFAULT_SOCKET;

  MachineInfo machine = DescribeMachine();
  std::string date = UtcNow();
  double clock_ns = ClockCostNs();
  std::printf("atoll_bench %s: %s, %u cores, %s; load average %s; steady_clock costs %.0f ns\n",
              date.c_str(), machine.cpu_model.c_str(), machine.cores, machine.kernel.c_str(),
              machine.loadavg.c_str(), clock_ns);
  std::printf("daemon at %s%s\n", socket_path.c_str(),
              o.daemon_pid > 0 ? (" (pid " + std::to_string(o.daemon_pid) + ")").c_str() : "");
  std::fflush(stdout);

  Report report;
  if (Wants(o.scenarios, "roundtrip")) {
    Progress("round trip: vector.addition, direct vs C++ API vs C API");
    RoundTrip(o, &report);
  }
  if (Wants(o.scenarios, "threads") || Wants(o.scenarios, "processes")) {
    Progress("request rate: testing.noop");
    Rates(o, &report);
  }
#ifdef ATOLL_BENCH_OPENCL
  if (Wants(o.scenarios, "opencl")) {
    Progress("OpenCL round trip: vector.addition, direct OpenCL vs Atoll vs the backend alone");
    OpenclRoundTrip(o, &report);
  }
#endif
  SchedulingOptions scheduling{o.build_dir, o.duration_s, o.hold_us};
  if (Wants(o.scenarios, "devices")) {
    Progress("scheduling: throughput over simulated devices");
    DeviceScaling(scheduling, &report);
  }
  if (Wants(o.scenarios, "tenants")) {
    Progress("scheduling: two tenants on one device");
    TenantsSharing(scheduling, &report);
  }
  if (Wants(o.scenarios, "reprogram")) {
    Progress("scheduling: reprogramming, fair against FIFO");
    Reprogramming(scheduling, &report);
  }
  report.Print(stdout);
  std::fflush(stdout);

  if (!o.json_path.empty()) {
    nlohmann::json config = {{"iterations", o.iterations},
                             {"warmup", o.warmup},
                             {"rounds", o.rounds},
                             {"duration_s", o.duration_s},
                             {"baseline_duration_s", o.baseline_duration_s},
                             {"window", o.window},
                             {"clients", o.clients},
                             {"scenarios", o.scenarios},
                             {"quick", o.quick},
                             {"vector_length", kVectorLength},
                             {"clock_cost_ns", clock_ns},
                             {"socket", socket_path},
                             {"build_dir", o.build_dir}};
    nlohmann::json doc = report.ToJson(machine, date, o.git, config);
    if (!WriteJson(o.json_path, doc, "atoll_bench")) return 1;
    std::fprintf(stderr, "wrote %s\n", o.json_path.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace atl::bench

int main(int argc, char** argv) {
  try {
    return atl::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "atoll_bench: %s\n", e.what());
    return 1;
  }
}
