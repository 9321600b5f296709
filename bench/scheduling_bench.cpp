#include "scheduling_bench.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "atoll/atoll.hpp"
#include "bench_support.h"

namespace atl::bench {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

void Say(const std::string& line) {
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

std::string ReadLineFrom(int fd) {
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

void WriteText(int fd, const std::string& text) {
  size_t sent = 0;
  while (sent < text.size()) {
    ssize_t n = ::write(fd, text.data() + sent, text.size() - sent);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error(std::string("write to a pipe: ") + std::strerror(errno));
    sent += static_cast<size_t>(n);
  }
}

// Output of a command run by the shell, or an exception naming it.
std::string Run(const std::string& command) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + command);
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) text.append(buffer, n);
  if (::pclose(pipe) != 0) throw std::runtime_error(command + " failed: " + text);
  return text;
}

// A private atolld with its own folder, socket, repository and configuration.
class PrivateDaemon {
 public:
  PrivateDaemon(const std::string& build, const json& config,
                const std::vector<std::string>& folders)
      : build_(build) {
    char templ[] = "/tmp/atoll-bench-sched-XXXXXX";
    if (::mkdtemp(templ) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = templ;
    socket_ = dir_ + "/atolld.sock";
    std::string repository = dir_ + "/repository";
    for (const auto& folder : folders) {
      Run("ATOLL_REPOSITORY='" + repository + "' '" + build + "/bin/atoll' install '" + folder +
          "'");
    }
    std::ofstream(dir_ + "/atolld.json") << config.dump();
    std::vector<std::string> args = {build + "/bin/atolld",
                                     "--config",
                                     dir_ + "/atolld.json",
                                     "--socket",
                                     socket_,
                                     "--repository",
                                     repository,
                                     "--backend-dir",
                                     build + "/lib/atoll/backends",
                                     "--log-level",
                                     "warn"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    int log =
        ::open((dir_ + "/atolld.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
      ::dup2(log, STDERR_FILENO);
      ::dup2(log, STDOUT_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(log);
    struct stat st;
    for (int i = 0; i < 400 && ::stat(socket_.c_str(), &st) != 0; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("atolld exited at start: " + Log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }
  ~PrivateDaemon() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  PrivateDaemon(const PrivateDaemon&) = delete;
  PrivateDaemon& operator=(const PrivateDaemon&) = delete;

  const std::string& socket() const { return socket_; }
  const std::string& dir() const { return dir_; }
  json Status() const {
    return json::parse(Run("'" + build_ + "/bin/atoll' --socket '" + socket_ + "' status --json"));
  }
  std::string Log() const {
    std::ifstream in(dir_ + "/atolld.log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string build_, dir_, socket_;
  pid_t pid_ = -1;
};

// A copy of the testing accelerator as bitstream "testing_b": a second binary to switch between.
std::string SecondBinary(const std::string& build, const std::string& dir) {
  std::string folder = dir + "/testing_b";
  fs::create_directories(folder);
  fs::copy_file(build + "/accelerators/testing/testing.so", folder + "/testing.so",
                fs::copy_options::overwrite_existing);
  json manifest = json::parse(std::ifstream(build + "/accelerators/testing/bitstream.json"));
  manifest["bitstreamId"] = "testing_b";
  std::ofstream(folder + "/bitstream.json") << manifest.dump(2);
  return folder;
}

struct HoldClient {
  std::vector<std::string> accelerators = {"testing.hold"};
  int first_percent = 100;
  int window = 8;
};

struct HoldRun {
  std::vector<uint64_t> requests;  // per client
  double elapsed_s = 0;
  json before, after;  // the daemon's status around the measured run
  uint64_t total() const {
    uint64_t sum = 0;
    for (uint64_t r : requests) sum += r;
    return sum;
  }
  double rate() const { return elapsed_s > 0 ? static_cast<double>(total()) / elapsed_s : 0; }
};

// Runs the clients, each a process of its own, against `daemon` for `duration_s` after their
// warm-up.
HoldRun RunClients(const SchedulingOptions& o, const PrivateDaemon& daemon,
                   const std::vector<HoldClient>& clients) {
  struct Child {
    pid_t pid = -1;
    int to = -1;
    int from = -1;
  };
  std::vector<Child> children;
  auto reap = [&] {
    for (Child& c : children) {
      ::close(c.to);
      ::close(c.from);
      int status = 0;
      ::waitpid(c.pid, &status, 0);
    }
    children.clear();
  };
  std::string self = fs::read_symlink("/proc/self/exe").string();
  try {
    for (const HoldClient& client : clients) {
      std::string list;
      for (const auto& a : client.accelerators) list += (list.empty() ? "" : ",") + a;
      std::vector<std::string> args = {self,
                                       "--child-hold",
                                       "--hold-accelerators",
                                       list,
                                       "--hold-mix",
                                       std::to_string(client.first_percent),
                                       "--hold-us",
                                       std::to_string(o.hold_us),
                                       "--window",
                                       std::to_string(client.window),
                                       "--duration",
                                       std::to_string(o.duration_s)};
      std::vector<std::string> env_storage = {"ATOLL_SOCKET=" + daemon.socket()};
      for (char** e = environ; *e != nullptr; ++e) {
        if (std::strncmp(*e, "ATOLL_SOCKET=", 13) != 0) env_storage.emplace_back(*e);
      }
      std::vector<char*> argv, envp;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      for (auto& e : env_storage) envp.push_back(e.data());
      envp.push_back(nullptr);
      int to[2], from[2];
      if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0) {
        throw std::runtime_error("pipe2 failed");
      }
      std::fflush(nullptr);
      pid_t pid = ::fork();
      if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
      if (pid == 0) {
        ::dup2(to[0], STDIN_FILENO);
        ::dup2(from[1], STDOUT_FILENO);
        ::execve(argv[0], argv.data(), envp.data());
        ::_exit(127);
      }
      ::close(to[0]);
      ::close(from[1]);
      children.push_back({pid, to[1], from[0]});
    }
    for (Child& c : children) {
      if (ReadLineFrom(c.from) != "ready") throw std::runtime_error("bad client handshake");
    }
    HoldRun run;
    run.before = daemon.Status();
    int64_t begin = NowNs();
    for (Child& c : children) WriteText(c.to, "g");
    for (Child& c : children) run.requests.push_back(std::stoull(ReadLineFrom(c.from)));
    run.elapsed_s = static_cast<double>(NowNs() - begin) / 1e9;
    run.after = daemon.Status();
    reap();
    return run;
  } catch (...) {
    for (Child& c : children) ::kill(c.pid, SIGTERM);
    reap();
    throw;
  }
}

// Only the cpu backend's simulated devices: the host's GPUs would change what is measured.
json Cpu(int devices, int compute_units) {
  return {{"cpu", {{"devices", devices}, {"compute_units", compute_units}}},
          {"cuda", {{"enabled", false}}},
          {"opencl", {{"enabled", false}}}};
}

uint64_t SumDevices(const json& status, const char* field) {
  uint64_t total = 0;
  for (const auto& d : status["scheduler"]["devices"]) total += d[field].get<uint64_t>();
  return total;
}

}  // namespace

int ChildHold(const std::vector<std::string>& accelerators, int first_percent, int hold_us,
              int window, double duration_s) {
  try {
    std::mt19937 random(static_cast<uint32_t>(::getpid()));
    std::vector<atoll::request> requests;
    for (const auto& a : accelerators) {
      requests.emplace_back(a);
      requests.back().arg(hold_us);
    }
    auto pick = [&]() -> const atoll::request& {
      if (requests.size() == 1) return requests[0];
      return static_cast<int>(random() % 100) < first_percent ? requests[0] : requests[1];
    };
    auto run = [&](int64_t until_ns) {
      std::vector<std::future<void>> ring;
      for (int i = 0; i < window; ++i) ring.push_back(atoll::submit(pick()));
      uint64_t done = 0;
      size_t oldest = 0;
      while (NowNs() < until_ns) {
        ring[oldest].get();
        ++done;
        ring[oldest] = atoll::submit(pick());
        oldest = (oldest + 1) % ring.size();
      }
      for (auto& f : ring) {
        f.get();
        ++done;
      }
      return done;
    };
    // Warm: every binary loaded, the estimates learnt.
    run(NowNs() + static_cast<int64_t>(std::min(0.5, duration_s / 4 + 0.1) * 1e9));
    WriteText(STDOUT_FILENO, "ready\n");
    char go;
    while (::read(STDIN_FILENO, &go, 1) < 0 && errno == EINTR) {
    }
    uint64_t done = run(NowNs() + static_cast<int64_t>(duration_s * 1e9));
    WriteText(STDOUT_FILENO, std::to_string(done) + "\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "atoll_bench hold client: %s\n", e.what());
    return 1;
  }
}

void DeviceScaling(const SchedulingOptions& o, Report* report) {
  const std::string section =
      "Scaling over simulated devices: testing.hold of " + std::to_string(o.hold_us) +
      " us, 1 compute unit per device, 8 requests in flight per device from 2 client processes "
      "(baseline: N x the 1-device rate)";
  double one = 0;
  for (int devices : {1, 2, 4, 8}) {
    Say("  " + std::to_string(devices) + " device(s)");
    PrivateDaemon daemon(o.build_dir, {{"backends", Cpu(devices, 1)}},
                         {o.build_dir + "/accelerators/testing"});
    HoldRun run = RunClients(
        o, daemon, {{{"testing.hold"}, 100, 4 * devices}, {{"testing.hold"}, 100, 4 * devices}});
    if (devices == 1) one = run.rate();
    Result r;
    r.section = section;
    r.name = "scheduling.devices" + std::to_string(devices);
    r.value = run.rate();
    r.unit = "req/s";
    if (devices > 1) {
      r.baseline = devices * one;
      r.baseline_name = std::to_string(devices) + " x scheduling.devices1";
      r.target = ">= 0.95x";
      r.target_met = r.value >= 0.95 * devices * one;
    }
    // Per device, how evenly the work spread.
    json started = json::array();
    for (const auto& d : run.after["scheduler"]["devices"]) started.push_back(d["started"]);
    r.details = {{"requests", run.total()},
                 {"elapsed_s", run.elapsed_s},
                 {"ideal_req_s", devices * 1e6 / o.hold_us},
                 {"started_per_device", started}};
    report->Add(std::move(r));
  }
}

void TenantsSharing(const SchedulingOptions& o, Report* report) {
  const std::string section =
      "Two tenants on one device: testing.hold of " + std::to_string(o.hold_us) +
      " us, 2 compute units, 16 requests in flight per tenant, a tenant per client process "
      "(baseline: one tenant alone)";
  json config = {{"backends", Cpu(1, 2)}, {"scheduler", {{"tenant_by", "process"}}}};
  Say("  one tenant alone");
  double alone = 0;
  {
    PrivateDaemon daemon(o.build_dir, config, {o.build_dir + "/accelerators/testing"});
    alone = RunClients(o, daemon, {{{"testing.hold"}, 100, 16}}).rate();
  }
  Say("  two tenants");
  PrivateDaemon daemon(o.build_dir, config, {o.build_dir + "/accelerators/testing"});
  HoldRun run = RunClients(o, daemon, {{{"testing.hold"}, 100, 16}, {{"testing.hold"}, 100, 16}});
  Result base;
  base.section = section;
  base.name = "scheduling.tenants.alone";
  base.value = alone;
  base.unit = "req/s";
  report->Add(std::move(base));
  Result r;
  r.section = section;
  r.name = "scheduling.tenants.two";
  r.value = run.rate();
  r.unit = "req/s";
  r.baseline = alone;
  r.baseline_name = "scheduling.tenants.alone";
  r.target = ">= 0.95x";
  r.target_met = r.value >= 0.95 * alone;
  double first = static_cast<double>(run.requests[0]);
  r.details = {{"requests", run.requests},
               {"elapsed_s", run.elapsed_s},
               {"first_tenant_share", first / static_cast<double>(run.total())}};
  report->Add(std::move(r));
}

void Reprogramming(const SchedulingOptions& o, Report* report) {
  const std::string section =
      "Reprogramming: testing.hold and testing_b.hold of " + std::to_string(o.hold_us) +
      " us on 2 devices holding 1 binary each, programming takes 20 ms, 4 client processes with "
      "2 requests in flight each, each request for either binary at random (baseline: the FIFO "
      "policy)";
  json backends = Cpu(2, 1);
  backends["cpu"]["binaries_at_once"] = 1;
  backends["cpu"]["program_delay_ms"] = 20;
  for (int mix : {50, 80}) {
    std::map<std::string, HoldRun> runs;
    for (const char* policy : {"fifo", "fair"}) {
      Say("  " + std::string(policy) + " policy, " + std::to_string(mix) + "/" +
          std::to_string(100 - mix) + " mix");
      char templ[] = "/tmp/atoll-bench-binary-XXXXXX";
      if (::mkdtemp(templ) == nullptr) throw std::runtime_error("mkdtemp failed");
      std::string second = SecondBinary(o.build_dir, templ);
      PrivateDaemon daemon(o.build_dir,
                           {{"backends", backends}, {"scheduler", {{"policy", policy}}}},
                           {o.build_dir + "/accelerators/testing", second});
      std::error_code ec;
      fs::remove_all(templ, ec);
      HoldClient client{{"testing.hold", "testing_b.hold"}, mix, 2};
      runs[policy] = RunClients(o, daemon, {client, client, client, client});
    }
    std::string key = "scheduling.reprogram.mix" + std::to_string(mix);
    auto reprogrammed = [](const HoldRun& run) {
      return static_cast<double>(SumDevices(run.after, "reprogrammed") -
                                 SumDevices(run.before, "reprogrammed"));
    };
    for (const char* policy : {"fifo", "fair"}) {
      const HoldRun& run = runs[policy];
      Result count;
      count.section = section;
      count.name = key + "." + policy + ".reprogrammed";
      count.value = reprogrammed(run);
      count.unit = "count";
      Result rate;
      rate.section = section;
      rate.name = key + "." + policy + ".rate";
      rate.value = run.rate();
      rate.unit = "req/s";
      if (std::string(policy) == "fair") {
        count.baseline = reprogrammed(runs["fifo"]);
        count.baseline_name = key + ".fifo.reprogrammed";
        rate.baseline = runs["fifo"].rate();
        rate.baseline_name = key + ".fifo.rate";
      }
      count.details = {{"elapsed_s", run.elapsed_s}, {"requests", run.total()}};
      report->Add(std::move(count));
      report->Add(std::move(rate));
    }
  }
}

}  // namespace atl::bench
