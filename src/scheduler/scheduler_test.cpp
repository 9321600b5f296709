#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <queue>

namespace atl::scheduler {
namespace {

constexpr Nanos kMs = 1000000;

Job MakeJob(JobId id, std::string binary, std::vector<uint32_t> devices, TenantId tenant = 1,
            int32_t priority = 0) {
  Job job;
  job.id = id;
  job.tenant = tenant;
  job.priority = priority;
  job.alternatives = {{std::move(binary), std::move(devices)}};
  job.cost_key = "k";
  return job;
}

DeviceConfig Device(uint32_t units, uint32_t binaries_at_once = 0) {
  DeviceConfig c;
  c.compute_units = units;
  c.binaries_at_once = binaries_at_once;
  return c;
}

const Identity kAnyone{4242, {4242}};

// A scheduler with one default tenant (id 1), for the placement tests.
Scheduler WithTenant(std::vector<DeviceConfig> devices, Options options = {}) {
  Scheduler s(std::move(devices), options);
  s.AddTenant({"t", 1, 0, 0});
  return s;
}

// Submits a job; returns its start if it started at once.
std::optional<Start> StartNow(Scheduler& s, Job job, const Identity& who = kAnyone) {
  JobId id = job.id;
  Admission a = s.Submit(std::move(job), who);
  EXPECT_TRUE(a.ok()) << a.message;
  for (const auto& start : a.starts) {
    if (start.job == id) return start;
  }
  return std::nullopt;
}

// Drives a scheduler in simulated time, without threads or clocks: every started job occupies its
// compute unit for its duration (plus the device's programming time when it loads a binary), and
// ends in time order.
class Simulation {
 public:
  Simulation(Scheduler* s, Nanos program_ns = 0) : s_(s), program_ns_(program_ns) {}

  // Submits a job that runs `ns` once started. `done` runs when it ends.
  Admission Submit(Job job, Nanos ns, std::function<void()> done = nullptr,
                   const Identity& who = kAnyone) {
    JobId id = job.id;
    info_[id] = {ns, job.tenant, std::move(done)};
    Admission a = s_->Submit(std::move(job), who);
    if (!a.ok()) info_.erase(id);
    Launch(a.starts);
    return a;
  }

  // Runs until `until` or until nothing runs.
  void RunUntil(Nanos until) {
    while (!events_.empty() && events_.top().end <= until) {
      Event e = events_.top();
      events_.pop();
      now_ = e.end;
      Info info = std::move(info_[e.job]);
      info_.erase(e.job);
      auto next = s_->Finish(e.job, info.ns);
      ++finished_[info.tenant];
      device_ns_[info.tenant] += info.ns;
      ran_on_[e.job] = e.device;
      Launch(next);
      if (info.done) info.done();
    }
    if (until != kForever) now_ = std::max(now_, until);
  }
  void RunAll() { RunUntil(kForever); }

  Nanos now() const { return now_; }
  uint64_t finished(TenantId t) { return finished_[t]; }
  Nanos device_ns(TenantId t) { return device_ns_[t]; }
  uint64_t programs() const { return programs_; }
  uint64_t evictions() const { return evictions_; }
  uint32_t RanOn(JobId job) { return ran_on_.at(job); }
  std::vector<JobId> started_order;

  static constexpr Nanos kForever = std::numeric_limits<Nanos>::max();

 private:
  struct Info {
    Nanos ns = 0;
    TenantId tenant = 0;
    std::function<void()> done;
  };
  struct Event {
    Nanos end;
    uint64_t seq;
    JobId job;
    uint32_t device;
    bool operator>(const Event& o) const { return end != o.end ? end > o.end : seq > o.seq; }
  };

  void Launch(const std::vector<Start>& starts) {
    for (const Start& s : starts) {
      Nanos extra = 0;
      if (s.program) {
        ++programs_;
        evictions_ += s.evict.size();
        extra = program_ns_;
        s_->ProgramTime(s.device, program_ns_);
      }
      started_order.push_back(s.job);
      events_.push({now_ + extra + info_.at(s.job).ns, seq_++, s.job, s.device});
    }
  }

