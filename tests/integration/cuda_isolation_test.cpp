// The cuda backend's process per GPU (the default, "isolate": "device") in a real atolld, on a
// machine with NVIDIA GPUs: a kernel fault fails the requests in flight on its GPU, the other GPU
// keeps serving, and the faulted GPU's process is replaced so the next requests succeed; a kernel
// past launch_timeout_ms is stopped. Skips, saying why, where atolld finds no GPU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <random>
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

using ::testing::AnyOf;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

nlohmann::json Status() {
  auto text = client::Connection::Default().Query(wire::Query::KIND_STATUS, 10000);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return nlohmann::json::parse(text.ok() ? *text : std::string("{}"));
}

// Only the cuda backend, `streams` compute units per GPU.
TestDaemon::Options CudaOptions(int streams, int launch_timeout_ms = 0, bool one_gpu = false) {
  TestDaemon::Options options;
  options.install = {"vector-cuda", "testing-cuda"};
  nlohmann::json cuda = {{"streams", streams}};
  if (one_gpu) cuda["devices"] = {0};
  if (launch_timeout_ms > 0) cuda["launch_timeout_ms"] = launch_timeout_ms;
  options.config_json =
      nlohmann::json{{"backends", {{"cpu", {{"enabled", false}}}, {"cuda", cuda}}}}.dump();
  return options;
}

size_t Gpus() { return Status()["scheduler"]["devices"].size(); }

#define REQUIRE_GPUS(daemon, n)                                                     \
  do {                                                                              \
    size_t gpus = Gpus();                                                           \
    if (gpus < (n)) {                                                               \
      GTEST_SKIP() << "atolld found " << gpus << " GPU(s); this test needs " << (n) \
                   << ". Its log: " << (daemon).log().substr(0, 600);               \
    }                                                                               \
  } while (0)

void ExpectAdditionWorks(int seed) {
  const int n = 1 << 20;
  atoll::vector<float> a(n), b(n), c(n);
  atl::testing::ExpectAdditionWorks(a, b, c, seed);
}

atoll::request Spin(int& ms) {
  atoll::request spin("testing.cuda.spin");
  spin.arg(ms);
  return spin;
}

TEST(CudaIsolation, AFaultOnOneGpuLeavesTheOtherServingAndItsProcessIsReplaced) {
  TestDaemon daemon(CudaOptions(1));
  REQUIRE_GPUS(daemon, 2u);
  ExpectAdditionWorks(1);
  // One stream per GPU: the spin holds one GPU, so the faulting kernel runs on the other.
  int spin_ms = 3000;
  auto spin = Spin(spin_ms);
  auto spinning = atoll::submit(spin);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const int n = 1 << 16;
  atoll::vector<int> out(n, 0);
  int count = n;
  atoll::request fault("testing.cuda.illegal_address");
  fault.arg(out).arg(count);
  auto faulting = atoll::submit(fault);
  auto [code, message] = Outcome(faulting);
  EXPECT_NE(code, ATOLL_OK);
  EXPECT_THAT(message, AnyOf(HasSubstr("CUDA_ERROR_ILLEGAL_ADDRESS"), HasSubstr("process")))
      << message;
  // The GPU running the spin was not disturbed.
  auto [spin_code, spin_message] = Outcome(spinning);
  EXPECT_EQ(spin_code, ATOLL_OK) << spin_message;
  // Both GPUs serve again, the faulted one from a fresh process.
  for (int round = 0; round < 8; ++round) ExpectAdditionWorks(10 + round);
  std::vector<std::future<void>> both;
  std::vector<int> ms(4, 300);
  for (int i = 0; i < 4; ++i) {
    auto s = Spin(ms[static_cast<size_t>(i)]);
    both.push_back(atoll::submit(s));
  }
  for (auto& f : both) {
    auto [c, m] = Outcome(f);
    EXPECT_EQ(c, ATOLL_OK) << m;
  }
  const nlohmann::json status = Status();
  int restarted = 0;
  for (const auto& device : status["scheduler"]["devices"]) {
    EXPECT_GE(device["started"].get<int>(), 2) << device.dump();
    restarted += device["process"]["starts"].get<int>() - 1;
  }
  EXPECT_EQ(restarted, 1) << "only the faulted GPU's process is replaced: " << status.dump();
  EXPECT_THAT(daemon.log(), HasSubstr("restarting it"));
}

