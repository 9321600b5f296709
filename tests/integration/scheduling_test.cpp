// The scheduler in a real atolld, on simulated cpu devices (docs/scheduling.md): tenants' shares,
// priorities, exclusive devices, quotas, reprogramming, several binaries for one accelerator,
// deadlines and cancellation, and the counters `atoll status` shows.
//
// Requests use testing.hold, which occupies its compute unit for a given time without using the
// CPU, so the figures measure the scheduler even on a loaded 2-core machine. Shares are measured
// as the scheduler counts them (device time per tenant, from `atoll status`), over a few seconds in
// which every tenant keeps a backlog. Tests that need two users run their clients as child
// processes with other uids, which needs root; without it they are skipped and say so.
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "atoll/atoll.h"
#include "atoll/atoll.hpp"
#include "test_daemon.h"

namespace atl::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr uid_t kLightUid = 60001;  // no such user needs to exist: ids are enough
constexpr uid_t kHeavyUid = 60002;

// A temporary folder, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char templ[] = "/tmp/atoll-sched-XXXXXX";
    if (::mkdtemp(templ) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A copy of the testing accelerator under another bitstream id, version or platform, ready to
// install.
std::string TestingVariant(const TempDir& dir, const std::string& id, const std::string& version,
                           const json& platform) {
  std::string folder = dir.path() + "/" + id + "-" + version + "-" + platform.value("name", "any");
  fs::create_directories(folder);
  std::string source = TestDaemon::AcceleratorFolder("testing");
  fs::copy_file(source + "/testing.so", folder + "/testing.so");
  json manifest = json::parse(std::ifstream(source + "/bitstream.json"));
  manifest["bitstreamId"] = id;
  manifest["version"] = version;
  manifest["platform"] = platform;
  std::ofstream(folder + "/bitstream.json") << manifest.dump(2);
  return folder;
}

std::unique_ptr<TestDaemon> StartDaemon(const json& config,
                                        std::vector<std::string> install_folders = {}) {
  TestDaemon::Options options;
  options.install = {"testing"};
  options.install_folders = std::move(install_folders);
  // Only the cpu backend's simulated devices: GPUs of the host would change the device list.
  json only_cpu = config;
  only_cpu["backends"]["cuda"] = {{"enabled", false}};
  only_cpu["backends"]["opencl"] = {{"enabled", false}};
  options.config_json = only_cpu.dump();
  auto daemon = std::make_unique<TestDaemon>(options);
  // Other users' clients must reach the socket inside the daemon's private folder.
  ::chmod(daemon->folder().c_str(), 0755);
  return daemon;
}

// `atoll status --json`, run as a subprocess so that this process starts no thread before it
// forks clients.
json Status(const TestDaemon& daemon) {
  std::string command =
      TestDaemon::CliPath() + " --socket " + daemon.socket() + " status --json 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed");
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) text.append(buffer, n);
  int status = ::pclose(pipe);
  if (status != 0) throw std::runtime_error("atoll status failed: " + text);
  return json::parse(text);
}

std::string StatusText(const TestDaemon& daemon) {
  std::string command = TestDaemon::CliPath() + " --socket " + daemon.socket() + " status 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) text.append(buffer, n);
  ::pclose(pipe);
  return text;
}

json TenantNamed(const json& status, const std::string& name) {
  for (const auto& t : status["scheduler"]["tenants"]) {
    if (t["name"] == name) return t;
  }
  return json();
}

uint64_t Reprogrammed(const json& status) {
  uint64_t total = 0;
  for (const auto& d : status["scheduler"]["devices"]) total += d["reprogrammed"].get<uint64_t>();
  return total;
}

atoll::request Hold(const std::string& accelerator, int microseconds, int priority = 0) {
  atoll::request r(accelerator);
  r.arg(microseconds).priority(priority);
  return r;
}