  Scheduler* s_;
  Nanos program_ns_;
  Nanos now_ = 0;
  uint64_t seq_ = 0;
  uint64_t programs_ = 0;
  uint64_t evictions_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events_;
  std::map<JobId, Info> info_;
  std::map<TenantId, uint64_t> finished_;
  std::map<TenantId, Nanos> device_ns_;
  std::map<JobId, uint32_t> ran_on_;
};

// ---- Placement ----------------------------------------------------------------------------------

TEST(Scheduler, StartsOnFreeComputeUnitAndQueuesWhenFull) {
  Scheduler s = WithTenant({Device(2)});
  auto a = StartNow(s, MakeJob(1, "bin", {0}));
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->program);
  auto b = StartNow(s, MakeJob(2, "bin", {0}));
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->program);
  EXPECT_NE(a->compute_unit, b->compute_unit);
  EXPECT_FALSE(StartNow(s, MakeJob(3, "bin", {0})));
  EXPECT_EQ(s.queued(), 1u);
  EXPECT_EQ(s.Stats(0).queued, 1u);
  auto next = s.Finish(1, kMs);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].job, 3u);
  EXPECT_EQ(next[0].compute_unit, a->compute_unit);
  EXPECT_EQ(s.queued(), 0u);
  EXPECT_EQ(s.running(), 2u);
}

// On an FPGA the binary holds a fixed number of instances of each kernel: a kernel listed with
// two names runs on compute units 0 and 1 only, however many the device has.
TEST(Scheduler, ABinaryDecidesHowManyComputeUnitsItsKernelUses) {
  for (Policy policy : {Policy::kFair, Policy::kFifo}) {
    SCOPED_TRACE(policy == Policy::kFair ? "fair" : "fifo");
    DeviceConfig fpga = Device(4, 1);
    fpga.compute_units_by_binary = true;
    Options options;
    options.policy = policy;
    Scheduler s = WithTenant({fpga}, options);
    auto Kernel = [](JobId id, uint32_t instances) {
      Job job = MakeJob(id, "bitstream", {0});
      job.alternatives[0].compute_units = instances;
      return job;
    };
    auto a = StartNow(s, Kernel(1, 2));
    auto b = StartNow(s, Kernel(2, 2));
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->compute_unit, 0u);
    EXPECT_EQ(b->compute_unit, 1u);
    EXPECT_FALSE(StartNow(s, Kernel(3, 2))) << "both instances of the kernel are busy";
    // Another kernel of the same binary with three instances takes the third compute unit.
    auto c = StartNow(s, Kernel(4, 3));
    ASSERT_TRUE(c);
    EXPECT_EQ(c->compute_unit, 2u);
    EXPECT_FALSE(c->program);
    auto next = s.Finish(2, kMs);
    ASSERT_EQ(next.size(), 1u);
    EXPECT_EQ(next[0].job, 3u);
    EXPECT_EQ(next[0].compute_unit, 1u);
  }
  // A device whose compute units all run every kernel ignores the count.
  Scheduler gpu = WithTenant({Device(4)});
  for (JobId id = 1; id <= 4; ++id) {
    Job job = MakeJob(id, "binary", {0});
    job.alternatives[0].compute_units = 1;
    EXPECT_TRUE(StartNow(gpu, std::move(job)));
  }
}

TEST(Scheduler, PrefersDeviceHoldingTheBinary) {
  Scheduler s = WithTenant({Device(4, 1), Device(4, 1)});
  auto a = StartNow(s, MakeJob(1, "x", {0, 1}));
  ASSERT_TRUE(a);
  auto b = StartNow(s, MakeJob(2, "x", {0, 1}));
  ASSERT_TRUE(b);
  EXPECT_EQ(a->device, b->device);
  EXPECT_FALSE(b->program);
}

