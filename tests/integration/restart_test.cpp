// Daemon restarts: a real atolld killed (SIGKILL, a crash) or stopped (SIGTERM) while requests are
// in flight, then started again on the same socket, repository and configuration. In-flight
// requests fail with UNAVAILABLE saying the daemon restarted; the client library reconnects on
// its own at the next submit and sends its buffers again.
#include <signal.h>
#include <sys/wait.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "atoll.pb.h"
#include "atoll/atoll.hpp"
#include "client/connection.h"
#include "request_testing.h"
#include "test_daemon.h"

namespace atl::testing {
namespace {

using ::testing::HasSubstr;

nlohmann::json Query(wire::Query::Kind kind) {
  auto text = client::Connection::Default().Query(kind, 10000);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return nlohmann::json::parse(text.ok() ? *text : std::string("null"));
}

TestDaemon::Options RestartOptions() {
  TestDaemon::Options options;
  options.install = {"vector", "testing"};
  // A limit that only this file sets, to see that the restarted daemon read it again.
  options.config_json = R"({"max_requests_per_connection": 3})";
  return options;
}

TEST(Restart, CrashFailsInFlightRequestsAndTheNextSubmitReconnectsWithItsBuffers) {
  TestDaemon daemon(RestartOptions());
  const int n = 4096;
  atoll::vector<float> a(n), b(n), c(n);
  ExpectAdditionWorks(a, b, c, 1);  // the buffers now live on the first connection
  nlohmann::json accelerators = Query(wire::Query::KIND_ACCELERATORS);
  nlohmann::json status = Query(wire::Query::KIND_STATUS);

  // One request running, one queued behind the two compute units' sleeps.
  atoll::vector<int> out(n, -1);
  int value = 5, ms = 5000, sleep_ms = 5000;
  atoll::request fill("testing.fill");
  fill.arg(out).arg(n).arg(value).arg(ms);
  atoll::request sleep("testing.sleep");
  sleep.arg(sleep_ms);
  std::vector<std::future<void>> in_flight;
  in_flight.push_back(atoll::submit(fill));
  in_flight.push_back(atoll::submit(sleep));
  in_flight.push_back(atoll::submit(sleep));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  int wstatus = daemon.Kill(SIGKILL);
  ASSERT_TRUE(WIFSIGNALED(wstatus));
  for (auto& f : in_flight) {
    ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    auto [code, message] = Outcome(f);
    EXPECT_EQ(code, ATOLL_UNAVAILABLE);
    EXPECT_THAT(message, HasSubstr("daemon restarted"));
  }

  // While it is down, a submit says so and does not hang.
  try {
    atoll::submit(fill);
    FAIL() << "a submit with no daemon must fail";
  } catch (const atoll::error& e) {
    EXPECT_EQ(e.code(), ATOLL_UNAVAILABLE);
    EXPECT_THAT(e.what(), HasSubstr("not running"));
  }

  daemon.Restart();
  // The same buffers, never freed, travel again on the new connection.
  ms = 0;
  atoll::request refill("testing.fill");
  refill.arg(out).arg(n).arg(value).arg(ms);
  atoll::submit(refill).get();
  for (int i = 0; i < n; ++i) ASSERT_EQ(out[i], value) << i;
  ExpectAdditionWorks(a, b, c, 2);

  // The repository survived, and the configuration was read again.
  EXPECT_EQ(Query(wire::Query::KIND_ACCELERATORS), accelerators);
  nlohmann::json after = Query(wire::Query::KIND_STATUS);
  EXPECT_EQ(after["repository"], status["repository"]);
  EXPECT_NE(after["pid"], status["pid"]);
  sleep_ms = 300;
  atoll::request short_sleep("testing.sleep");
  short_sleep.arg(sleep_ms);
  std::vector<std::future<void>> limited;
  for (int i = 0; i < 4; ++i) limited.push_back(atoll::submit(short_sleep));
  int exhausted = 0;
  for (auto& f : limited) {
    auto [code, message] = Outcome(f);
    if (code == ATOLL_RESOURCE_EXHAUSTED) {
      ++exhausted;
      EXPECT_THAT(message, HasSubstr("max_requests_per_connection"));
    } else {
      EXPECT_EQ(code, ATOLL_OK) << message;
    }
  }
  EXPECT_EQ(exhausted, 1);
}

TEST(Restart, IdleClientReconnectsWithoutAFailedSubmit) {
  TestDaemon daemon(RestartOptions());
  const int n = 1000;
  atoll::vector<float> a(n), b(n), c(n);
  ExpectAdditionWorks(a, b, c, 3);
  for (int round = 0; round < 3; ++round) {
    daemon.Kill(SIGKILL);
    daemon.Restart();
    // No request was in flight: the very next submit works, on a new connection.
    ExpectAdditionWorks(a, b, c, 10 + round);
  }
}

TEST(Restart, GracefulRestartFinishesRunningWorkAndFailsQueuedWorkClearly) {
  TestDaemon daemon(RestartOptions());
  int ms = 400;
  atoll::request sleep("testing.sleep");
  sleep.arg(ms);
  auto running1 = atoll::submit(sleep);
  auto running2 = atoll::submit(sleep);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto queued = atoll::submit(sleep);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_EQ(Outcome(running1).first, ATOLL_OK);
  EXPECT_EQ(Outcome(running2).first, ATOLL_OK);
  auto [code, message] = Outcome(queued);
  EXPECT_EQ(code, ATOLL_UNAVAILABLE);
  EXPECT_THAT(message, HasSubstr("shutting down"));
  daemon.Restart();
  const int n = 64;
  atoll::vector<float> a(n), b(n), c(n);
  ExpectAdditionWorks(a, b, c, 4);
}

TEST(Restart, ManyThreadsSubmittingAcrossACrashAllRecover) {
  TestDaemon::Options options = RestartOptions();
  options.config_json = "{}";
  TestDaemon daemon(options);
  constexpr int kThreads = 4;
  std::atomic<bool> restarted{false};
  std::atomic<int> wrong{0}, after_restart{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const int n = 512;
      atoll::vector<float> a(n, float(t)), b(n, 1.0f), c(n);
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (after_restart.load() < 20 * kThreads && std::chrono::steady_clock::now() < deadline) {
        bool was_restarted = restarted.load();
        atoll::request add("vector.addition");
        int size = n;
        add.arg(a).arg(b).arg(c).arg(size);
        try {
          atoll::submit(add).get();
          if (c[n - 1] != float(t) + 1.0f) wrong++;
          if (was_restarted) after_restart++;
        } catch (const atoll::error& e) {
          // Only the crash may fail a request, and only as UNAVAILABLE.
          if (e.code() != ATOLL_UNAVAILABLE) {
            wrong++;
            ADD_FAILURE() << e.what();
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  daemon.Kill(SIGKILL);
  daemon.Restart();
  restarted = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GE(after_restart.load(), 20 * kThreads);
}

}  // namespace
}  // namespace atl::testing
