// The crash soak: starts a real atolld, runs well-behaved client threads that check every result,
// and meanwhile kills client processes with SIGKILL at chosen points of their life: connected
// with buffers but before any submit, with requests queued, with a request running, while
// completions stream back, and at random moments (mid-handshake, mid-BufferAdd). Afterwards the
// daemon must be back at its baseline: open fds, mapped client buffers, threads, and what
// `atoll status --json` reports (connections, buffers, requests in flight, and per tenant and
// device what is queued, running and the device memory held); it must still serve and shut down
// cleanly.
//
//   atoll_soak [--clients N] [--concurrency K] [--well-behaved T] [--seed S]
//
// Prints one JSON summary line; exits 0 when everything held, 1 otherwise.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "atoll.pb.h"
#include "atoll/atoll.hpp"
#include "client/connection.h"
#include "test_daemon.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr int kComputeUnits = 4;
constexpr int kReadyFd = 3;  // a victim writes one byte here when it reached its stage

enum Stage { kConnected, kQueued, kRunning, kCompleting, kBuffers, kAnywhere, kStageCount };
const char* const kStageNames[] = {"connected_before_submit", "requests_queued", "request_running",
                                   "completions_streaming",   "sending_buffers", "anywhere"};

void Ready() {
  char byte = 'R';
  (void)::write(kReadyFd, &byte, 1);
}

[[noreturn]] void Fail(const std::string& what) {
  std::cerr << "atoll_soak victim: " << what << "\n";
  std::_Exit(2);
}

// A client that is killed from outside; it never exits on its own.
[[noreturn]] void RunVictim(Stage stage, unsigned seed) {
  std::mt19937 rng(seed);
  try {
    const int n = 1 + static_cast<int>(rng() % 50000);
    atoll::vector<float> a(n, 1.0f), b(n, 2.0f);
    atoll::vector<int> out(n);
    std::vector<std::future<void>> pending;
    switch (stage) {
      case kConnected: {
        auto status =
            atl::client::Connection::Default().Query(atl::wire::Query::KIND_STATUS, 10000);
        if (!status.ok()) Fail(status.status().ToString());
        Ready();
        break;
      }
      case kQueued: {
        // More long requests than compute units: some queue. Each writes its own array: two
        // requests writing one array at once would be this client's own data race.
        int ms = 30;
        std::vector<atoll::vector<int>> outs;
        for (int i = 0; i < 3 * kComputeUnits; ++i) outs.emplace_back(n);
        for (int i = 0; i < 3 * kComputeUnits; ++i) {
          atoll::request fill("testing.fill");
          fill.arg(outs[i]).arg(n).arg(i).arg(ms);
          pending.push_back(atoll::submit(fill));
        }
        Ready();
        break;
      }
      case kRunning: {
        int value = 1, ms = 50 + static_cast<int>(rng() % 150);
        atoll::request fill("testing.fill");
        fill.arg(out).arg(n).arg(value).arg(ms);
        pending.push_back(atoll::submit(fill));
        Ready();
        break;
      }
      case kCompleting: {
        // 200 requests in flight, a quarter of them additions, each into its own array.
        std::vector<atoll::vector<float>> sums;
        std::vector<atoll::request> adds;
        for (int i = 0; i < 50; ++i) sums.emplace_back(n);
        for (int i = 0; i < 50; ++i) {
          adds.emplace_back("vector.addition");
          adds.back().arg(a).arg(b).arg(sums[i]).arg(n);
        }
        atoll::request noop("testing.noop");
        for (int round = 0;; ++round) {
          for (int i = 0; i < 200; ++i)
            pending.push_back(atoll::submit(i % 4 ? noop : adds[i / 4]));
          if (round == 0) Ready();
          for (auto& f : pending) f.get();
          pending.clear();
        }
      }
      case kBuffers:
      case kAnywhere: {
        // Many buffers, each sent once, with requests naming them.
        std::vector<atoll::vector<int>> buffers;
        for (int i = 0; i < 40; ++i) buffers.emplace_back(1 + static_cast<int>(rng() % 4096));
        if (stage == kBuffers) Ready();
        int ms = 0;
        for (auto& buffer : buffers) {
          int count = static_cast<int>(buffer.size());
          atoll::request fill("testing.fill");
          fill.arg(buffer).arg(count).arg(count).arg(ms);
          pending.push_back(atoll::submit(fill));
        }
        for (auto& f : pending) f.get();
        break;
      }
      default:
        Fail("unknown stage");
    }
  } catch (const std::exception& e) {
    Fail(e.what());
  }
  for (;;) ::pause();
}

struct Counters {
  std::atomic<int> killed[kStageCount] = {};
  std::atomic<int> victim_errors{0};
  std::atomic<uint64_t> good_ok{0}, good_wrong{0}, good_failed{0};
};