TEST(Scheduler, BalancesByOutstandingWork) {
  Scheduler s = WithTenant({Device(4), Device(4)});
  int per_device[2] = {0, 0};
  // The second device gets the binary once the first one's units are full; then load decides.
  for (JobId id = 1; id <= 8; ++id) {
    auto start = StartNow(s, MakeJob(id, "x", {0, 1}));
    ASSERT_TRUE(start);
    ++per_device[start->device];
  }
  EXPECT_EQ(per_device[0], 4);
  EXPECT_EQ(per_device[1], 4);
  for (JobId id = 1; id <= 8; ++id) s.Finish(id, kMs);
  // Teach the scheduler that "long" jobs take 40 ms and "short" ones 1 ms.
  for (JobId id = 10; id < 30; ++id) {
    Job j = MakeJob(id, "x", {0, 1});
    j.cost_key = id % 2 == 0 ? "long" : "short";
    ASSERT_TRUE(StartNow(s, std::move(j)));
    s.Finish(id, id % 2 == 0 ? 40 * kMs : kMs);
  }
  Job long_job = MakeJob(40, "x", {0, 1});
  long_job.cost_key = "long";
  auto first = StartNow(s, std::move(long_job));
  ASSERT_TRUE(first);
  EXPECT_EQ(first->device, 0u);  // equal load: the lower index
  Job short_job = MakeJob(41, "x", {0, 1});
  short_job.cost_key = "short";
  auto second = StartNow(s, std::move(short_job));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->device, 1u);  // fewer busy units
  auto third = StartNow(s, MakeJob(42, "x", {0, 1}));
  ASSERT_TRUE(third);
  EXPECT_EQ(third->device, 1u);  // as many busy units, but less estimated work outstanding
  EXPECT_FALSE(third->program);
}

TEST(Scheduler, LoadIsBalancedOverManyDevicesNotRoundRobin) {
  Scheduler s = WithTenant({Device(1), Device(2), Device(1)});
  Simulation sim(&s);
  // Jobs of 1 ms keep all 4 units busy; the 2-unit device must run twice as many.
  JobId next = 1;
  std::function<void()> again = [&] {
    if (sim.now() < 1000 * kMs) sim.Submit(MakeJob(next++, "x", {0, 1, 2}), kMs, again);
  };
  for (int i = 0; i < 8; ++i) again();
  sim.RunAll();
  uint64_t started[3] = {s.Stats(0).started, s.Stats(1).started, s.Stats(2).started};
  uint64_t total = started[0] + started[1] + started[2];
  EXPECT_NEAR(static_cast<double>(started[1]) / total, 0.5, 0.01);
  EXPECT_NEAR(static_cast<double>(started[0]) / total, 0.25, 0.01);
  // 4 units for 1000 ms of 1 ms jobs: no unit stood idle.
  EXPECT_GE(total, 3990u);
}

TEST(Scheduler, NeverReprogramsADeviceWithWorkInFlight) {
  Scheduler s = WithTenant({Device(2, 1)});
  auto a = StartNow(s, MakeJob(1, "x", {0}));
  ASSERT_TRUE(a);
  EXPECT_FALSE(StartNow(s, MakeJob(2, "y", {0})));  // x still runs
  EXPECT_EQ(s.Stats(0).draining_for, "y");
  // The draining device takes no more x.
  EXPECT_FALSE(StartNow(s, MakeJob(3, "x", {0})));
  auto next = s.Finish(1, kMs);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].job, 2u);
  EXPECT_TRUE(next[0].program);
  ASSERT_EQ(next[0].evict.size(), 1u);
  EXPECT_EQ(next[0].evict[0], "x");
  EXPECT_EQ(s.Stats(0).programmed, 2u);
  EXPECT_EQ(s.Stats(0).evicted, 1u);
  // Job 3 needs x, which no device holds now: the device drains for it while y runs.
  EXPECT_EQ(s.Stats(0).draining_for, "x");
}

TEST(Scheduler, DevicesThatHoldManyBinariesAreNeverReprogrammed) {
  Scheduler s = WithTenant({Device(1, 0)});
  for (JobId id = 1; id <= 5; ++id) {
    auto start = StartNow(s, MakeJob(id, "b" + std::to_string(id), {0}));
    ASSERT_TRUE(start);
    EXPECT_TRUE(start->evict.empty());
    s.Finish(id, kMs);
  }
  EXPECT_EQ(s.Stats(0).loaded.size(), 5u);
  EXPECT_EQ(s.Stats(0).evicted, 0u);
  // A third binary on a 2-binary device unloads the least wanted one only.
  Scheduler two = WithTenant({Device(1, 2)});
  ASSERT_TRUE(StartNow(two, MakeJob(1, "a", {0})));
  two.Finish(1, kMs);
  ASSERT_TRUE(StartNow(two, MakeJob(2, "b", {0})));
  two.Finish(2, kMs);
  ASSERT_TRUE(StartNow(two, MakeJob(3, "a", {0})));  // a is now the more recently used
  two.Finish(3, kMs);
  auto c = StartNow(two, MakeJob(4, "c", {0}));
  ASSERT_TRUE(c);
  EXPECT_EQ(c->evict, std::vector<std::string>{"b"});
}