// Keeps `window` requests in flight until `until`, then waits for them; returns how many
// completed. Throws atoll::error if one fails.
uint64_t KeepBusy(const std::string& accelerator, int microseconds, int window,
                  Clock::time_point until, int priority = 0) {
  atoll::request r = Hold(accelerator, microseconds, priority);
  std::vector<std::future<void>> ring;
  for (int i = 0; i < window; ++i) ring.push_back(atoll::submit(r));
  uint64_t done = 0;
  size_t oldest = 0;
  while (Clock::now() < until) {
    ring[oldest].get();
    ++done;
    ring[oldest] = atoll::submit(r);
    oldest = (oldest + 1) % ring.size();
  }
  for (auto& f : ring) {
    f.get();
    ++done;
  }
  return done;
}

// A client process running as `uid` (and gid) that keeps a backlog of testing.hold requests for
// `seconds`. Must be called before this process starts threads: a forked child of a threaded
// process may only call async-signal-safe functions.
pid_t SpawnTenant(uid_t uid, int microseconds, int window, double seconds) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  if (::setgroups(0, nullptr) != 0 || ::setgid(uid) != 0 || ::setuid(uid) != 0) ::_exit(3);
  try {
    auto until = Clock::now() + std::chrono::milliseconds(static_cast<int>(seconds * 1000));
    KeepBusy("testing.hold", microseconds, window, until);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tenant %u: %s\n", static_cast<unsigned>(uid), e.what());
    ::_exit(4);
  }
  ::_exit(0);
}

int Reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Waits until every named tenant has completed at least `done` requests.
void WaitForTenants(const TestDaemon& daemon, const std::vector<std::string>& names,
                    uint64_t done) {
  auto give_up = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    json status = Status(daemon);
    bool all = true;
    for (const auto& name : names) {
      json t = TenantNamed(status, name);
      all = all && !t.is_null() && t["done"].get<uint64_t>() >= done;
    }
    if (all) return;
    ASSERT_LT(Clock::now(), give_up) << "tenants did not start: " << status.dump(2);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

#define SKIP_UNLESS_ROOT()                                                                         \
  if (::geteuid() != 0) {                                                                          \
    GTEST_SKIP() << "needs root, to run clients as two other users (uids " << kLightUid << " and " \
                 << kHeavyUid << ")";                                                              \
  }

// ---- Tenants' shares (root) ---------------------------------------------------------------------

// Two tenants keep a backlog on one device of 2 compute units; returns the light tenant's share of
// the device time and of the requests over `seconds` of steady state.
std::pair<double, double> MeasureShares(uint32_t light_weight, uint32_t heavy_weight,
                                        double seconds) {
  json config = {{"backends", {{"cpu", {{"devices", 1}, {"compute_units", 2}}}}},
                 {"tenants",
                  {{{"name", "light"}, {"users", {kLightUid}}, {"weight", light_weight}},
                   {{"name", "heavy"}, {"users", {kHeavyUid}}, {"weight", heavy_weight}}}}};
  auto daemon = StartDaemon(config);
  // A deep backlog each (64 requests of 3 ms), so that neither tenant's queue runs dry while its
  // client is slow to resubmit on a loaded machine.
  double lifetime = seconds + 12;
  pid_t light = SpawnTenant(kLightUid, 3000, 64, lifetime);
  pid_t heavy = SpawnTenant(kHeavyUid, 3000, 64, lifetime);
  WaitForTenants(*daemon, {"light", "heavy"}, 20);
  json before = Status(*daemon);
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int>(seconds * 1000)));
  json after = Status(*daemon);
  auto delta = [&](const char* tenant, const char* field) {
    return TenantNamed(after, tenant)[field].get<double>() -
           TenantNamed(before, tenant)[field].get<double>();
  };
  double light_ms = delta("light", "device_ms"), heavy_ms = delta("heavy", "device_ms");
  double light_done = delta("light", "done"), heavy_done = delta("heavy", "done");
  // Both kept a backlog throughout.
  EXPECT_GT(TenantNamed(after, "light")["queued"].get<int>(), 0) << after.dump(2);
  EXPECT_GT(TenantNamed(after, "heavy")["queued"].get<int>(), 0) << after.dump(2);
  std::printf("weights %u:%u over %.1f s: light %.0f ms (%.0f requests), heavy %.0f ms (%.0f)\n",
              light_weight, heavy_weight, seconds, light_ms, light_done, heavy_ms, heavy_done);
  ::kill(light, SIGTERM);
  ::kill(heavy, SIGTERM);
  Reap(light);
  Reap(heavy);
  return {light_ms / (light_ms + heavy_ms), light_done / (light_done + heavy_done)};
}

