// A process per device ("isolate": "device"): a real atolld runs the cpu backend's devices each in
// an atoll-backend-host process. A kernel that ends its process fails the requests in flight on
// that device only; the process is restarted with the client's buffers and loaded binaries, and
// the next requests succeed; a launch past launch_timeout_ms is stopped by ending its process.
#include <dirent.h>
#include <signal.h>
#include <sys/types.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "atoll.pb.h"
#include "atoll/atoll.hpp"
#include "client/connection.h"
#include "request_testing.h"
#include "test_daemon.h"

namespace atl::testing {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// The pids of `parent`'s children running atoll-backend-host.
std::vector<pid_t> DeviceProcesses(pid_t parent) {
  std::vector<pid_t> found;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return found;
  while (dirent* entry = ::readdir(proc)) {
    pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(entry->d_name) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
    size_t close = line.rfind(')');
    size_t open = line.find('(');
    if (close == std::string::npos || open == std::string::npos) continue;
    std::string comm = line.substr(open + 1, close - open - 1);
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && comm.rfind("atoll-backend-h", 0) == 0 && state != 'Z') {
      found.push_back(pid);
    }
  }
  ::closedir(proc);
  return found;
}

TestDaemon::Options IsolatedOptions(int devices, int compute_units, int launch_timeout_ms = 0) {
  TestDaemon::Options options;
  options.install = {"vector", "testing"};
  nlohmann::json cpu = {{"devices", devices},
                        {"compute_units", compute_units},
                        {"isolate", "device"},
                        {"launch_timeout_ms", launch_timeout_ms}};
  options.config_json = nlohmann::json{{"backends", {{"cpu", cpu}}}}.dump();
  return options;
}

TEST(Isolation, EachDeviceRunsInAProcessOfItsOwnAndWritesClientMemory) {
  TestDaemon daemon(IsolatedOptions(2, 2));
  EXPECT_EQ(DeviceProcesses(daemon.pid()).size(), 2u) << daemon.log();
  const int n = 1 << 16;
  atoll::vector<float> a(n), b(n), c(n);
  for (int round = 0; round < 20; ++round) ExpectAdditionWorks(a, b, c, round);
  // Both devices ran requests: 8 at once keep both busy.
  std::vector<std::unique_ptr<atoll::vector<int>>> outs;
  std::vector<std::future<void>> running;
  for (int i = 0; i < 8; ++i) {
    outs.push_back(std::make_unique<atoll::vector<int>>(1000, -1));
    int count = 1000, value = i, ms = 50;
    atoll::request fill("testing.fill");
    fill.arg(*outs.back()).arg(count).arg(value).arg(ms);
    running.push_back(atoll::submit(fill));
  }
  for (int i = 0; i < 8; ++i) {
    running[static_cast<size_t>(i)].get();
    for (int v : *outs[static_cast<size_t>(i)]) ASSERT_EQ(v, i);
  }
  auto text = client::Connection::Default().Query(wire::Query::KIND_STATUS, 10000);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  auto devices = nlohmann::json::parse(*text)["scheduler"]["devices"];
  ASSERT_EQ(devices.size(), 2u) << *text;
  for (const auto& device : devices) {
    EXPECT_GT(device["started"].get<int>(), 0) << *text;
    EXPECT_EQ(device["process"]["starts"], 1) << *text;
    EXPECT_GT(device["process"]["pid"].get<int>(), 0) << *text;
  }
}