TEST(CudaIsolation, AFaultFailsTheRequestsInFlightOnItsGpuAndTheGpuComesBack) {
  // One GPU with two streams: a request on one, the faulting kernel beside it on the other.
  TestDaemon daemon(CudaOptions(2, 0, /*one_gpu=*/true));
  REQUIRE_GPUS(daemon, 1u);
  struct PrintLogOnFailure {
    TestDaemon& daemon;
    ~PrintLogOnFailure() {
      if (::testing::Test::HasFailure()) std::printf("atolld's log:\n%s\n", daemon.log().c_str());
    }
  } print_log{daemon};
  ExpectAdditionWorks(1);

  // A request with outputs beside the fault: 256 MiB to upload and sum, then the faulting
  // kernel at once on the other stream. It must never complete with a wrong sum.
  const int big = 64 << 20;
  atoll::vector<int> data(big, 1);
  atoll::vector<unsigned long> sum(1, 0);
  int count_big = big;
  atoll::request consume("testing.cuda.consume");
  consume.arg(data).arg(count_big).arg(sum);
  const int n = 1 << 16;
  atoll::vector<int> out(n, 0);
  int count = n;
  atoll::request fault("testing.cuda.illegal_address");
  fault.arg(out).arg(count);
  auto consuming = atoll::submit(consume);
  auto faulting = atoll::submit(fault);
  auto [code, message] = Outcome(faulting);
  auto [consume_code, consume_message] = Outcome(consuming);
  std::printf("fault: %d %s\nconsume beside it: %d %s (sum %lu)\n", code, message.c_str(),
              consume_code, consume_message.c_str(), sum[0]);
  EXPECT_THAT(message, HasSubstr("CUDA_ERROR_ILLEGAL_ADDRESS"));
  if (consume_code == ATOLL_OK) {
    EXPECT_EQ(sum[0], static_cast<unsigned long>(big)) << "completed with a wrong result";
  } else {
    EXPECT_THAT(consume_code, AnyOf(ATOLL_ABORTED, ATOLL_UNAVAILABLE)) << consume_message;
    EXPECT_THAT(consume_message,
                AnyOf(HasSubstr("CUDA_ERROR_ILLEGAL_ADDRESS"), HasSubstr("process")));
  }

  // A kernel without outputs running beside a fault: it fails naming the fault, or completes
  // when the driver reports its work finished (it has no outputs to lose).
  int spin_ms = 2000;
  auto spin = Spin(spin_ms);
  const auto start = Clock::now();
  auto spinning = atoll::submit(spin);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto [code2, message2] = [&] {
    auto f = atoll::submit(fault);
    return Outcome(f);
  }();
  auto [spin_code, spin_message] = Outcome(spinning);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  std::printf("second fault: %d\nspin beside it: %d %s\nboth ended after %lld ms\n", code2,
              spin_code, spin_message.c_str(), static_cast<long long>(took.count()));
  EXPECT_THAT(message2, HasSubstr("CUDA_ERROR_ILLEGAL_ADDRESS"));
  if (spin_code != ATOLL_OK) {
    EXPECT_THAT(spin_code, AnyOf(ATOLL_ABORTED, ATOLL_UNAVAILABLE)) << spin_message;
  }
  // The GPU serves again from a fresh process.
  for (int round = 0; round < 4; ++round) ExpectAdditionWorks(20 + round);
}

TEST(CudaIsolation, AKernelPastLaunchTimeoutIsStoppedAndTheGpuServesAgain) {
  TestDaemon daemon(CudaOptions(2, 500));
  REQUIRE_GPUS(daemon, 1u);
  ExpectAdditionWorks(1);
  int spin_ms = 30000;
  auto spin = Spin(spin_ms);
  const auto start = Clock::now();
  auto spinning = atoll::submit(spin);
  auto [code, message] = Outcome(spinning);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  EXPECT_EQ(code, ATOLL_DEADLINE_EXCEEDED) << message;
  EXPECT_THAT(message, HasSubstr("launch_timeout_ms (500 ms)"));
  EXPECT_LT(took.count(), 10000) << "the kernel was not stopped";
  std::printf("a 30 s kernel was stopped after %lld ms\n", static_cast<long long>(took.count()));
  const auto back = Clock::now();
  ExpectAdditionWorks(2);
  std::printf(
      "the next request completed %lld ms later\n",
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - back).count()));
}

}  // namespace
}  // namespace atl::testing
