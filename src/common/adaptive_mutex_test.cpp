#include "common/adaptive_mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <thread>
#include <vector>

namespace atl {
namespace {

// Each test runs polling and, as on hosts with 2 cores or fewer, not.
class AdaptiveMutexTest : public ::testing::TestWithParam<bool> {};

TEST_P(AdaptiveMutexTest, ExcludesUnderContention) {
  AdaptiveMutex mu(GetParam());
  uint64_t counter = 0;  // GUARDED_BY(mu)
  std::vector<std::thread> threads;
  constexpr int kThreads = 4;
  constexpr int kIncrements = 200000;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        std::lock_guard lock(mu);
        // A read and a write apart: a lost update shows in the total.
        uint64_t seen = counter;
        counter = seen + 1;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter, uint64_t{kThreads} * kIncrements);
}

TEST_P(AdaptiveMutexTest, TryLockFailsWhileAnotherThreadHoldsIt) {
  AdaptiveMutex mu(GetParam());
  std::atomic<bool> held{false}, release{false};
  std::thread holder([&] {
    std::lock_guard lock(mu);
    held = true;
    while (!release) std::this_thread::yield();
  });
  while (!held) std::this_thread::yield();
  EXPECT_FALSE(mu.try_lock());
  release = true;
  holder.join();
  EXPECT_TRUE(mu.try_lock());
  mu.unlock();
}

// A lock held longer than the polling lasts: the waiter sleeps, then gets it.
TEST_P(AdaptiveMutexTest, AWaiterPastThePollingSleepsUntilTheHolderLetsGo) {
  AdaptiveMutex mu(GetParam());
  std::atomic<bool> held{false};
  std::thread holder([&] {
    std::lock_guard lock(mu);
    held = true;
    std::this_thread::sleep_for(AdaptiveMutex::kPoll * 20);
  });
  while (!held) std::this_thread::yield();
  const auto start = std::chrono::steady_clock::now();
  mu.lock();
  EXPECT_GE(std::chrono::steady_clock::now() - start, AdaptiveMutex::kPoll * 5);
  mu.unlock();
  holder.join();
}

TEST_P(AdaptiveMutexTest, WorksWithConditionVariableAny) {
  AdaptiveMutex mu(GetParam());
  std::condition_variable_any cv;
  bool ready = false;  // GUARDED_BY(mu)
  std::thread setter([&] {
    std::lock_guard lock(mu);
    ready = true;
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  cv.wait(lock, [&] { return ready; });
  EXPECT_TRUE(ready);
  lock.unlock();
  setter.join();
}

INSTANTIATE_TEST_SUITE_P(PollingOrNot, AdaptiveMutexTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? "Polling" : "Plain";
                         });

}  // namespace
}  // namespace atl