TEST(Scheduling, WeightsOneToThreeGiveSharesWithinFivePercentOf25To75) {
  SKIP_UNLESS_ROOT();
  auto [time_share, request_share] = MeasureShares(1, 3, 3.0);
  // Within 5% of 25%, in device time as the scheduler counts it.
  EXPECT_NEAR(time_share, 0.25, 0.0125);
  // Every request costs the same here, so the requests split the same way, give or take the
  // jitter of sleeping on a loaded host.
  EXPECT_NEAR(request_share, 0.25, 0.025);
}

TEST(Scheduling, ALowWeightTenantStillProgresses) {
  SKIP_UNLESS_ROOT();
  auto [time_share, request_share] = MeasureShares(1, 50, 3.0);
  // 1/51 of about 6 s of device time: about 118 ms, 39 requests.
  EXPECT_GT(time_share, 0.5 / 51);
  EXPECT_LT(time_share, 2.0 / 51);
  (void)request_share;
}

// ---- Priorities ---------------------------------------------------------------------------------

TEST(Scheduling, LowPriorityRequestsProgressUnderAStreamOfHighPriorityOnes) {
  json config = {{"backends", {{"cpu", {{"devices", 1}, {"compute_units", 1}}}}},
                 {"scheduler", {{"aging_starts", 2}}}};
  auto daemon = StartDaemon(config);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> high_done{0};
  std::thread high([&] {
    atoll::request r = Hold("testing.hold", 2000, 100);
    std::vector<std::future<void>> ring;
    for (int i = 0; i < 4; ++i) ring.push_back(atoll::submit(r));
    size_t oldest = 0;
    while (!stop) {
      ring[oldest].get();
      ++high_done;
      ring[oldest] = atoll::submit(r);
      oldest = (oldest + 1) % ring.size();
    }
    for (auto& f : ring) f.get();
  });
  while (high_done < 20) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  uint64_t high_before = high_done;
  auto begin = Clock::now();
  atoll::request low = Hold("testing.hold", 1000, -100);
  auto f = atoll::submit(low);
  bool finished = f.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  uint64_t high_meanwhile = high_done - high_before;
  double waited_s = std::chrono::duration<double>(Clock::now() - begin).count();
  stop = true;
  high.join();
  ASSERT_TRUE(finished) << "a low-priority request starved";
  f.get();
  std::printf("low priority waited %.2f s while %llu high-priority requests completed\n", waited_s,
              static_cast<unsigned long long>(high_meanwhile));
  // 200 levels to climb at 2 starts each: it must not jump the queue, and must not wait forever.
  EXPECT_GE(high_meanwhile, 300u);
  EXPECT_LE(high_meanwhile, 450u);
}

