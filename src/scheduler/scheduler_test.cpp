#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

namespace atl::scheduler {
namespace {

Job MakeJob(JobId id, std::string binary, std::vector<uint32_t> devices) {
  return Job{id, std::move(binary), std::move(devices)};
}

TEST(Scheduler, StartsOnFreeComputeUnitAndQueuesWhenFull) {
  Scheduler s({{2, 0}});
  auto a = s.Submit(MakeJob(1, "bin", {0}));
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->program);
  auto b = s.Submit(MakeJob(2, "bin", {0}));
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->program);
  EXPECT_NE(a->compute_unit, b->compute_unit);
  EXPECT_FALSE(s.Submit(MakeJob(3, "bin", {0})));
  EXPECT_EQ(s.queued(), 1u);
  auto next = s.Finish(0, a->compute_unit);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].job, 3u);
  EXPECT_EQ(next[0].compute_unit, a->compute_unit);
  EXPECT_EQ(s.queued(), 0u);
}

TEST(Scheduler, PrefersDeviceHoldingTheBinary) {
  Scheduler s({{4, 1}, {4, 1}});
  auto a = s.Submit(MakeJob(1, "x", {0, 1}));
  ASSERT_TRUE(a);
  auto b = s.Submit(MakeJob(2, "x", {0, 1}));
  ASSERT_TRUE(b);
  EXPECT_EQ(a->device, b->device);
  EXPECT_FALSE(b->program);
}

TEST(Scheduler, BalancesByOutstandingWork) {
  Scheduler s({{4, 0}, {4, 0}});
  int per_device[2] = {0, 0};
  for (JobId id = 1; id <= 8; ++id) {
    auto start = s.Submit(MakeJob(id, "x", {0, 1}));
    ASSERT_TRUE(start);
    ++per_device[start->device];
  }
  EXPECT_EQ(per_device[0], 4);
  EXPECT_EQ(per_device[1], 4);
}

TEST(Scheduler, NeverReprogramsADeviceWithWorkInFlight) {
  Scheduler s({{2, 1}});
  auto a = s.Submit(MakeJob(1, "x", {0}));
  ASSERT_TRUE(a);
  EXPECT_FALSE(s.Submit(MakeJob(2, "y", {0})));  // x still runs
  auto next = s.Finish(0, a->compute_unit);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_TRUE(next[0].program);
  ASSERT_EQ(next[0].evict.size(), 1u);
  EXPECT_EQ(next[0].evict[0], "x");
  EXPECT_EQ(s.Stats(0).programmed, 2u);
}

TEST(Scheduler, QueueIsFifo) {
  Scheduler s({{1, 0}});
  auto a = s.Submit(MakeJob(1, "x", {0}));
  ASSERT_TRUE(a);
  for (JobId id = 2; id <= 5; ++id) EXPECT_FALSE(s.Submit(MakeJob(id, "x", {0})));
  for (JobId expected = 2; expected <= 5; ++expected) {
    auto next = s.Finish(0, 0);
    ASSERT_EQ(next.size(), 1u);
    EXPECT_EQ(next[0].job, expected);
  }
  EXPECT_TRUE(s.Finish(0, 0).empty());
  EXPECT_EQ(s.Stats(0).busy_compute_units, 0u);
}

TEST(Scheduler, RemoveQueuedDropsOnlyMatchingJobs) {
  Scheduler s({{1, 0}});
  ASSERT_TRUE(s.Submit(MakeJob(1, "x", {0})));
  for (JobId id = 2; id <= 6; ++id) s.Submit(MakeJob(id, "x", {0}));
  auto removed = s.RemoveQueued([](JobId id) { return id % 2 == 0; });
  EXPECT_EQ(removed, (std::vector<JobId>{2, 4, 6}));
  EXPECT_EQ(s.queued(), 2u);
  EXPECT_EQ(s.Finish(0, 0)[0].job, 3u);
}

TEST(Scheduler, JobWithoutEligibleDeviceIsNotQueued) {
  Scheduler s({{1, 0}});
  EXPECT_FALSE(s.Submit(MakeJob(1, "x", {})));
  EXPECT_EQ(s.queued(), 0u);
}

TEST(Scheduler, ForgetBinaryForcesReprogramming) {
  Scheduler s({{1, 0}});
  auto a = s.Submit(MakeJob(1, "x", {0}));
  ASSERT_TRUE(a);
  s.ForgetBinary(0, "x");
  s.Finish(0, 0);
  auto b = s.Submit(MakeJob(2, "x", {0}));
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->program);
}

}  // namespace
}  // namespace atl::scheduler
