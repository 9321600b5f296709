#include "bench_support.h"

#include <dirent.h>
#include <dlfcn.h>
#include <linux/futex.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "atoll/atoll.hpp"

namespace atl::bench {

void ThrowC(const char* call, atoll_status_code code) {
  throw atoll::error(code, std::string(call) + ": " + atoll_last_error());
}

CRequest::CRequest(const char* accelerator) : handle_(atoll_request_create(accelerator)) {
  if (handle_ == nullptr) ThrowC("atoll_request_create", ATOLL_INVALID_ARGUMENT);
}

void SetVectorAdditionArgs(const CRequest& request, const float* a, const float* b, float* c,
                           int n) {
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  const void* arrays[3] = {a, b, c};
  for (uint32_t i = 0; i < 3; ++i) {
    atoll_status_code rc = atoll_request_arg_array(request.get(), bytes, arrays[i], i);
    if (rc != ATOLL_OK) ThrowC("atoll_request_arg_array", rc);
  }
  atoll_status_code rc = atoll_request_arg_scalar(request.get(), sizeof(n), &n, 3);
  if (rc != ATOLL_OK) ThrowC("atoll_request_arg_scalar", rc);
}

void SubmitAndWaitC(const CRequest& request) {
  atoll_response response = nullptr;
  atoll_status_code rc = atoll_submit(request.get(), &response);
  if (rc != ATOLL_OK) ThrowC("atoll_submit", rc);
  rc = atoll_response_wait(response);
  atoll_response_release(response);
  if (rc != ATOLL_OK) ThrowC("atoll_response_wait", rc);
}

namespace {

int64_t TimevalNs(const timeval& tv) {
  return static_cast<int64_t>(tv.tv_sec) * 1000000000 + static_cast<int64_t>(tv.tv_usec) * 1000;
}

std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Adds up one thread's figures from /proc/PID/task/TID/{schedstat,status}.
void AddThread(const std::string& task, Usage* usage) {
  // schedstat: nanoseconds on CPU, nanoseconds waiting on a run queue, timeslices.
  std::istringstream sched(FirstLine(task + "/schedstat"));
  int64_t on_cpu = 0, waiting = 0;
  if (sched >> on_cpu >> waiting) {
    usage->daemon_cpu_ns += on_cpu;
    usage->daemon_runqueue_ns += waiting;
  }
  std::ifstream status(task + "/status");
  std::string line;
  while (std::getline(status, line)) {
    for (const char* key : {"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"}) {
      if (line.rfind(key, 0) == 0)
        usage->daemon_switches += std::stoll(line.substr(std::strlen(key)));
    }
  }
}

void AddDaemon(pid_t daemon, Usage* usage) {
  if (daemon <= 0) return;
  std::string tasks = "/proc/" + std::to_string(daemon) + "/task";
  DIR* dir = ::opendir(tasks.c_str());
  if (dir == nullptr) return;
  usage->has_daemon = true;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    AddThread(tasks + "/" + entry->d_name, usage);
  }
  ::closedir(dir);
}

}  // namespace

LatencySummary Summarize(std::vector<int64_t>& samples_ns) {
  LatencySummary s;
  s.count = samples_ns.size();
  if (samples_ns.empty()) return s;
  std::sort(samples_ns.begin(), samples_ns.end());
  auto rank = [&](double q) {
    size_t index = static_cast<size_t>(std::ceil(q * static_cast<double>(s.count)));
    return static_cast<double>(samples_ns[std::clamp<size_t>(index, 1, s.count) - 1]) / 1e3;
  };
  s.p50_us = rank(0.50);
  s.p99_us = rank(0.99);
  s.min_us = static_cast<double>(samples_ns.front()) / 1e3;
  s.max_us = static_cast<double>(samples_ns.back()) / 1e3;
  long double total = std::accumulate(samples_ns.begin(), samples_ns.end(), 0.0L);
  s.mean_us = static_cast<double>(total / static_cast<long double>(s.count) / 1e3L);
  return s;
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double ClockCostNs() {
  constexpr int kBatch = 1000;
  std::vector<int64_t> per_batch;
  for (int round = 0; round < 21; ++round) {
    int64_t begin = NowNs();
    int64_t sink = 0;
    for (int i = 0; i < kBatch; ++i) sink += NowNs();
    int64_t end = NowNs();
    // Keeps the loop from being optimised away without affecting the figure.
    if (sink == 42) per_batch.push_back(0);
    per_batch.push_back(end - begin);
  }
  std::sort(per_batch.begin(), per_batch.end());
  return static_cast<double>(per_batch[per_batch.size() / 2]) / kBatch;
}

DirectKernel::DirectKernel(const std::string& binary_path, const std::string& symbol) {
  // RTLD_NOW: resolving lazily would put the first call's symbol binding inside the timing.
  handle_ = ::dlopen(binary_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle_ == nullptr) {
    throw std::runtime_error("cannot load '" + binary_path + "': " + ::dlerror());
  }
  function_ = reinterpret_cast<atoll_cpu_kernel_fn>(::dlsym(handle_, symbol.c_str()));
  if (function_ == nullptr) {
    std::string why = ::dlerror();
    ::dlclose(handle_);
    throw std::runtime_error("'" + binary_path + "' has no kernel symbol '" + symbol + "': " + why);
  }
}

DirectKernel::~DirectKernel() { ::dlclose(handle_); }

SocketEcho::SocketEcho(size_t packet_bytes) : packet_(std::max<size_t>(packet_bytes, 1), 'x') {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) {
    throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
  }
  // The buffer is allocated before fork: the child of a threaded process may only make
  // async-signal-safe calls, and recv, send and _exit are.
  std::vector<char> echo(packet_.size() + 1);
  pid_ = ::fork();
  if (pid_ < 0) {
    int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw std::runtime_error(std::string("fork: ") + std::strerror(e));
  }
  if (pid_ == 0) {
    ::close(fds[0]);
    for (;;) {
      ssize_t n = ::recv(fds[1], echo.data(), echo.size(), 0);
      if (n <= 0 || ::send(fds[1], echo.data(), static_cast<size_t>(n), MSG_NOSIGNAL) != n) {
        ::_exit(0);
      }
    }
  }
  ::close(fds[1]);
  fd_ = fds[0];
}