TEST(Scheduling, PriorityIsCheckedOnBothSides) {
  atoll::request r("testing.hold");
  EXPECT_THROW(r.priority(1001), atoll::error);
  EXPECT_THROW(r.priority(-1001), atoll::error);
  EXPECT_NO_THROW(r.priority(ATOLL_PRIORITY_MAX));
  atoll_request c = atoll_request_create("testing.hold");
  EXPECT_EQ(atoll_request_set_priority(c, 5000), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(atoll_last_error(), HasSubstr("priority 5000 is out of range"));
  atoll_request_release(c);
}

// ---- Exclusive devices --------------------------------------------------------------------------

TEST(Scheduling, AnExclusiveDeviceNeverRunsAnotherUsersRequest) {
  TempDir dir;
  // Device 0 ("alpha") is exclusive to some other user; only_alpha fits device 0 alone.
  std::string only_alpha =
      TestingVariant(dir, "only_alpha", "1.0", {{"backend", "cpu"}, {"name", "alpha"}});
  uid_t other = ::geteuid() + 1000;
  json config = {
      {"backends",
       {{"cpu", {{"devices", 2}, {"compute_units", 2}, {"platform_name", {"alpha", "beta"}}}}}},
      {"devices", {{{"device", "cpu:0"}, {"mode", "exclusive"}, {"users", {other}}}}}};
  {
    auto daemon = StartDaemon(config, {only_alpha});
    uint64_t done =
        KeepBusy("testing.hold", 2000, 16, Clock::now() + std::chrono::milliseconds(1500));
    json status = Status(*daemon);
    const json& devices = status["scheduler"]["devices"];
    EXPECT_EQ(devices[0]["mode"], "exclusive");
    EXPECT_EQ(devices[0]["started"].get<uint64_t>(), 0u) << status.dump(2);
    EXPECT_EQ(devices[1]["started"].get<uint64_t>(), done) << status.dump(2);
    try {
      atoll::submit(Hold("only_alpha.hold", 1000)).get();
      ADD_FAILURE() << "a request ran on a device exclusive to another user";
    } catch (const atoll::error& e) {
      EXPECT_EQ(e.code(), ATOLL_PERMISSION_DENIED);
      EXPECT_THAT(e.what(),
                  HasSubstr("device 0 (cpu:0) is exclusive to users " + std::to_string(other)));
      EXPECT_THAT(e.what(), HasSubstr("comes from uid " + std::to_string(::geteuid())));
    }
    EXPECT_EQ(Status(*daemon)["scheduler"]["devices"][0]["started"].get<uint64_t>(), 0u);
  }
  {
    // Exclusive to this process's group: its requests use both devices.
    config["devices"][0] = {{"device", 0}, {"mode", "exclusive"}, {"groups", {::getegid()}}};
    auto daemon = StartDaemon(config, {only_alpha});
    KeepBusy("testing.hold", 2000, 16, Clock::now() + std::chrono::milliseconds(1000));
    EXPECT_NO_THROW(atoll::submit(Hold("only_alpha.hold", 1000)).get());
    json status = Status(*daemon);
    EXPECT_GT(status["scheduler"]["devices"][0]["started"].get<uint64_t>(), 10u) << status.dump(2);
    EXPECT_GT(status["scheduler"]["devices"][1]["started"].get<uint64_t>(), 10u) << status.dump(2);
  }
}

TEST(Scheduling, ExclusiveDeviceOfAnotherUserUnderLoadFromTwoTenants) {
  SKIP_UNLESS_ROOT();
  // Device 0 is the light user's; the heavy user keeps both a backlog and, through the shared
  // device, the light user's requests company.
  json config = {{"backends", {{"cpu", {{"devices", 2}, {"compute_units", 1}}}}},
                 {"devices", {{{"device", 0}, {"mode", "exclusive"}, {"users", {kLightUid}}}}}};
  auto daemon = StartDaemon(config);
  pid_t heavy = SpawnTenant(kHeavyUid, 2000, 16, 2.0);
  ASSERT_EQ(Reap(heavy), 0);
  json alone = Status(*daemon);
  EXPECT_EQ(alone["scheduler"]["devices"][0]["started"].get<uint64_t>(), 0u) << alone.dump(2);
  EXPECT_GT(alone["scheduler"]["devices"][1]["started"].get<uint64_t>(), 100u) << alone.dump(2);
  pid_t light = SpawnTenant(kLightUid, 2000, 16, 1.5);
  heavy = SpawnTenant(kHeavyUid, 2000, 16, 1.5);
  ASSERT_EQ(Reap(light), 0);
  ASSERT_EQ(Reap(heavy), 0);
  json both = Status(*daemon);
  uint64_t on_device0 = both["scheduler"]["devices"][0]["started"].get<uint64_t>();
  uint64_t light_done = 0;
  for (const auto& t : both["scheduler"]["tenants"]) {
    if (t["name"] == "uid " + std::to_string(kLightUid)) light_done = t["done"].get<uint64_t>();
  }
  EXPECT_GT(on_device0, 50u) << both.dump(2);
  // Everything device 0 ran was the light user's.
  EXPECT_LE(on_device0, light_done) << both.dump(2);
}

// ---- Reprogramming ------------------------------------------------------------------------------

// Two binaries on two devices that hold one each; three client threads alternate between them.
// Returns how often a binary was replaced after the warm-up.
uint64_t ReprogrammingUnderAlternatingDemand(const std::string& policy) {
  TempDir dir;
  std::string other =
      TestingVariant(dir, "testing_b", "1.0", {{"backend", "cpu"}, {"vendor", "atoll"}});
  json config = {{"backends",
                  {{"cpu",
                    {{"devices", 2},
                     {"compute_units", 1},
                     {"binaries_at_once", 1},
                     {"program_delay_ms", 50}}}}},
                 {"scheduler", {{"policy", policy}}}};
  auto daemon = StartDaemon(config, {other});
  auto run = [](std::chrono::milliseconds length) {
    std::vector<std::thread> clients;
    for (int c = 0; c < 3; ++c) {
      clients.emplace_back([c, length] {
        auto until = Clock::now() + length;
        bool a = c % 2 == 0;
        while (Clock::now() < until) {
          atoll::submit(Hold(a ? "testing.hold" : "testing_b.hold", 2000)).get();
          a = !a;
        }
      });
    }
    for (auto& t : clients) t.join();
  };
  run(std::chrono::milliseconds(1000));
  uint64_t warm = Reprogrammed(Status(*daemon));
  run(std::chrono::milliseconds(2500));
  json status = Status(*daemon);
  uint64_t after = Reprogrammed(status) - warm;
  std::printf("policy %s: %llu reprogrammings in warm-up, %llu after\n", policy.c_str(),
              static_cast<unsigned long long>(warm), static_cast<unsigned long long>(after));
  return after;
}

TEST(Scheduling, AlternatingDemandForTwoBinariesCausesNoReprogrammingAfterWarmUp) {
  EXPECT_EQ(ReprogrammingUnderAlternatingDemand("fair"), 0u);
  // The workload does provoke it: the old policy keeps replacing binaries.
  EXPECT_GT(ReprogrammingUnderAlternatingDemand("fifo"), 2u);
}

TEST(Scheduling, ABinaryNobodyHoldsGetsADeviceDespiteABacklogOfAnother) {
  TempDir dir;
  std::string other =
      TestingVariant(dir, "testing_b", "1.0", {{"backend", "cpu"}, {"vendor", "atoll"}});
  json config = {
      {"backends", {{"cpu", {{"devices", 1}, {"compute_units", 2}, {"binaries_at_once", 1}}}}}};
  auto daemon = StartDaemon(config, {other});
  std::atomic<bool> stop{false};
  std::thread backlog([&] {
    auto until = Clock::now() + std::chrono::seconds(20);
    atoll::request r = Hold("testing.hold", 5000);
    std::vector<std::future<void>> ring;
    for (int i = 0; i < 8; ++i) ring.push_back(atoll::submit(r));
    size_t oldest = 0;
    while (!stop && Clock::now() < until) {
      ring[oldest].get();
      ring[oldest] = atoll::submit(r);
      oldest = (oldest + 1) % ring.size();
    }
    for (auto& f : ring) f.get();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto begin = Clock::now();
  auto f = atoll::submit(Hold("testing_b.hold", 1000));
  bool finished = f.wait_for(std::chrono::seconds(15)) == std::future_status::ready;
  double waited_ms = std::chrono::duration<double, std::milli>(Clock::now() - begin).count();
  stop = true;
  backlog.join();
  ASSERT_TRUE(finished) << "testing_b starved behind testing's backlog";
  f.get();
  std::printf("testing_b waited %.0f ms for the device to drain\n", waited_ms);
  // The 8 queued holds go first (about 20 ms), then the device drains (5 ms): far less than 1 s,
  // even on a loaded machine.
  EXPECT_LT(waited_ms, 1000);
}

// A simulated FPGA: the binary's manifest decides how many compute units a kernel uses.
// testing.hold lists one name (one instance), testing.sleep two.
TEST(Scheduling, AManifestsKernelListDecidesTheComputeUnitsOfAnFpga) {
  json config = {{"backends",
                  {{"cpu",
                    {{"devices", 1},
                     {"compute_units", 4},
                     {"binaries_at_once", 1},
                     {"compute_units_by_manifest", true}}}}}};
  auto daemon = StartDaemon(config);
  EXPECT_EQ(Status(*daemon)["scheduler"]["devices"][0]["compute_units"], 4);
  auto timed = [](const std::string& accelerator, int requests, int ms) {
    auto begin = Clock::now();
    std::vector<std::future<void>> pending;
    for (int i = 0; i < requests; ++i) {
      atoll::request r(accelerator);
      r.arg(accelerator == "testing.hold" ? ms * 1000 : ms);
      pending.push_back(atoll::submit(r));
    }
    for (auto& f : pending) f.get();
    return std::chrono::duration<double, std::milli>(Clock::now() - begin).count();
  };
  // One instance: 4 holds of 60 ms run one after another, although 4 compute units are free.
  double one = timed("testing.hold", 4, 60);
  EXPECT_GE(one, 235) << "testing.hold ran on more than its one instance";
  // Two instances: 4 sleeps of 60 ms take two rounds.
  double two = timed("testing.sleep", 4, 60);
  EXPECT_GE(two, 115) << "testing.sleep ran on more than its two instances";
  std::printf("4 x 60 ms on 1 instance: %.0f ms; on 2 instances: %.0f ms\n", one, two);
}

// ---- Several binaries for one accelerator -------------------------------------------------------

TEST(Scheduling, OneAcceleratorBuiltForTwoPlatformsRunsOnDevicesOfBoth) {
  TempDir dir;
  std::vector<std::string> folders = {
      TestingVariant(dir, "multi", "1.0", {{"backend", "cpu"}, {"name", "alpha"}}),
      TestingVariant(dir, "multi", "1.0", {{"backend", "cpu"}, {"name", "beta"}}),
      // Older and fits both: not used while version 1.0 fits.
      TestingVariant(dir, "multi", "0.9", {{"backend", "cpu"}})};
  json config = {
      {"backends",
       {{"cpu",
         {{"devices", 3}, {"compute_units", 1}, {"platform_name", {"alpha", "beta", "gamma"}}}}}}};
  auto daemon = StartDaemon(config, folders);
  KeepBusy("multi.hold", 2000, 8, Clock::now() + std::chrono::milliseconds(1000));
  json status = Status(*daemon);
  const json& devices = status["scheduler"]["devices"];
  EXPECT_GT(devices[0]["started"].get<uint64_t>(), 50u) << status.dump(2);
  EXPECT_GT(devices[1]["started"].get<uint64_t>(), 50u) << status.dump(2);
  // The gamma device fits only version 0.9, which the newest version overrides.
  EXPECT_EQ(devices[2]["started"].get<uint64_t>(), 0u) << status.dump(2);
  EXPECT_EQ(devices[0]["loaded"], json::array({"multi 1.0"}));
  EXPECT_EQ(devices[1]["loaded"], json::array({"multi 1.0"}));
}

// ---- Quotas -------------------------------------------------------------------------------------

TEST(Scheduling, QuotasRefuseClearlyAndRecover) {
  json config = {
      {"backends", {{"cpu", {{"devices", 1}, {"compute_units", 1}}}}},
      {"scheduler", {{"max_requests_in_flight", 3}, {"max_device_memory_bytes", 1 << 20}}}};
  auto daemon = StartDaemon(config);
  auto outcome = [](const atoll::request& r) -> std::pair<atoll_status_code, std::string> {
    try {
      atoll::submit(r).get();
      return {ATOLL_OK, ""};
    } catch (const atoll::error& e) {
      return {e.code(), e.what()};
    }
  };

  // Requests in flight.
  std::vector<std::future<void>> running;
  for (int i = 0; i < 3; ++i) running.push_back(atoll::submit(Hold("testing.hold", 300000)));
  auto refused = outcome(Hold("testing.hold", 1000));
  EXPECT_EQ(refused.first, ATOLL_RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.second, HasSubstr("already has 3 requests in flight"));
  EXPECT_THAT(refused.second, HasSubstr("max_requests_in_flight"));
  for (auto& f : running) f.get();
  EXPECT_EQ(outcome(Hold("testing.hold", 1000)).first, ATOLL_OK);

  // Device memory: the bytes of the array arguments.
  const int n = 150000;  // 600 kB of ints
  atoll::vector<int> a(n), b(n), big(2 * n);
  atoll::request fill_a("testing.fill"), fill_b("testing.fill"), fill_big("testing.fill");
  fill_a.arg(a).arg(n).arg(7).arg(300);
  fill_b.arg(b).arg(n).arg(8).arg(0);
  fill_big.arg(big).arg(2 * n).arg(9).arg(0);
  auto first = atoll::submit(fill_a);
  auto over = outcome(fill_b);
  EXPECT_EQ(over.first, ATOLL_RESOURCE_EXHAUSTED);
  EXPECT_THAT(over.second, HasSubstr("has 600000 bytes of device memory in requests in flight"));
  EXPECT_THAT(over.second, HasSubstr("max_device_memory_bytes"));
  auto never = outcome(fill_big);
  EXPECT_EQ(never.first, ATOLL_RESOURCE_EXHAUSTED);
  EXPECT_THAT(never.second, HasSubstr("1200000 bytes of device memory, more than tenant"));
  first.get();
  EXPECT_EQ(a[n - 1], 7);
  EXPECT_EQ(outcome(fill_b).first, ATOLL_OK);
  EXPECT_EQ(b[0], 8);

  json status = Status(*daemon);
  json tenant = status["scheduler"]["tenants"][0];
  EXPECT_EQ(tenant["refused"].get<int>(), 3) << status.dump(2);
  EXPECT_EQ(tenant["in_flight"].get<int>(), 0) << status.dump(2);
  EXPECT_EQ(tenant["memory_bytes"].get<int>(), 0) << status.dump(2);
}

// ---- Deadlines and cancellation -----------------------------------------------------------------

TEST(Scheduling, DeadlinesAndCancelsBehaveUnderTheScheduler) {
  json config = {{"backends", {{"cpu", {{"devices", 1}, {"compute_units", 1}}}}},
                 {"scheduler", {{"max_requests_in_flight", 3}}}};
  auto daemon = StartDaemon(config);
  const int n = 16;
  atoll::vector<int> running_out(n), expired_out(n), cancelled_out(n);
  auto fill = [&](atoll::vector<int>& out, int value, int ms) {
    atoll_request r = atoll_request_create("testing.fill");
    atoll_request_arg_array(r, out.size() * sizeof(int), out.data(), 0);
    atoll_request_arg_scalar(r, sizeof(int), &n, 1);
    atoll_request_arg_scalar(r, sizeof(int), &value, 2);
    atoll_request_arg_scalar(r, sizeof(int), &ms, 3);
    return r;
  };
  atoll_request running = fill(running_out, 1, 400);
  atoll_request expiring = fill(expired_out, 2, 0);
  atoll_request_set_timeout(expiring, 50);
  // The queued request has the higher priority, so it is next, yet its deadline comes first.
  atoll_request_set_priority(expiring, 500);
  atoll_request cancelled = fill(cancelled_out, 3, 0);
  atoll_response r1 = nullptr, r2 = nullptr, r3 = nullptr;
  ASSERT_EQ(atoll_submit(running, &r1), ATOLL_OK);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(atoll_submit(expiring, &r2), ATOLL_OK);
  ASSERT_EQ(atoll_submit(cancelled, &r3), ATOLL_OK);
  ASSERT_EQ(atoll_response_cancel(r3), ATOLL_OK);
  EXPECT_EQ(atoll_response_wait(r3), ATOLL_CANCELLED);
  EXPECT_EQ(atoll_response_wait(r2), ATOLL_DEADLINE_EXCEEDED);
  ASSERT_EQ(atoll_response_cancel(r1), ATOLL_OK);
  EXPECT_EQ(atoll_response_wait(r1), ATOLL_CANCELLED);
  EXPECT_THAT(atoll_response_message(r1), HasSubstr("outputs were written"));
  EXPECT_EQ(running_out[n - 1], 1);  // ran to the end
  EXPECT_EQ(expired_out[0], 0);      // never ran
  EXPECT_EQ(cancelled_out[0], 0);    // never ran
  // Their quota came back at once: three more fit.
  std::vector<std::future<void>> more;
  for (int i = 0; i < 3; ++i) more.push_back(atoll::submit(Hold("testing.hold", 1000)));
  for (auto& f : more) EXPECT_NO_THROW(f.get());
  for (atoll_response r : {r1, r2, r3}) atoll_response_release(r);
  for (atoll_request r : {running, expiring, cancelled}) atoll_request_release(r);
}

// ---- Introspection ------------------------------------------------------------------------------

TEST(Scheduling, StatusShowsDevicesAndTenants) {
  json config = {
      {"backends", {{"cpu", {{"devices", 2}, {"compute_units", 2}, {"binaries_at_once", 1}}}}},
      {"scheduler", {{"default_weight", 2}}}};
  auto daemon = StartDaemon(config);
  std::vector<std::future<void>> running;
  for (int i = 0; i < 6; ++i) running.push_back(atoll::submit(Hold("testing.hold", 500000)));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  json status = Status(*daemon);
  const json& s = status["scheduler"];
  EXPECT_EQ(s["policy"], "fair");
  EXPECT_EQ(s["tenant_by"], "user");
  ASSERT_EQ(s["devices"].size(), 2u);
  EXPECT_EQ(s["devices"][0]["busy_compute_units"].get<int>() +
                s["devices"][1]["busy_compute_units"].get<int>(),
            4);
  EXPECT_EQ(s["devices"][0]["queued"].get<int>(), 2) << status.dump(2);
  EXPECT_EQ(s["devices"][0]["loaded"], json::array({"testing 1.0"}));
  EXPECT_EQ(s["devices"][0]["programmed"].get<int>(), 1);
  ASSERT_EQ(s["tenants"].size(), 1u);
  EXPECT_EQ(s["tenants"][0]["weight"].get<int>(), 2);
  EXPECT_EQ(s["tenants"][0]["in_flight"].get<int>(), 6);
  EXPECT_EQ(s["tenants"][0]["running"].get<int>(), 4);
  std::string text = StatusText(*daemon);
  EXPECT_THAT(text, HasSubstr("scheduler:   fair, tenants by user"));
  EXPECT_THAT(text, HasSubstr("cpu:0"));
  EXPECT_THAT(text, HasSubstr("testing 1.0"));
  for (auto& f : running) f.get();
  json done = Status(*daemon)["scheduler"]["tenants"][0];
  EXPECT_EQ(done["done"].get<int>(), 6);
  EXPECT_EQ(done["in_flight"].get<int>(), 0);
  EXPECT_GE(done["device_ms"].get<double>(), 6 * 500.0 * 0.99);
}

TEST(Scheduling, AnUnknownDeviceOrUserInTheConfigurationStopsTheDaemon) {
  for (const json& config :
       {json{{"devices", {{{"device", "cpu:7"}, {"mode", "shared"}}}}},
        json{{"tenants", {{{"name", "x"}, {"users", {"no-such-user-atoll"}}}}}}}) {
    TestDaemon::Options options;
    options.install = {};
    options.config_json = config.dump();
    try {
      TestDaemon daemon(options);
      ADD_FAILURE() << "atolld started with " << config.dump();
    } catch (const std::runtime_error& e) {
      EXPECT_THAT(e.what(), ::testing::AnyOf(HasSubstr("'devices[0].device': no device 'cpu:7'"),
                                             HasSubstr("'tenants[0].users[0]': no user")));
    }
  }
}

}  // namespace
}  // namespace atl::testing
