// multi_gpu_bench: how atolld's cuda backend scales over the GPUs of one host, and whether tenants'
// weights hold across all of them (issue 7). It starts its own atolld for each configuration, so
// one run measures every GPU count against the one-GPU figure of the same run.
//
//   scaling      fractal.mandelbrot requests (several ms of GPU work each, so that the daemon's
//                per-request cost of tens of microseconds is negligible) from client processes of
//                several threads, each keeping a window of requests in flight, enough that every
//                GPU always has work queued. The cuda backend is restricted to GPUs 0..N-1
//                ("devices") for N = 1, 2, 4 (up to the GPUs present); each N's throughput is
//                compared with N x the 1-GPU throughput. Issue target: at least 0.95 N.
//   gpu-tenants  two tenants (client processes running as uids 60001 and 60002, which need not
//                exist) with weights 1:1, then 1:3, both keeping every GPU saturated; each
//                tenant's share of the device time and of the completed work is compared with its
//                weight's share. Issue target: within 5% of the weight share. Needs root to run
//                clients as other users; otherwise it is skipped with that reason.
//
// Every point of the grid lies inside the Mandelbrot set's main cardioid, so every request
// costs exactly width x height x max_iterations iterations: the "work" of the figures. Throughput
// is counted by the daemon (`atoll status --json`) over a window of steady state, after a warm-up.
//
// The process forks its clients without exec (as tests/integration/scheduling_test.cpp does),
// so that clients running as other users need no access to this binary's folder. The parent
// therefore starts no thread and never connects to the daemon itself: it uses the `atoll`
// command for status.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "atoll/atoll.hpp"
#include "bench_support.h"
#include "report.h"