TEST(Scheduler, JobWithoutEligibleDeviceIsRefused) {
  Scheduler s = WithTenant({Device(1)});
  Admission a = s.Submit(MakeJob(1, "x", {}), kAnyone);
  EXPECT_EQ(a.refusal, Refusal::kNoDevice);
  EXPECT_EQ(s.queued(), 0u);
  EXPECT_EQ(s.Submit(MakeJob(2, "x", {0}, 99), kAnyone).refusal, Refusal::kUnknownTenant);
}

TEST(Scheduler, ForgetBinaryForcesReprogramming) {
  Scheduler s = WithTenant({Device(1)});
  ASSERT_TRUE(StartNow(s, MakeJob(1, "x", {0})));
  s.ForgetBinary(0, "x");
  s.Finish(1, 0);
  auto b = StartNow(s, MakeJob(2, "x", {0}));
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->program);
}

TEST(Scheduler, AlternativesLetPlacementChooseTheBinary) {
  // One accelerator, two binaries: "a" fits device 0, "b" fits device 1.
  Scheduler s = WithTenant({Device(1, 1), Device(1, 1)});
  auto job = [](JobId id) {
    Job j = MakeJob(id, "a", {0});
    j.alternatives.push_back({"b", {1}});
    return j;
  };
  auto first = StartNow(s, job(1));
  auto second = StartNow(s, job(2));
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->device, 0u);
  EXPECT_EQ(first->alternative, 0u);
  EXPECT_EQ(second->device, 1u);
  EXPECT_EQ(second->alternative, 1u);
  EXPECT_TRUE(second->program);
  EXPECT_FALSE(StartNow(s, job(3)));
  auto next = s.Finish(2, kMs);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].device, 1u);
  EXPECT_EQ(next[0].alternative, 1u);
  EXPECT_FALSE(next[0].program);
}

TEST(Scheduler, RemoveQueuedDropsOnlyMatchingJobs) {
  Scheduler s = WithTenant({Device(1)});
  ASSERT_TRUE(StartNow(s, MakeJob(1, "x", {0})));
  for (JobId id = 2; id <= 6; ++id) s.Submit(MakeJob(id, "x", {0}), kAnyone);
  auto removed = s.RemoveQueued([](JobId id) { return id % 2 == 0; });
  EXPECT_EQ(removed, (std::vector<JobId>{2, 4, 6}));
  EXPECT_EQ(s.queued(), 2u);
  EXPECT_FALSE(s.RemoveQueued(JobId{1}));  // running: not removable
  EXPECT_EQ(s.Finish(1, kMs)[0].job, 3u);
  EXPECT_TRUE(s.RemoveQueued(JobId{5}));
  EXPECT_TRUE(s.Finish(3, kMs).empty());
  EXPECT_EQ(s.queued(), 0u);
  EXPECT_EQ(s.Tenant(1).finished, 2u);
}

// ---- Reprogramming ------------------------------------------------------------------------------

// Two binaries on two single-binary devices, requested alternately by clients that keep a few
// requests each in flight. Returns the reprogrammings (evictions) after the first 50 ms.
uint64_t AlternatingDemand(Policy policy, uint64_t* finished) {
  Options options;
  options.policy = policy;
  Scheduler s({Device(1, 1), Device(1, 1)}, options);
  s.AddTenant({"t", 1, 0, 0});
  Simulation sim(&s, 5 * kMs);
  JobId next = 1;
  uint32_t random = 12345;
  // Each client alternates a, b, a, b... with one request in flight, each request taking 1 to
  // 3 ms (a fixed pseudo-random sequence, so that the clients drift out of phase).
  std::function<void(bool)> client = [&](bool a) {
    if (sim.now() >= 2000 * kMs) return;
    random = random * 1103515245u + 12345u;
    Nanos ns = kMs + static_cast<Nanos>((random >> 16) % 2001) * kMs / 1000;
    sim.Submit(MakeJob(next++, a ? "a" : "b", {0, 1}), ns, [&, a] { client(!a); });
  };
  client(true);
  client(false);
  client(true);
  sim.RunUntil(50 * kMs);
  uint64_t warm = s.Stats(0).evicted + s.Stats(1).evicted;
  sim.RunAll();
  *finished = s.Tenant(1).finished;
  return s.Stats(0).evicted + s.Stats(1).evicted - warm;
}