SocketEcho::~SocketEcho() {
  ::close(fd_);  // the echo process sees end-of-file and exits
  int status = 0;
  ::waitpid(pid_, &status, 0);
}

void SocketEcho::RoundTrip(bool poll) {
  if (::send(fd_, packet_.data(), packet_.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(packet_.size())) {
    throw std::runtime_error(std::string("socket echo: send: ") + std::strerror(errno));
  }
  ssize_t n;
  do {
    n = ::recv(fd_, packet_.data(), packet_.size(), poll ? MSG_DONTWAIT : 0);
  } while (n < 0 && (errno == EAGAIN || errno == EINTR));
  if (n != static_cast<ssize_t>(packet_.size())) {
    throw std::runtime_error(std::string("socket echo: recv: ") +
                             (n < 0 ? std::strerror(errno) : "short packet"));
  }
}

// Raw futex calls rather than std::atomic::wait, which spins and yields before sleeping in
// libstdc++ and would measure the scheduler instead of one wake-up.
struct ThreadEcho::State {
  enum : uint32_t { kIdle, kRequest, kReply, kStop };
  std::atomic<uint32_t> turn{kIdle};
  std::thread thread;

  void WaitWhile(uint32_t value) {
    while (turn.load(std::memory_order_acquire) == value) {
      ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&turn), FUTEX_WAIT_PRIVATE, value, nullptr,
                nullptr, 0);
    }
  }
  void Set(uint32_t value) {
    turn.store(value, std::memory_order_release);
    ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(&turn), FUTEX_WAKE_PRIVATE, 1, nullptr,
              nullptr, 0);
  }
};

ThreadEcho::ThreadEcho() : state_(std::make_unique<State>()) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  state_->thread = std::thread([s = state_.get()] {
    for (;;) {
      uint32_t v = s->turn.load(std::memory_order_acquire);
      if (v == State::kStop) return;
      if (v != State::kRequest) {
        s->WaitWhile(v);
        continue;
      }
      s->Set(State::kReply);
    }
  });
}

ThreadEcho::~ThreadEcho() {
  state_->Set(State::kStop);
  state_->thread.join();
}

void ThreadEcho::RoundTrip() {
  state_->Set(State::kRequest);
  state_->WaitWhile(State::kRequest);
}

Usage& Usage::operator+=(const Usage& other) {
  client_cpu_ns += other.client_cpu_ns;
  client_switches += other.client_switches;
  daemon_cpu_ns += other.daemon_cpu_ns;
  daemon_runqueue_ns += other.daemon_runqueue_ns;
  daemon_switches += other.daemon_switches;
  has_daemon = has_daemon || other.has_daemon;
  return *this;
}

Usage Usage::operator-(const Usage& other) const {
  Usage d;
  d.client_cpu_ns = client_cpu_ns - other.client_cpu_ns;
  d.client_switches = client_switches - other.client_switches;
  d.daemon_cpu_ns = daemon_cpu_ns - other.daemon_cpu_ns;
  d.daemon_runqueue_ns = daemon_runqueue_ns - other.daemon_runqueue_ns;
  d.daemon_switches = daemon_switches - other.daemon_switches;
  d.has_daemon = has_daemon && other.has_daemon;
  return d;
}

Usage SampleUsage(pid_t daemon, SampleAt at) {
  Usage usage;
  if (at == SampleAt::kStart) AddDaemon(daemon, &usage);
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    rusage ru{};
    if (::getrusage(who, &ru) != 0) continue;
    usage.client_cpu_ns += TimevalNs(ru.ru_utime) + TimevalNs(ru.ru_stime);
    usage.client_switches += ru.ru_nvcsw + ru.ru_nivcsw;
  }
  if (at == SampleAt::kEnd) AddDaemon(daemon, &usage);
  return usage;
}

std::string LoadAverage() { return FirstLine("/proc/loadavg"); }

MachineInfo DescribeMachine() {
  MachineInfo info;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    size_t colon = line.find(':');
    if (colon != std::string::npos)
      info.cpu_model = line.substr(line.find_first_not_of(' ', colon + 1));
    break;
  }
  long online = ::sysconf(_SC_NPROCESSORS_ONLN);
  info.cores = online > 0 ? static_cast<unsigned>(online) : std::thread::hardware_concurrency();
  utsname u{};
  if (::uname(&u) == 0) info.kernel = std::string(u.sysname) + " " + u.release + " " + u.version;
  info.clocksource = FirstLine("/sys/devices/system/clocksource/clocksource0/current_clocksource");
  info.loadavg = LoadAverage();
  return info;
}

std::string UtcNow() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> items;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find(',', begin);
    if (end == std::string::npos) end = text.size();
    if (end > begin) items.push_back(text.substr(begin, end - begin));
    begin = end + 1;
  }
  return items;
}

bool Wants(const std::vector<std::string>& scenarios, const std::string& scenario) {
  return std::find(scenarios.begin(), scenarios.end(), scenario) != scenarios.end();
}

void Progress(const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

}  // namespace atl::bench