// Starts one victim, waits until it reached `stage` (if the stage has a sync point), waits a
// random moment more, kills it and reaps it. False (with a message) when the victim did not die
// of the SIGKILL.
bool KillOneVictim(Stage stage, unsigned seed, std::mt19937& rng, std::string* problem) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    *problem = "pipe2 failed";
    return false;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], kReadyFd);
  std::string stage_arg = std::to_string(static_cast<int>(stage));
  std::string seed_arg = std::to_string(seed);
  char exe[] = "/proc/self/exe";
  char victim[] = "--victim";
  char* argv[] = {exe, victim, stage_arg.data(), seed_arg.data(), nullptr};
  pid_t pid = -1;
  int spawned = ::posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (spawned != 0) {
    ::close(pipe_fds[0]);
    *problem = std::string("posix_spawn: ") + std::strerror(spawned);
    return false;
  }
  if (stage == kAnywhere) {
    // Anywhere in its first 40 ms: before connecting, in the handshake, sending buffers, ...
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 40000));
  } else {
    pollfd p{pipe_fds[0], POLLIN, 0};
    if (::poll(&p, 1, 30000) != 1) {
      *problem = std::string("victim never reached stage ") + kStageNames[stage];
    }
    std::this_thread::sleep_for(
        std::chrono::microseconds(rng() % (stage == kRunning ? 30000 : 5000)));
  }
  ::close(pipe_fds[0]);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
    *problem = std::string("victim (") + kStageNames[stage] + ") ended by itself with status " +
               std::to_string(status);
    return false;
  }
  return problem->empty();
}

// One well-behaved client thread: random vector additions and fills, every element checked.
void WellBehaved(unsigned seed, std::atomic<bool>* stop, Counters* counters) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1000, 1000);
  while (!stop->load()) {
    const int n = 1 + static_cast<int>(rng() % 20000);
    try {
      if (rng() % 2 == 0) {
        atoll::vector<float> a(n), b(n), c(n);
        for (int i = 0; i < n; ++i) {
          a[i] = dist(rng);
          b[i] = dist(rng);
        }
        atoll::request add("vector.addition");
        add.arg(a).arg(b).arg(c).arg(n);
        atoll::submit(add).get();
        bool right = true;
        for (int i = 0; i < n; ++i) right = right && c[i] == a[i] + b[i];
        (right ? counters->good_ok : counters->good_wrong)++;
      } else {
        atoll::vector<int> out(n, -1);
        int value = static_cast<int>(rng()), ms = 0;
        atoll::request fill("testing.fill");
        fill.arg(out).arg(n).arg(value).arg(ms);
        atoll::submit(fill).get();
        bool right = true;
        for (int i = 0; i < n; ++i) right = right && out[i] == value;
        (right ? counters->good_ok : counters->good_wrong)++;
      }
    } catch (const atoll::error& e) {
      counters->good_failed++;
      std::cerr << "atoll_soak: a well-behaved request failed: " << e.what() << "\n";
    }
  }
}

struct DaemonState {
  json status;
  size_t fds = 0, memfd_mappings = 0, threads = 0;
};