TEST(Scheduler, AlternatingDemandCausesNoReprogrammingAfterWarmUp) {
  uint64_t fair_finished = 0, fifo_finished = 0;
  EXPECT_EQ(AlternatingDemand(Policy::kFair, &fair_finished), 0u);
  // The old policy replaces binaries on whichever device is idle, and keeps doing so.
  EXPECT_GT(AlternatingDemand(Policy::kFifo, &fifo_finished), 50u);
  EXPECT_GT(fair_finished, fifo_finished);
}

TEST(Scheduler, ABinaryNobodyHoldsDrainsADeviceInsteadOfStarving) {
  Scheduler s = WithTenant({Device(2, 1)});
  Simulation sim(&s, kMs);
  JobId next = 1;
  // A backlog of x keeps both units busy forever.
  std::function<void()> x = [&] {
    if (sim.now() < 500 * kMs) sim.Submit(MakeJob(next++, "x", {0}), 3 * kMs, x);
  };
  for (int i = 0; i < 4; ++i) x();
  sim.RunUntil(20 * kMs);
  bool y_done = false;
  Nanos submitted = sim.now();
  Nanos y_end = 0;
  sim.Submit(MakeJob(10000, "y", {0}), kMs, [&] {
    y_done = true;
    y_end = sim.now();
  });
  sim.RunAll();
  ASSERT_TRUE(y_done);
  // The x jobs queued before y start first (within 3 ms), then the device drains (3 ms more),
  // is programmed and runs y. Without the drain y would wait for the x backlog to end at 500 ms.
  EXPECT_LE(y_end - submitted, 3 * 3 * kMs + 2 * kMs);
}

TEST(Scheduler, CancelledJobReleasesTheDrainItCaused) {
  Scheduler s = WithTenant({Device(2, 1)});
  ASSERT_TRUE(StartNow(s, MakeJob(1, "x", {0})));
  EXPECT_FALSE(StartNow(s, MakeJob(2, "y", {0})));
  EXPECT_EQ(s.Stats(0).draining_for, "y");
  EXPECT_FALSE(StartNow(s, MakeJob(3, "x", {0})));  // the draining device takes no more x
  EXPECT_TRUE(s.RemoveQueued(JobId{2}));
  EXPECT_EQ(s.Stats(0).draining_for, "");
  auto started = s.Dispatch();
  ASSERT_EQ(started.size(), 1u);
  EXPECT_EQ(started[0].job, 3u);
}

TEST(Scheduler, ReprogramsAnIdleDeviceOnlyWhenTheBacklogIsWorthIt) {
  // Device 0 holds x, device 1 holds y; programming takes 10 ms.
  auto setup = [](Scheduler& s) {
    Simulation warm(&s, 10 * kMs);
    warm.Submit(MakeJob(1, "x", {0, 1}), kMs);
    warm.Submit(MakeJob(2, "y", {1}), kMs);
    warm.RunAll();
    EXPECT_EQ(s.Stats(0).loaded, std::vector<std::string>{"x"});
    EXPECT_EQ(s.Stats(1).loaded, std::vector<std::string>{"y"});
  };
  {
    // Three x jobs of 1 ms: waiting costs less than reprogramming device 1.
    Scheduler s = WithTenant({Device(1, 1), Device(1, 1)});
    setup(s);
    Simulation sim(&s, 10 * kMs);
    for (JobId id = 10; id < 13; ++id) sim.Submit(MakeJob(id, "x", {0, 1}), kMs);
    sim.RunAll();
    EXPECT_EQ(s.Stats(1).evicted, 0u);
  }
  {
    // Forty: device 1 is worth reprogramming, since nobody waits for y.
    Scheduler s = WithTenant({Device(1, 1), Device(1, 1)});
    setup(s);
    Simulation sim(&s, 10 * kMs);
    for (JobId id = 10; id < 50; ++id) sim.Submit(MakeJob(id, "x", {0, 1}), kMs);
    sim.RunAll();
    EXPECT_EQ(s.Stats(1).evicted, 1u);
    EXPECT_LT(sim.now(), 40 * kMs);
  }
}