namespace atl::bench {
namespace {

using json = nlohmann::json;

constexpr double kScalingTarget = 0.95;
constexpr double kShareTolerance = 0.05;
constexpr uid_t kTenantUids[2] = {60001, 60002};
// No GPU benchmark may hang: a daemon that does not listen, or a client that does not stop, ends
// the run with an error after these.
constexpr int kDaemonStartTimeoutS = 60;
constexpr int kFirstResultsTimeoutS = 120;
constexpr int kClientStopTimeoutS = 60;
// The grid's corner and extent: the square [-0.5, 0] x [-0.25, 0.25], inside the main cardioid.
constexpr float kX0 = -0.5f;
constexpr float kY0 = -0.25f;
constexpr float kExtent = 0.5f;

struct Options {
  std::string build_dir;
  std::string json_path;
  std::string git;
  std::vector<std::string> scenarios = {"scaling", "gpu-tenants"};
  std::string gpus;  // "1,2,4"; empty: 1, 2, 4, 8 up to the GPUs present, and all of them
  // "cpu" runs the same measurement on the cpu backend's simulated devices, with cpu_devices
  // standing for the GPUs: it checks the benchmark itself where there is no GPU.
  std::string backend = "cuda";
  int cpu_devices = 2;
  int width = 2048;
  int height = 1024;
  int max_iterations = 8192;
  int streams = 4;
  int processes = 4;  // client processes of the scaling runs (each tenant has its own)
  int threads = 2;    // client threads per process
  int in_flight_per_gpu = 16;
  double warmup_s = 3;
  double measure_s = 10;
  bool quick = false;
};

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

// ---- Clients (forked child processes) -----------------------------------------------------------

// Set when the client's main thread has taken SIGTERM, which every thread keeps blocked: no
// handler runs, so no system call of the client library is interrupted by it.
std::atomic<bool> g_stop{false};

struct ClientSpec {
  uid_t uid = 0;  // 0: stay this process's user
  int threads = 1;
  int window = 1;  // requests in flight per thread
  int width = 0, height = 0, max_iterations = 0;
};

// One thread: `window` requests in flight, each with its own output array, resubmitted as soon as
// it completes, until SIGTERM; then it waits for those in flight. The first reply of each slot is
// checked: every point lies inside the set, so every count must be max_iterations.
void ClientThread(const ClientSpec& spec) {
  const size_t points = static_cast<size_t>(spec.width) * static_cast<size_t>(spec.height);
  const float step = kExtent / static_cast<float>(spec.width);
  struct Slot {
    atoll::vector<int32_t> counts;
    atoll::request request{"fractal.mandelbrot"};
    std::future<void> reply;
    bool checked = false;
  };
  std::vector<Slot> slots(static_cast<size_t>(spec.window));
  for (Slot& s : slots) {
    s.counts.assign(points, -1);
    s.request.arg(kX0)
        .arg(kY0)
        .arg(step)
        .arg(spec.max_iterations)
        .arg(spec.width)
        .arg(spec.height)
        .arg(s.counts);
    s.reply = atoll::submit(s.request);
  }
  size_t oldest = 0;
  while (!g_stop.load(std::memory_order_relaxed)) {
    Slot& s = slots[oldest];
    s.reply.get();
    if (!s.checked) {
      auto wrong = std::find_if(s.counts.begin(), s.counts.end(),
                                [&](int32_t c) { return c != spec.max_iterations; });
      if (wrong != s.counts.end()) {
        throw std::runtime_error("fractal.mandelbrot returned count " + std::to_string(*wrong) +
                                 " at point " + std::to_string(wrong - s.counts.begin()) +
                                 ", expected " + std::to_string(spec.max_iterations) +
                                 " (the whole grid lies inside the set)");
      }
      s.checked = true;
    }
    s.reply = atoll::submit(s.request);
    oldest = (oldest + 1) % slots.size();
  }
  for (Slot& s : slots) s.reply.get();
}

// Runs in the forked child, SIGTERM blocked (SpawnClient).
[[noreturn]] void ClientMain(const ClientSpec& spec, pid_t parent) {
  if (spec.uid != 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(spec.uid) != 0 || ::setuid(spec.uid) != 0) {
      std::fprintf(stderr, "multi_gpu_bench client: cannot become uid %u: %s\n",
                   static_cast<unsigned>(spec.uid), std::strerror(errno));
      std::_Exit(3);
    }
  }
  // Set after setuid, which clears it: a benchmark killed outright leaves no client running.
  ::prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (::getppid() != parent) std::_Exit(5);
  std::vector<std::string> errors(static_cast<size_t>(spec.threads));
  std::vector<std::thread> threads;
  std::atomic<int> running{spec.threads};
  for (int t = 0; t < spec.threads; ++t) {
    threads.emplace_back([&, t] {
      try {
        ClientThread(spec);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(t)] = e.what();
      }
      running.fetch_sub(1);
    });
  }
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  // Until SIGTERM, or until every thread has failed (the parent then sees the process end).
  while (running.load() > 0) {
    timespec poll{0, 100 * 1000 * 1000};
    if (::sigtimedwait(&term, nullptr, &poll) == SIGTERM) {
      g_stop.store(true);
      break;
    }
  }
  for (auto& t : threads) t.join();
  int status = 0;
  for (const auto& e : errors) {
    if (e.empty()) continue;
    std::fprintf(stderr, "multi_gpu_bench client (uid %u): %s\n", static_cast<unsigned>(::getuid()),
                 e.c_str());
    status = 4;
  }
  std::fflush(stderr);
  std::_Exit(status);
}

// Forks a client. The parent has started no thread, so the child may do anything. SIGTERM is
// blocked across the fork, so the child holds it blocked from its first instruction and a stop
// sent at once is not lost.
pid_t SpawnClient(const ClientSpec& spec) {
  sigset_t term, previous;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &term, &previous);
  const pid_t parent = ::getpid();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) ClientMain(spec, parent);
  int fork_error = errno;
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(fork_error));
  return pid;
}

// SIGTERM to every client, then waits for them; returns the first error, "" if all stopped well.
std::string StopClients(std::vector<pid_t>* clients) {
  for (pid_t pid : *clients) ::kill(pid, SIGTERM);
  std::string problem;
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(kClientStopTimeoutS);
  for (pid_t pid : *clients) {
    int status = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > give_up) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        if (problem.empty()) {
          problem = "client " + std::to_string(pid) + " did not stop within " +
                    std::to_string(kClientStopTimeoutS) + " s of SIGTERM; killed";
        }
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (problem.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      problem = "client " + std::to_string(pid) + " failed (" +
                (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                   : "signal " + std::to_string(WTERMSIG(status))) +
                "); its message is above";
    }
  }
  clients->clear();
  return problem;
}