size_t CountEntries(const std::string& folder) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(folder, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

DaemonState Observe(pid_t daemon) {
  DaemonState s;
  auto text = atl::client::Connection::Default().Query(atl::wire::Query::KIND_STATUS, 10000);
  s.status = text.ok() ? json::parse(*text) : json{{"error", text.status().ToString()}};
  s.fds = CountEntries("/proc/" + std::to_string(daemon) + "/fd");
  s.threads = CountEntries("/proc/" + std::to_string(daemon) + "/task");
  std::ifstream maps("/proc/" + std::to_string(daemon) + "/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find("memfd:atoll-buffer") != std::string::npos) ++s.memfd_mappings;
  }
  return s;
}

// What must return to its value before the victims: the daemon's resources and the status
// counters of things in flight. Counters of totals (completed, rejected, uptime) are not state.
json Comparable(const DaemonState& s) {
  json c{{"fds", s.fds},
         {"memfd_mappings", s.memfd_mappings},
         {"threads", s.threads},
         {"connections", s.status.value("connections", json())},
         {"buffers", s.status.value("buffers", json())},
         {"connections_reading_paused", s.status.value("connections_reading_paused", json())}};
  if (s.status.contains("requests")) {
    c["running"] = s.status["requests"].value("running", json());
    c["queued"] = s.status["requests"].value("queued", json());
  }
  // Per-tenant and per-device state, where the daemon reports it (the scheduler's section): what
  // is in flight and the device memory held, not running totals.
  auto in_flight = [](const json& entries, std::initializer_list<const char*> keys) {
    json out = json::array();
    if (!entries.is_array()) return out;
    for (const auto& e : entries) {
      json kept = json::object();
      for (const char* key : keys) {
        if (e.contains(key)) kept[key] = e[key];
      }
      out.push_back(std::move(kept));
    }
    return out;
  };
  if (s.status.contains("scheduler") && s.status["scheduler"].is_object()) {
    const json& scheduling = s.status["scheduler"];
    c["tenants"] = in_flight(scheduling.value("tenants", json()),
                             {"name", "queued", "running", "in_flight", "memory_bytes"});
    c["devices"] = in_flight(scheduling.value("devices", json()),
                             {"index", "busy_compute_units", "queued", "draining_for"});
  }
  return c;
}

int Usage() {
  std::cerr << "usage: atoll_soak [--clients N] [--concurrency K] [--well-behaved T] [--seed S]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--victim") == 0) {
    RunVictim(static_cast<Stage>(std::atoi(argv[2])), static_cast<unsigned>(std::atol(argv[3])));
  }
  int clients = 200, concurrency = 8, well_behaved = 3;
  unsigned seed = static_cast<unsigned>(std::random_device{}());
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return Usage();
    long value = std::atol(argv[++i]);
    if (flag == "--clients") {
      clients = static_cast<int>(value);
    } else if (flag == "--concurrency") {
      concurrency = static_cast<int>(value);
    } else if (flag == "--well-behaved") {
      well_behaved = static_cast<int>(value);
    } else if (flag == "--seed") {
      seed = static_cast<unsigned>(value);
    } else {
      return Usage();
    }
  }
  if (clients < 1 || concurrency < 1 || well_behaved < 0) return Usage();
  ::signal(SIGPIPE, SIG_IGN);

  atl::testing::TestDaemon::Options options;
  options.install = {"vector", "testing"};
  options.log_level = "info";
  options.extra_args = {"--backend",
                        "cpu={\"compute_units\": " + std::to_string(kComputeUnits) + "}"};
  atl::testing::TestDaemon daemon(options);
  // One request first: the daemon creates a tenant's state with its first request, and that
  // belongs in the baseline.
  {
    int ms = 0;
    atoll::request noop("testing.sleep");
    noop.arg(ms);
    atoll::submit(noop).get();
  }
  const auto begin = Clock::now();
  DaemonState baseline = Observe(daemon.pid());

  Counters counters;
  std::atomic<bool> stop{false};
  std::vector<std::thread> good;
  for (int t = 0; t < well_behaved; ++t) {
    good.emplace_back(WellBehaved, seed + 1000 + static_cast<unsigned>(t), &stop, &counters);
  }

  std::atomic<int> next{0};
  std::mutex problems_mutex;
  std::vector<std::string> problems;
  std::vector<std::thread> killers;
  for (int k = 0; k < concurrency; ++k) {
    killers.emplace_back([&, k] {
      std::mt19937 rng(seed + static_cast<unsigned>(k));
      for (int i = next++; i < clients; i = next++) {
        Stage stage = static_cast<Stage>(i % kStageCount);
        std::string problem;
        if (KillOneVictim(stage, seed * 7919u + static_cast<unsigned>(i), rng, &problem)) {
          counters.killed[stage]++;
        } else {
          counters.victim_errors++;
          std::lock_guard lock(problems_mutex);
          if (problems.size() < 20) problems.push_back(problem);
        }
      }
    });
  }
  for (auto& t : killers) t.join();
  const double kill_seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  stop = true;
  for (auto& t : good) t.join();

  // The daemon notices each death at once, but running kernels finish first and buffers are
  // released as the well-behaved clients' frees arrive: wait for the state to settle.
  DaemonState after;
  auto settle = Clock::now() + std::chrono::seconds(30);
  do {
    after = Observe(daemon.pid());
    if (Comparable(after) == Comparable(baseline)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (Clock::now() < settle);
  bool settled = Comparable(after) == Comparable(baseline);

  // Still serving, and a clean exit (sanitizers report at exit).
  bool serves = true;
  try {
    const int n = 1000;
    atoll::vector<float> a(n, 1.5f), b(n, 2.0f), c(n);
    atoll::request add("vector.addition");
    add.arg(a).arg(b).arg(c).arg(n);
    atoll::submit(add).get();
    for (int i = 0; i < n; ++i) serves = serves && c[i] == 3.5f;
  } catch (const atoll::error&) {
    serves = false;
  }
  int exit_code = daemon.Stop();

  json killed = json::object();
  int total_killed = 0;
  for (int s = 0; s < kStageCount; ++s) {
    killed[kStageNames[s]] = counters.killed[s].load();
    total_killed += counters.killed[s].load();
  }
  bool ok = settled && serves && exit_code == 0 && counters.victim_errors == 0 &&
            total_killed == clients && counters.good_wrong == 0 && counters.good_failed == 0 &&
            counters.good_ok > 0;
  json summary{{"ok", ok},
               {"seed", seed},
               {"clients_killed", total_killed},
               {"killed_by_stage", killed},
               {"victim_errors", counters.victim_errors.load()},
               {"seconds", kill_seconds},
               {"well_behaved",
                {{"threads", well_behaved},
                 {"correct", counters.good_ok.load()},
                 {"wrong", counters.good_wrong.load()},
                 {"failed", counters.good_failed.load()}}},
               {"baseline", Comparable(baseline)},
               {"after", Comparable(after)},
               {"still_serves", serves},
               {"daemon_exit_status", exit_code}};
  std::cout << summary.dump() << "\n";
  for (const auto& p : problems) std::cerr << "atoll_soak: " << p << "\n";
  if (!ok && exit_code != 0)
    std::cerr << "--- atolld log (tail) ---\n"
              << daemon.log().substr(daemon.log().size() > 8000 ? daemon.log().size() - 8000 : 0)
              << "\n";
  return ok ? 0 : 1;
}