// ---- Tenants ------------------------------------------------------------------------------------

// Two tenants keep a backlog on one device for `seconds` of simulated time; returns tenant a's
// share of the device time.
double ShareOfA(uint32_t weight_a, uint32_t weight_b, Nanos cost_a, Nanos cost_b,
                uint64_t* finished_a = nullptr) {
  Scheduler s({Device(2)});
  TenantId a = s.AddTenant({"a", weight_a, 0, 0});
  TenantId b = s.AddTenant({"b", weight_b, 0, 0});
  Simulation sim(&s);
  JobId next = 1;
  const Nanos end = 10000 * kMs;
  std::function<void(TenantId, Nanos)> keep = [&](TenantId t, Nanos cost) {
    if (sim.now() >= end) return;
    Job job = MakeJob(next++, "x", {0}, t);
    job.cost_key = t == a ? "a" : "b";
    sim.Submit(std::move(job), cost, [&, t, cost] { keep(t, cost); });
  };
  for (int i = 0; i < 8; ++i) {
    keep(a, cost_a);
    keep(b, cost_b);
  }
  sim.RunAll();
  if (finished_a != nullptr) *finished_a = sim.finished(a);
  return static_cast<double>(sim.device_ns(a)) / (sim.device_ns(a) + sim.device_ns(b));
}

TEST(Scheduler, WeightsGiveProportionalDeviceTime) {
  EXPECT_NEAR(ShareOfA(1, 3, kMs, kMs), 0.25, 0.0025);
  EXPECT_NEAR(ShareOfA(1, 1, kMs, kMs), 0.5, 0.0025);
  // By device time, not request count: a's requests cost 4 times b's.
  EXPECT_NEAR(ShareOfA(1, 3, 4 * kMs, kMs), 0.25, 0.0025);
  EXPECT_NEAR(ShareOfA(1, 1, 4 * kMs, kMs), 0.5, 0.0025);
}

TEST(Scheduler, LowWeightTenantStillProgresses) {
  uint64_t finished_a = 0;
  double share = ShareOfA(1, 100, kMs, kMs, &finished_a);
  EXPECT_NEAR(share, 1.0 / 101, 0.002);
  EXPECT_GT(finished_a, 150u);  // 20000 unit-ms / 101
}

TEST(Scheduler, IdleTenantEarnsNoCredit) {
  Scheduler s({Device(1)});
  TenantId a = s.AddTenant({"a", 1, 0, 0});
  TenantId b = s.AddTenant({"b", 1, 0, 0});
  Simulation sim(&s);
  JobId next = 1;
  Nanos stop = 1000 * kMs;
  std::function<void(TenantId)> keep = [&](TenantId t) {
    if (sim.now() < stop) sim.Submit(MakeJob(next++, "x", {0}, t), kMs, [&, t] { keep(t); });
  };
  // a runs alone for 1 s, then b joins: b must not get the device to itself to "catch up".
  for (int i = 0; i < 4; ++i) keep(a);
  sim.RunUntil(500 * kMs);
  uint64_t a_before = sim.finished(a);
  for (int i = 0; i < 4; ++i) keep(b);
  sim.RunAll();
  uint64_t a_after = sim.finished(a) - a_before;
  uint64_t b_after = sim.finished(b);
  EXPECT_NEAR(static_cast<double>(a_after) / (a_after + b_after), 0.5, 0.02);
}

TEST(Scheduler, PrioritiesWithinATenantThenFifo) {
  Scheduler s = WithTenant({Device(1)});
  ASSERT_TRUE(StartNow(s, MakeJob(1, "x", {0})));
  s.Submit(MakeJob(2, "x", {0}, 1, 0), kAnyone);
  s.Submit(MakeJob(3, "x", {0}, 1, 5), kAnyone);
  s.Submit(MakeJob(4, "x", {0}, 1, -5), kAnyone);
  s.Submit(MakeJob(5, "x", {0}, 1, 5), kAnyone);
  s.Submit(MakeJob(6, "x", {0}, 1, 0), kAnyone);
  std::vector<JobId> order;
  JobId running = 1;
  for (int i = 0; i < 5; ++i) {
    auto next = s.Finish(running, kMs);
    ASSERT_EQ(next.size(), 1u);
    running = next[0].job;
    order.push_back(running);
  }
  EXPECT_EQ(order, (std::vector<JobId>{3, 5, 2, 6, 4}));
}