// ---- The daemon ---------------------------------------------------------------------------------

std::string Capture(const std::string& command, int* exit_status) {
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) text.append(buffer, n);
  int status = ::pclose(pipe);
  *exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// A private atolld on a socket in `folder`, with `config` and the build's backends.
class Daemon {
 public:
  Daemon(const Options& o, const std::string& folder, const std::string& repository,
         const json& config)
      : build_(o.build_dir), socket_(folder + "/atolld.sock"), log_(folder + "/atolld.log") {
    std::string config_path = folder + "/atolld.json";
    std::ofstream(config_path) << config.dump(2) << "\n";
    std::filesystem::remove(socket_);
    std::string atolld = build_ + "/bin/atolld";
    std::string backends = build_ + "/lib/atoll/backends";
    std::vector<std::string> args = {atolld,   "--config",     config_path, "--socket",
                                     socket_,  "--repository", repository,  "--backend-dir",
                                     backends, "--log-level",  "warn"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
    if (pid_ == 0) {
      // A benchmark killed outright leaves no daemon behind.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      int log = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int null = ::open("/dev/null", O_RDONLY);
      if (log < 0 || null < 0) std::_Exit(127);
      ::dup2(null, 0);
      ::dup2(log, 1);
      ::dup2(log, 2);
      ::execv(argv[0], argv.data());
      std::_Exit(127);
    }
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(kDaemonStartTimeoutS);
    for (;;) {
      struct stat st {};
      if (::stat(socket_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) break;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("atolld exited at start; its log:\n" + ReadFile(log_));
      }
      if (std::chrono::steady_clock::now() > give_up) {
        Stop();
        throw std::runtime_error("atolld did not listen on " + socket_ + " within " +
                                 std::to_string(kDaemonStartTimeoutS) + " s; its log:\n" +
                                 ReadFile(log_));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // Clients of other users reach the socket through this folder.
    ::chmod(folder.c_str(), 0755);
    ::setenv("ATOLL_SOCKET", socket_.c_str(), 1);
  }
  ~Daemon() { Stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  json Query(const std::string& what) const {
    int status = 0;
    std::string text =
        Capture(build_ + "/bin/atoll --socket " + socket_ + " " + what + " --json 2>&1", &status);
    if (status != 0) throw std::runtime_error("atoll " + what + " failed: " + text);
    return json::parse(text);
  }
  std::string Log() const { return ReadFile(log_); }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  std::string build_;
  std::string socket_;
  std::string log_;
  pid_t pid_ = -1;
};

json DaemonConfig(const Options& o, int gpus, const json& tenants) {
  json config;
  if (o.backend == "cpu") {
    config["backends"] = {{"cpu", {{"devices", gpus}, {"compute_units", o.streams}}},
                          {"cuda", {{"enabled", false}}},
                          {"opencl", {{"enabled", false}}}};
  } else {
    json devices = json::array();
    for (int i = 0; i < gpus; ++i) devices.push_back(i);
    // Only the cuda backend runs fractal.mandelbrot here; the others stay out so that an OpenCL
    // platform of the same GPUs holds no context on them.
    config["backends"] = {{"cuda", {{"devices", devices}, {"streams", o.streams}}},
                          {"cpu", {{"enabled", false}}},
                          {"opencl", {{"enabled", false}}}};
  }
  if (!tenants.is_null()) config["tenants"] = tenants;
  return config;
}

// ---- Measurement --------------------------------------------------------------------------------

struct Window {
  double seconds = 0;
  json before, after;
};

uint64_t TotalDone(const json& status) {
  uint64_t total = 0;
  for (const auto& t : status["scheduler"]["tenants"]) total += t["done"].get<uint64_t>();
  return total;
}

json TenantNamed(const json& status, const std::string& name) {
  for (const auto& t : status["scheduler"]["tenants"]) {
    if (t["name"] == name) return t;
  }
  throw std::runtime_error("atoll status lists no tenant '" + name + "': " + status.dump());
}

// Waits until the clients have completed requests on every GPU, lets them run `warmup_s` more,
// then takes the daemon's counters at both ends of `measure_s`.
Window Measure(const Options& o, const Daemon& daemon, int gpus,
               const std::vector<pid_t>& clients) {
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(kFirstResultsTimeoutS);
  for (;;) {
    json status = daemon.Query("status");
    int busy_gpus = 0;
    for (const auto& d : status["scheduler"]["devices"]) {
      if (d["started"].get<uint64_t>() > 0) ++busy_gpus;
    }
    if (busy_gpus >= gpus && TotalDone(status) >= static_cast<uint64_t>(2 * gpus)) break;
    for (pid_t pid : clients) {
      // WNOWAIT leaves the child for StopClients to reap and report.
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
          info.si_pid == pid) {
        throw std::runtime_error(
            "a client ended before the measurement (its message is above); "
            "atolld's log:\n" +
            daemon.Log());
      }
    }
    if (std::chrono::steady_clock::now() > give_up) {
      throw std::runtime_error("no results from " + std::to_string(gpus) + " GPU(s) within " +
                               std::to_string(kFirstResultsTimeoutS) + " s; status:\n" +
                               status.dump(2) + "\natolld's log:\n" + daemon.Log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup_s));
  Window w;
  auto begin = std::chrono::steady_clock::now();
  w.before = daemon.Query("status");
  std::this_thread::sleep_for(std::chrono::duration<double>(o.measure_s));
  w.after = daemon.Query("status");
  w.seconds = Seconds(std::chrono::steady_clock::now() - begin);
  return w;
}

// Per device: how much of the window its compute units were busy (busy_ms counts every CU), and
// requests started.
json DeviceFigures(const Window& w, int streams) {
  json devices = json::array();
  const auto& before = w.before["scheduler"]["devices"];
  const auto& after = w.after["scheduler"]["devices"];
  for (size_t d = 0; d < after.size() && d < before.size(); ++d) {
    double busy_ms = after[d]["busy_ms"].get<double>() - before[d]["busy_ms"].get<double>();
    uint64_t started = after[d]["started"].get<uint64_t>() - before[d]["started"].get<uint64_t>();
    devices.push_back({{"device", after[d]["device"]},
                       {"started", started},
                       {"started_per_s", static_cast<double>(started) / w.seconds},
                       {"busy_compute_unit_fraction", busy_ms / 1e3 / w.seconds / streams},
                       {"queued_at_end", after[d]["queued"]}});
  }
  return devices;
}

double WorkPerRequest(const Options& o) {
  return static_cast<double>(o.width) * o.height * o.max_iterations;
}

struct TempFolder {
  std::string path;
  TempFolder() {
    char pattern[] = "/tmp/atoll-multi-gpu-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) {
      throw std::runtime_error(std::string("mkdtemp failed: ") + std::strerror(errno));
    }
    path = pattern;
  }
  ~TempFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

std::vector<int> GpuCounts(const Options& o, int present) {
  std::vector<int> counts;
  if (!o.gpus.empty()) {
    for (const std::string& item : SplitCommas(o.gpus)) {
      int n = std::stoi(item);
      if (n < 1 || n > present) {
        throw std::runtime_error("--gpus names " + item + " GPU(s); this host has " +
                                 std::to_string(present));
      }
      counts.push_back(n);
    }
    if (std::find(counts.begin(), counts.end(), 1) == counts.end()) {
      counts.insert(counts.begin(), 1);  // the baseline of every ratio
    }
    return counts;
  }
  for (int n = 1; n <= present; n *= 2) counts.push_back(n);
  if (counts.back() != present) counts.push_back(present);
  return counts;
}

// ---- (a) Scaling --------------------------------------------------------------------------------

void Scaling(const Options& o, const std::string& folder, const std::string& repository,
             int present, Report* report, json* runs) {
  const std::string section =
      "(a) Scaling: fractal.mandelbrot " + std::to_string(o.width) + "x" +
      std::to_string(o.height) + " x " + std::to_string(o.max_iterations) +
      " iterations per request (baseline: N x the 1-GPU throughput of this run)";
  double one_gpu = 0;
  for (int gpus : GpuCounts(o, present)) {
    int clients_n = o.processes;
    int total_window = o.in_flight_per_gpu * gpus;
    int window = std::max(1, (total_window + clients_n * o.threads - 1) / (clients_n * o.threads));
    Progress("  " + std::to_string(gpus) + " GPU(s): " + std::to_string(clients_n) +
             " client processes x " + std::to_string(o.threads) + " threads x " +
             std::to_string(window) + " requests in flight");
    Daemon daemon(o, folder, repository, DaemonConfig(o, gpus, json()));
    std::vector<pid_t> clients;
    Window w;
    try {
      ClientSpec spec;
      spec.threads = o.threads;
      spec.window = window;
      spec.width = o.width;
      spec.height = o.height;
      spec.max_iterations = o.max_iterations;
      for (int c = 0; c < clients_n; ++c) clients.push_back(SpawnClient(spec));
      w = Measure(o, daemon, gpus, clients);
    } catch (...) {
      StopClients(&clients);
      throw;
    }
    std::string problem = StopClients(&clients);
    if (!problem.empty()) throw std::runtime_error(problem + "; atolld's log:\n" + daemon.Log());
    double done = static_cast<double>(TotalDone(w.after) - TotalDone(w.before));
    double rate = done / w.seconds;
    if (gpus == 1) one_gpu = rate;
    json devices = DeviceFigures(w, o.streams);
    json details = {{"requests", done},
                    {"elapsed_s", w.seconds},
                    {"gpus", gpus},
                    {"in_flight", clients_n * o.threads * window},
                    {"giga_iterations_per_s", rate * WorkPerRequest(o) / 1e9},
                    {"ms_per_request_per_gpu", rate > 0 ? 1e3 * gpus / rate : 0.0},
                    {"devices", devices}};
    const std::string key = "scaling." + std::to_string(gpus) + "gpu";
    Result r = Make(section, key, rate, "req/s",
                    gpus == 1 ? std::numeric_limits<double>::quiet_NaN() : one_gpu * gpus,
                    gpus == 1 ? "" : "N x scaling.1gpu", details);
    if (gpus > 1) {
      r.target = ">= 0.95 x N x 1-GPU";
      r.target_met = r.ratio() >= kScalingTarget;
    }
    report->Add(std::move(r));
    report->Add(Make(section, key + ".work", rate * WorkPerRequest(o) / 1e9, "Giter/s",
                     gpus == 1 ? std::numeric_limits<double>::quiet_NaN()
                               : one_gpu * gpus * WorkPerRequest(o) / 1e9,
                     gpus == 1 ? "" : "N x scaling.1gpu.work"));
    // Saturation: the fraction of the window each GPU's compute units were busy.
    for (const auto& d : devices) {
      report->Add(Make(section, key + "." + d["device"].get<std::string>() + ".busy",
                       d["busy_compute_unit_fraction"].get<double>(), "of CUs"));
    }
    runs->push_back({{"scenario", "scaling"}, {"gpus", gpus}, {"details", details}});
  }
}

// ---- (b) Tenants' shares across all GPUs
// ---------------------------------------------------------

void Tenants(const Options& o, const std::string& folder, const std::string& repository,
             int present, Report* report, json* runs) {
  const std::string section = "(b) Tenants on all " + std::to_string(present) +
                              " GPU(s): each tenant's share against its weight's share";
  if (::geteuid() != 0) {
    std::string reason = "skipped: needs root, to run the two tenants' clients as uids " +
                         std::to_string(kTenantUids[0]) + " and " + std::to_string(kTenantUids[1]);
    Progress("  " + reason);
    Result r = Make(section, "tenants", std::numeric_limits<double>::quiet_NaN(), "",
                    std::numeric_limits<double>::quiet_NaN(), "", {{"reason", reason}});
    r.target = reason;
    report->Add(std::move(r));
    return;
  }
  const std::pair<int, int> weights[] = {{1, 1}, {1, 3}};
  for (auto [light_weight, heavy_weight] : weights) {
    const std::string ratio = std::to_string(light_weight) + ":" + std::to_string(heavy_weight);
    // Each tenant alone could saturate every GPU.
    int window = std::max(1, (o.in_flight_per_gpu * present + o.threads - 1) / o.threads);
    Progress("  weights " + ratio + " on " + std::to_string(present) + " GPU(s): 2 tenants x " +
             std::to_string(o.threads) + " threads x " + std::to_string(window) +
             " requests in flight");
    json tenants =
        json::array({{{"name", "light"}, {"users", {kTenantUids[0]}}, {"weight", light_weight}},
                     {{"name", "heavy"}, {"users", {kTenantUids[1]}}, {"weight", heavy_weight}}});
    Daemon daemon(o, folder, repository, DaemonConfig(o, present, tenants));
    std::vector<pid_t> clients;
    Window w;
    try {
      for (uid_t uid : kTenantUids) {
        ClientSpec spec;
        spec.uid = uid;
        spec.threads = o.threads;
        spec.window = window;
        spec.width = o.width;
        spec.height = o.height;
        spec.max_iterations = o.max_iterations;
        clients.push_back(SpawnClient(spec));
      }
      w = Measure(o, daemon, present, clients);
    } catch (...) {
      StopClients(&clients);
      throw;
    }
    std::string problem = StopClients(&clients);
    if (!problem.empty()) throw std::runtime_error(problem + "; atolld's log:\n" + daemon.Log());
    auto delta = [&](const char* tenant, const char* field) {
      return TenantNamed(w.after, tenant)[field].get<double>() -
             TenantNamed(w.before, tenant)[field].get<double>();
    };
    double time[2] = {delta("light", "device_ms"), delta("heavy", "device_ms")};
    double done[2] = {delta("light", "done"), delta("heavy", "done")};
    bool backlog = TenantNamed(w.after, "light")["queued"].get<int>() > 0 &&
                   TenantNamed(w.after, "heavy")["queued"].get<int>() > 0;
    const double weight_share[2] = {
        static_cast<double>(light_weight) / (light_weight + heavy_weight),
        static_cast<double>(heavy_weight) / (light_weight + heavy_weight)};
    const char* names[2] = {"light", "heavy"};
    for (int t = 0; t < 2; ++t) {
      double time_share = time[t] / (time[0] + time[1]);
      double done_share = done[t] / (done[0] + done[1]);
      json details = {{"weights", ratio},
                      {"device_ms", time[t]},
                      {"requests", done[t]},
                      {"share_of_completed_work", done_share},
                      {"giga_iterations_per_s", done[t] * WorkPerRequest(o) / 1e9 / w.seconds},
                      {"both_kept_a_backlog", backlog},
                      {"elapsed_s", w.seconds},
                      {"devices", DeviceFigures(w, o.streams)}};
      const std::string key = "tenants." + std::to_string(light_weight) + "_" +
                              std::to_string(heavy_weight) + "." + names[t];
      Result r = Make(section, key + ".time", time_share, "share", weight_share[t],
                      std::string("weight share ") + ratio, details);
      r.target = "within 5% of the weight share";
      r.target_met = std::fabs(r.ratio() - 1) <= kShareTolerance && backlog;
      report->Add(std::move(r));
      Result work = Make(section, key + ".work", done_share, "share", weight_share[t],
                         std::string("weight share ") + ratio);
      work.target = "within 5% of the weight share";
      work.target_met = std::fabs(work.ratio() - 1) <= kShareTolerance && backlog;
      report->Add(std::move(work));
    }
    runs->push_back({{"scenario", "gpu-tenants"},
                     {"weights", ratio},
                     {"gpus", present},
                     {"light", {{"device_ms", time[0]}, {"requests", done[0]}}},
                     {"heavy", {{"device_ms", time[1]}, {"requests", done[1]}}},
                     {"both_kept_a_backlog", backlog}});
  }
}

// ---- Main ---------------------------------------------------------------------------------------

// The GPUs the cuda backend opens with no restriction, from a daemon started for that; with none,
// the backend's own reason from the daemon's log.
int CountGpus(const Options& o, const std::string& folder, const std::string& repository,
              std::string* reason) {
  json config = {{"backends", {{"cpu", {{"enabled", false}}}, {"opencl", {{"enabled", false}}}}}};
  int gpus = 0;
  std::string log;
  try {
    Daemon daemon(o, folder, repository, config);
    for (const auto& d : daemon.Query("devices")) {
      if (d["backend"] == "cuda") ++gpus;
    }
    log = daemon.Log();
  } catch (const std::exception& e) {
    // A daemon with no device at all may refuse to start; its log says why.
    log = e.what();
  }
  if (gpus == 0) {
    std::stringstream lines(log);
    std::string line;
    while (std::getline(lines, line)) {
      if (line.find("cuda") != std::string::npos) *reason += (reason->empty() ? "" : "; ") + line;
    }
    if (reason->empty()) reason->assign("the daemon lists no cuda device; its log:\n" + log);
  }
  return gpus;
}

int Run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "multi_gpu_bench: atolld's cuda backend over 1, 2, 4... GPUs of this host (throughput "
      "against N x one GPU) and two weighted tenants over all of them (shares against weights). "
      "Starts its own atolld for each configuration; bench/run_multi_gpu.sh runs it. Exits 3 "
      "when the host has no usable NVIDIA GPU.",
      "multi_gpu_bench"};
  app.add_option("--build", o.build_dir,
                 "build folder with bin/atolld, bin/atoll, the cuda "
                 "backend and accelerators/mandelbrot-cuda");
  app.add_option("--json", o.json_path, "also write the results as JSON to this file");
  app.add_flag("--quick", o.quick, "a smoke run: short windows and lighter requests");
  std::string scenarios = "scaling,gpu-tenants";
  app.add_option("--scenarios", scenarios, "which to run: scaling, gpu-tenants")
      ->capture_default_str();
  app.add_option("--gpus", o.gpus,
                 "GPU counts of the scaling runs, e.g. 1,2,4 (default: 1, 2, 4, 8 up to the GPUs "
                 "present, and all of them)");
  app.add_option("--width", o.width, "grid width of a request")->capture_default_str();
  app.add_option("--height", o.height, "grid height of a request")->capture_default_str();
  app.add_option("--max-iterations", o.max_iterations, "iterations per point (all run)")
      ->capture_default_str();
  app.add_option("--streams", o.streams, "the cuda backend's streams (compute units) per GPU")
      ->capture_default_str();
  app.add_option("--processes", o.processes, "client processes of the scaling runs")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "client threads per process")->capture_default_str();
  app.add_option("--in-flight-per-gpu", o.in_flight_per_gpu,
                 "requests kept in flight per GPU (per tenant in gpu-tenants)")
      ->capture_default_str();
  app.add_option("--warmup", o.warmup_s, "seconds of load before each measured window")
      ->capture_default_str();
  app.add_option("--duration", o.measure_s, "seconds of each measured window")
      ->capture_default_str();
  app.add_option("--git", o.git, "the source revision, recorded in the JSON");
  app.add_option("--backend", o.backend,
                 "cuda, or cpu to check the benchmark itself on the cpu backend's simulated "
                 "devices (with lighter requests) where there is no GPU")
      ->check(CLI::IsMember({"cuda", "cpu"}))
      ->capture_default_str();
  app.add_option("--cpu-devices", o.cpu_devices,
                 "simulated devices standing for GPUs (--backend cpu)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  o.scenarios = SplitCommas(scenarios);
  for (const std::string& s : o.scenarios) {
    if (s != "scaling" && s != "gpu-tenants") {
      std::fprintf(stderr,
                   "multi_gpu_bench: unknown scenario '%s'; there are scaling and "
                   "gpu-tenants\n",
                   s.c_str());
      return 2;
    }
  }
  auto unless_given = [&](const char* flag, auto* field, auto value) {
    if (app.count(flag) == 0) *field = value;
  };
  if (o.backend == "cpu") {
    // A few milliseconds of one core per request, as the GPU default is a few of one GPU.
    unless_given("--width", &o.width, 64);
    unless_given("--height", &o.height, 32);
    unless_given("--max-iterations", &o.max_iterations, 1000);
    unless_given("--streams", &o.streams, 1);
    unless_given("--processes", &o.processes, 1);
    unless_given("--in-flight-per-gpu", &o.in_flight_per_gpu, 4);
  }
  if (o.quick) {
    if (o.backend == "cuda") unless_given("--max-iterations", &o.max_iterations, 2048);
    unless_given("--warmup", &o.warmup_s, 0.5);
    unless_given("--duration", &o.measure_s, 2.0);
  }
  if (o.width < 16 || o.height < 1 || o.max_iterations < 1 || o.streams < 1 || o.processes < 1 ||
      o.threads < 1 || o.in_flight_per_gpu < 1 || o.cpu_devices < 1 || o.warmup_s < 0 ||
      o.measure_s <= 0) {
    std::fprintf(stderr,
                 "multi_gpu_bench: sizes, counts and --duration must be positive "
                 "(--width at least 16)\n");
    return 2;
  }
  if (o.build_dir.empty()) {
    o.build_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path();
  }
  const std::string accelerator =
      o.build_dir + "/accelerators/mandelbrot" + (o.backend == "cpu" ? "" : "-cuda");
  for (const std::string& f :
       {o.build_dir + "/bin/atolld", o.build_dir + "/bin/atoll",
        o.build_dir + "/lib/atoll/backends/libatoll_backend_" + o.backend + ".so",
        accelerator + "/bitstream.json"}) {
    if (!std::filesystem::exists(f)) {
      std::fprintf(stderr,
                   "multi_gpu_bench: missing %s; build with `ninja -C %s multi_gpu_bench` (the "
                   "accelerator needs nvcc)\n",
                   f.c_str(), o.build_dir.c_str());
      return 2;
    }
  }

  TempFolder folder;
  const std::string repository = folder.path + "/repository";
  {
    int status = 0;
    std::string text = Capture("ATOLL_REPOSITORY='" + repository + "' '" + o.build_dir +
                                   "/bin/atoll' install '" + accelerator + "' 2>&1",
                               &status);
    if (status != 0) throw std::runtime_error("atoll install " + accelerator + " failed: " + text);
  }

  std::string reason;
  int present = o.backend == "cpu" ? o.cpu_devices : CountGpus(o, folder.path, repository, &reason);
  if (present == 0) {
    std::fprintf(stderr,
                 "multi_gpu_bench: no usable NVIDIA GPU on this host, nothing to measure: %s\n",
                 reason.c_str());
    return 3;
  }

  MachineInfo machine = DescribeMachine();
  std::string date = UtcNow();
  std::printf("multi_gpu_bench %s: %d %s; %s, %u cores, %s; load average %s\n", date.c_str(),
              present, o.backend == "cpu" ? "simulated cpu device(s) standing for GPUs" : "GPU(s)",
              machine.cpu_model.c_str(), machine.cores, machine.kernel.c_str(),
              machine.loadavg.c_str());
  std::fflush(stdout);
  Report report;
  json runs = json::array();
  if (Wants(o.scenarios, "scaling")) {
    Progress("(a) scaling over 1..." + std::to_string(present) + " GPU(s)");
    Scaling(o, folder.path, repository, present, &report, &runs);
  }
  if (Wants(o.scenarios, "gpu-tenants")) {
    Progress("(b) two tenants, weights 1:1 then 1:3, on all GPUs");
    Tenants(o, folder.path, repository, present, &report, &runs);
  }
  report.Print(stdout);
  std::fflush(stdout);
  if (!o.json_path.empty()) {
    json config = {{"width", o.width},
                   {"height", o.height},
                   {"max_iterations", o.max_iterations},
                   {"iterations_per_request", WorkPerRequest(o)},
                   {"streams", o.streams},
                   {"processes", o.processes},
                   {"threads", o.threads},
                   {"in_flight_per_gpu", o.in_flight_per_gpu},
                   {"warmup_s", o.warmup_s},
                   {"duration_s", o.measure_s},
                   {"scenarios", o.scenarios},
                   {"gpus_present", present},
                   {"backend", o.backend},
                   {"quick", o.quick}};
    json doc = report.ToJson(machine, date, o.git, config);
    doc["runs"] = runs;
    if (!WriteJson(o.json_path, doc, "multi_gpu_bench")) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace atl::bench

int main(int argc, char** argv) {
  try {
    return atl::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multi_gpu_bench: %s\n", e.what());
    return 1;
  }
}