TEST(Isolation, ACrashFailsItsDevicesRequestsTheOtherDeviceServesAndTheProcessComesBack) {
  TestDaemon daemon(IsolatedOptions(2, 1));
  const int n = 4096;
  atoll::vector<float> a(n), b(n), c(n);
  ExpectAdditionWorks(a, b, c, 1);  // the buffers now live in both device processes
  auto before = DeviceProcesses(daemon.pid());
  ASSERT_EQ(before.size(), 2u);

  // One compute unit per device: the fill runs on one device, the crash on the other.
  atoll::vector<int> out(n, -1);
  int count = n, value = 7, fill_ms = 1500, crash_ms = 200;
  atoll::request fill("testing.fill");
  fill.arg(out).arg(count).arg(value).arg(fill_ms);
  atoll::request crash("testing.crash");
  crash.arg(crash_ms);
  auto filling = atoll::submit(fill);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto crashing = atoll::submit(crash);

  auto [code, message] = Outcome(crashing);
  EXPECT_EQ(code, ATOLL_ABORTED) << message;
  EXPECT_THAT(message, HasSubstr("killed by SIGABRT"));
  EXPECT_THAT(message, HasSubstr("restarted"));
  // The other device was untouched: its request completed with its outputs.
  auto [fill_code, fill_message] = Outcome(filling);
  EXPECT_EQ(fill_code, ATOLL_OK) << fill_message;
  for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], value) << i;

  // The crashed device's process was replaced; buffers registered before the crash still work
  // on both devices, and the binary loaded before it runs again.
  for (int round = 0; round < 10; ++round) ExpectAdditionWorks(a, b, c, 10 + round);
  auto after = DeviceProcesses(daemon.pid());
  ASSERT_EQ(after.size(), 2u);
  int kept = 0;
  for (pid_t pid : after) kept += std::count(before.begin(), before.end(), pid);
  EXPECT_EQ(kept, 1) << "exactly one device process should have been replaced";
  auto text = client::Connection::Default().Query(wire::Query::KIND_STATUS, 10000);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  int restarted = 0;
  const nlohmann::json status = nlohmann::json::parse(*text);
  for (const auto& device : status["scheduler"]["devices"]) {
    restarted += device["process"]["starts"].get<int>() - 1;
  }
  EXPECT_EQ(restarted, 1) << *text;
  EXPECT_THAT(daemon.log(), HasSubstr("restarting it"));
}

TEST(Isolation, RequestsInFlightOnTheCrashedDeviceFailWithTheReason) {
  TestDaemon daemon(IsolatedOptions(1, 2));
  atoll::vector<int> out(1000, -1);
  int count = 1000, value = 3, fill_ms = 3000, crash_ms = 300;
  atoll::request fill("testing.fill");
  fill.arg(out).arg(count).arg(value).arg(fill_ms);
  atoll::request crash("testing.crash");
  crash.arg(crash_ms);
  auto filling = atoll::submit(fill);
  auto crashing = atoll::submit(crash);
  const auto start = Clock::now();
  for (auto* f : {&filling, &crashing}) {
    auto [code, message] = Outcome(*f);
    EXPECT_EQ(code, ATOLL_ABORTED) << message;
    EXPECT_THAT(message, HasSubstr("cpu device 0's process killed by SIGABRT"));
  }
  // The fill did not wait for its 3 s: it failed when the process ended.
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(2500));
  const int n = 1000;
  atoll::vector<float> a(n), b(n), c(n);
  ExpectAdditionWorks(a, b, c, 5);
}

TEST(Isolation, ALaunchPastLaunchTimeoutIsStoppedAndTheDeviceServesAgain) {
  TestDaemon daemon(IsolatedOptions(1, 1, 300));
  int ms = 10000;
  atoll::request sleep("testing.sleep");
  sleep.arg(ms);
  const auto start = Clock::now();
  auto sleeping = atoll::submit(sleep);
  auto [code, message] = Outcome(sleeping);
  const auto took = Clock::now() - start;
  EXPECT_EQ(code, ATOLL_DEADLINE_EXCEEDED) << message;
  EXPECT_THAT(message, HasSubstr("launch_timeout_ms (300 ms)"));
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::milliseconds(3000));
  const int n = 1000;
  atoll::vector<float> a(n), b(n), c(n);
  ExpectAdditionWorks(a, b, c, 6);
  // Kernels shorter than the limit are untouched.
  ms = 100;
  atoll::request short_sleep("testing.sleep");
  short_sleep.arg(ms);
  atoll::submit(short_sleep).get();
}

TEST(Isolation, StoppingTheDaemonEndsItsDeviceProcesses) {
  TestDaemon daemon(IsolatedOptions(2, 1));
  auto processes = DeviceProcesses(daemon.pid());
  ASSERT_EQ(processes.size(), 2u);
  EXPECT_EQ(daemon.Stop(), 0) << daemon.log();
  for (pid_t pid : processes) {
    EXPECT_NE(::kill(pid, 0), 0) << "device process " << pid << " outlived atolld";
  }
}

}  // namespace
}  // namespace atl::testing