TEST(Scheduler, PriorityDoesNotCrossTenants) {
  Scheduler s({Device(1)});
  TenantId a = s.AddTenant({"a", 1, 0, 0});
  TenantId b = s.AddTenant({"b", 1, 0, 0});
  Simulation sim(&s);
  JobId next = 1;
  std::function<void(TenantId, int32_t)> keep = [&](TenantId t, int32_t priority) {
    if (sim.now() < 1000 * kMs) {
      sim.Submit(MakeJob(next++, "x", {0}, t, priority), kMs,
                 [&, t, priority] { keep(t, priority); });
    }
  };
  for (int i = 0; i < 4; ++i) {
    keep(a, 1000);
    keep(b, -1000);
  }
  sim.RunAll();
  EXPECT_NEAR(static_cast<double>(sim.finished(a)) / (sim.finished(a) + sim.finished(b)), 0.5,
              0.01);
}

TEST(Scheduler, LowPriorityJobsAgeAndNeverStarve) {
  Options options;
  options.aging_starts = 4;
  Scheduler s = WithTenant({Device(1)}, options);
  Simulation sim(&s);
  JobId next = 1;
  // A stream of priority-10 jobs that never runs dry.
  std::function<void()> high = [&] {
    if (sim.now() < 1000 * kMs) sim.Submit(MakeJob(next++, "x", {0}, 1, 10), kMs, high);
  };
  for (int i = 0; i < 3; ++i) high();
  sim.RunUntil(10 * kMs);
  Nanos low_end = 0;
  Nanos low_submitted = sim.now();
  sim.Submit(MakeJob(99999, "x", {0}, 1, 0), kMs, [&] { low_end = sim.now(); });
  sim.RunAll();
  ASSERT_GT(low_end, 0);
  // 10 levels to climb at 4 starts each: about 40 ms, far less than the stream's 990 ms.
  EXPECT_LE(low_end - low_submitted, 45 * kMs);
  EXPECT_GE(low_end - low_submitted, 35 * kMs);
}

// ---- Exclusive devices --------------------------------------------------------------------------

TEST(Scheduler, ExclusiveDeviceRunsOnlyItsOwnersJobs) {
  DeviceConfig owned = Device(1);
  owned.exclusive = true;
  owned.users = {1000};
  owned.groups = {500};
  owned.name = "device 0 (cpu:0)";
  owned.owners = "users alice; groups research";
  Scheduler s({owned, Device(1)});
  s.AddTenant({"t", 1, 0, 0});
  Simulation sim(&s);
  const Identity alice{1000, {1000}};
  const Identity member{2000, {2000, 500}};
  const Identity other{3000, {3000}};
  for (JobId id = 1; id <= 30; ++id) {
    const Identity& who = id % 3 == 0 ? alice : id % 3 == 1 ? member : other;
    ASSERT_TRUE(sim.Submit(MakeJob(id, "x", {0, 1}), kMs, nullptr, who).ok());
  }
  sim.RunAll();
  uint64_t others_on_0 = 0, owners_on_0 = 0;
  for (JobId id = 1; id <= 30; ++id) {
    if (sim.RanOn(id) != 0) continue;
    (id % 3 == 2 ? others_on_0 : owners_on_0) += 1;
  }
  EXPECT_EQ(others_on_0, 0u);
  EXPECT_GT(owners_on_0, 5u);

  Admission refused = s.Submit(MakeJob(100, "x", {0}), other);
  EXPECT_EQ(refused.refusal, Refusal::kExclusive);
  EXPECT_NE(refused.message.find("device 0 (cpu:0) is exclusive to users alice; groups research"),
            std::string::npos)
      << refused.message;
  EXPECT_NE(refused.message.find("uid 3000"), std::string::npos) << refused.message;
  EXPECT_TRUE(s.Submit(MakeJob(101, "x", {0}), member).ok());
  EXPECT_EQ(s.Tenant(1).refused, 1u);
}

// ---- Quotas -------------------------------------------------------------------------------------

TEST(Scheduler, RequestQuotaRefusesAndRecovers) {
  Scheduler s({Device(1)});
  TenantId t = s.AddTenant({"alice", 1, 2, 0});
  ASSERT_TRUE(s.Submit(MakeJob(1, "x", {0}, t), kAnyone).ok());
  ASSERT_TRUE(s.Submit(MakeJob(2, "x", {0}, t), kAnyone).ok());
  Admission third = s.Submit(MakeJob(3, "x", {0}, t), kAnyone);
  EXPECT_EQ(third.refusal, Refusal::kRequestQuota);
  EXPECT_NE(third.message.find("tenant 'alice' already has 2 requests in flight"),
            std::string::npos)
      << third.message;
  s.Finish(1, kMs);
  EXPECT_TRUE(s.Submit(MakeJob(4, "x", {0}, t), kAnyone).ok());
  EXPECT_TRUE(s.RemoveQueued(JobId{4}));  // a cancelled request frees its slot too
  EXPECT_TRUE(s.Submit(MakeJob(5, "x", {0}, t), kAnyone).ok());
  EXPECT_EQ(s.Tenant(t).refused, 1u);
}

TEST(Scheduler, DeviceMemoryQuotaRefusesAndRecovers) {
  Scheduler s({Device(1)});
  TenantId t = s.AddTenant({"bob", 1, 0, 1000});
  auto job = [&](JobId id, uint64_t bytes) {
    Job j = MakeJob(id, "x", {0}, t);
    j.memory_bytes = bytes;
    return j;
  };
  Admission huge = s.Submit(job(1, 1001), kAnyone);
  EXPECT_EQ(huge.refusal, Refusal::kMemoryQuota);
  EXPECT_NE(huge.message.find("1001 bytes of device memory, more than tenant 'bob' may use"),
            std::string::npos)
      << huge.message;
  ASSERT_TRUE(s.Submit(job(2, 600), kAnyone).ok());
  ASSERT_TRUE(s.Submit(job(3, 400), kAnyone).ok());  // queued: counts too
  Admission over = s.Submit(job(4, 1), kAnyone);
  EXPECT_EQ(over.refusal, Refusal::kMemoryQuota);
  EXPECT_NE(over.message.find("has 1000 bytes of device memory in requests in flight"),
            std::string::npos)
      << over.message;
  EXPECT_EQ(s.Tenant(t).memory_bytes, 1000u);
  s.Finish(2, kMs);
  EXPECT_EQ(s.Tenant(t).memory_bytes, 400u);
  EXPECT_TRUE(s.Submit(job(5, 600), kAnyone).ok());
}

TEST(Scheduler, TenantsAreRemovedOnlyWhenIdle) {
  Scheduler s({Device(1)});
  TenantId t = s.AddTenant({"p", 1, 0, 0});
  ASSERT_TRUE(s.Submit(MakeJob(1, "x", {0}, t), kAnyone).ok());
  EXPECT_FALSE(s.RemoveTenant(t));
  s.Finish(1, kMs);
  EXPECT_TRUE(s.RemoveTenant(t));
  EXPECT_EQ(s.Submit(MakeJob(2, "x", {0}, t), kAnyone).refusal, Refusal::kUnknownTenant);
}

TEST(Scheduler, FifoPolicyServesArrivalOrderAcrossTenants) {
  Options options;
  options.policy = Policy::kFifo;
  Scheduler s({Device(1)}, options);
  TenantId a = s.AddTenant({"a", 1, 0, 0});
  TenantId b = s.AddTenant({"b", 100, 0, 0});
  ASSERT_TRUE(StartNow(s, MakeJob(1, "x", {0}, a)));
  s.Submit(MakeJob(2, "x", {0}, a, -10), kAnyone);
  s.Submit(MakeJob(3, "x", {0}, b, 10), kAnyone);
  s.Submit(MakeJob(4, "x", {0}, a), kAnyone);
  std::vector<JobId> order;
  JobId running = 1;
  for (int i = 0; i < 3; ++i) {
    running = s.Finish(running, kMs).at(0).job;
    order.push_back(running);
  }
  EXPECT_EQ(order, (std::vector<JobId>{2, 3, 4}));
}

}  // namespace
}  // namespace atl::scheduler
