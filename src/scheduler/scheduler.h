// Scheduling policy: which queued request runs next, and on which compute unit of which device.
// Pure policy: no I/O, no clocks, no threads. The daemon serialises calls and passes measured
// durations in (run times, programming times), so tests drive it with simulated time.
//
// The published policy (docs/scheduling.md):
// - Placement. A job lists alternatives: per binary that provides its accelerator, the devices that
//   binary fits. It starts on a free compute unit of a device that already holds one of its
//   binaries; else on a device that can load the binary without unloading another; else, only on
//   a device with no work in flight, by replacing the loaded binary with the least pending demand.
//   When no eligible device holds any of its binaries and none is idle, one device is drained (it
//   takes no new work) so that it can be reprogrammed. Among equal choices the device with the
//   least outstanding work (busy compute units, then estimated running time) wins.
// - Fair share. Each tenant has a weight. The tenant with the least device time received per unit
//   of weight (its virtual time) starts next: start-time fair queueing over measured run times, so
//   weights 1:3 give device-time shares of 25/75 whatever each request costs. A tenant that comes
//   back from idle starts at the current virtual time: idleness earns no credit.
// - Within a tenant: higher priority first, FIFO within a priority. A queued job gains one
//   priority level for every `aging_starts` jobs its tenant starts, so none waits forever.
// - Devices are `shared` or `exclusive` to named users and groups: nobody else's job runs there.
// - Quotas per tenant: requests in flight (queued or running) and device memory (the bytes of the
//   array arguments of its requests in flight). A job over a quota is refused, never queued.
//
// Thread safety: none; the daemon serialises calls.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace atl::scheduler {

using JobId = uint64_t;  // non-zero
using TenantId = uint32_t;
using Nanos = int64_t;

enum class Policy {
  kFair,  // the policy above
  kFifo,  // one queue in arrival order, LRU replacement on any idle device: the old baseline
};

// Who submitted a job: decides which exclusive devices it may use.
struct Identity {
  uint32_t uid = 0;
  std::vector<uint32_t> gids;  // primary and supplementary groups
};

struct DeviceConfig {
  uint32_t compute_units = 1;
  uint32_t binaries_at_once = 0;  // 0: no limit
  // The binary decides how many of the compute units a kernel may use (Alternative's
  // compute_units): an FPGA binary has as many instances of a kernel as its manifest lists.
  bool compute_units_by_binary = false;
  bool exclusive = false;  // only `users` and members of `groups` may use it
  std::vector<uint32_t> users;
  std::vector<uint32_t> groups;
  std::string name;    // for messages, e.g. "device 1 (cpu:1)"
  std::string owners;  // for messages, e.g. "users alice, 1003; groups research"
};

struct TenantConfig {
  std::string name;
  uint32_t weight = 1;                   // >= 1
  uint64_t max_requests_in_flight = 0;   // 0: no limit
  uint64_t max_device_memory_bytes = 0;  // 0: no limit
};

struct Options {
  Policy policy = Policy::kFair;
  // A queued job gains one priority level per this many starts of its tenant (>= 1).
  uint32_t aging_starts = 16;
  // The run time assumed for a kind of job before one has been measured.
  Nanos default_estimate_ns = 1000000;
};

struct Alternative {
  std::string binary;             // a key identifying the binary (its checksum)
  std::vector<uint32_t> devices;  // indices of devices whose platform fits it
  // On devices with compute_units_by_binary: the job may run only on compute units numbered
  // below this (0: all of them).
  uint32_t compute_units = 0;
  bool operator==(const Alternative&) const = default;
};

struct Job {
  JobId id = 0;
  TenantId tenant = 0;
  int32_t priority = 0;  // higher runs first, within the tenant
  std::vector<Alternative> alternatives;
  uint64_t memory_bytes = 0;  // device memory the job needs while in flight
  std::string cost_key;       // jobs with one key cost about the same (the accelerator id)
};

// What the caller must do: run `job` on (`device`, `compute_unit`) with alternative
// `alternative`'s binary, loading it first when `program` is set, after unloading `evict`.
struct Start {
  JobId job = 0;
  uint32_t alternative = 0;
  uint32_t device = 0;
  uint32_t compute_unit = 0;
  bool program = false;
  std::vector<std::string> evict;
};

enum class Refusal {
  kNone,
  kUnknownTenant,  // the caller's mistake
  kNoDevice,       // no alternative lists a device
  kExclusive,      // every device that fits is exclusive to others
  kRequestQuota,   // max_requests_in_flight reached
  kMemoryQuota,    // max_device_memory_bytes would be exceeded
};

struct Admission {
  Refusal refusal = Refusal::kNone;
  std::string message;        // why, when refused
  std::vector<Start> starts;  // what can start now (this job or others)
  bool ok() const { return refusal == Refusal::kNone; }
};

struct DeviceStats {
  uint32_t compute_units = 0;
  uint32_t busy_compute_units = 0;
  uint64_t queued = 0;      // queued jobs that could run here
  uint64_t started = 0;     // jobs started here
  uint64_t programmed = 0;  // binaries loaded
  uint64_t evicted = 0;     // binaries unloaded to make room (reprogrammings)
  Nanos busy_ns = 0;        // measured run time of finished jobs
  bool exclusive = false;
  std::string draining_for;  // a binary this device is being emptied for, or ""
  std::vector<std::string> loaded;
};

struct TenantStats {
  std::string name;
  uint32_t weight = 1;
  uint64_t queued = 0;
  uint64_t running = 0;
  uint64_t started = 0;
  uint64_t finished = 0;
  uint64_t refused = 0;        // refused by a quota or by exclusive devices
  uint64_t memory_bytes = 0;   // device memory of its jobs in flight
  Nanos device_ns = 0;         // measured run time of its finished jobs
  double virtual_time_ns = 0;  // device time received per unit of weight
};

class Scheduler {
 public:
  explicit Scheduler(std::vector<DeviceConfig> devices, Options options = {});
  ~Scheduler();
  Scheduler(Scheduler&&) noexcept;
  Scheduler& operator=(Scheduler&&) noexcept;

  TenantId AddTenant(TenantConfig config);
  // Forgets a tenant with nothing queued or running (false, and nothing changes, otherwise).
  bool RemoveTenant(TenantId tenant);

  // Admits the job (it starts now or is queued) or refuses it with a message. Devices `who` may
  // not use are dropped from its alternatives first (an alternative left with none stays in the
  // list, so that Start::alternative indexes the caller's alternatives).
  // REQUIRES: job ids are non-zero and unique among jobs not yet finished.
  Admission Submit(Job job, const Identity& who);

  // The started job has ended after running `ran_ns` (0 when it failed before it ran). Frees its
  // compute unit and returns what can start now.
  std::vector<Start> Finish(JobId job, Nanos ran_ns);

  // A measured programming time of `device`: reprogramming to relieve a busy device happens only
  // when the queued work it would take over exceeds this.
  void ProgramTime(uint32_t device, Nanos ns);

  // The binary could not be loaded on the device: forgets that it is loaded there.
  void ForgetBinary(uint32_t device, const std::string& binary);

  // Removes queued jobs for which `pred` is true and returns their ids in arrival order. Removing
  // jobs may let others start: call Dispatch afterwards.
  std::vector<JobId> RemoveQueued(const std::function<bool(JobId)>& pred);
  bool RemoveQueued(JobId job);

  // Starts what can start now.
  std::vector<Start> Dispatch();

  bool MayUse(uint32_t device, const Identity& who) const;
  bool IsQueued(JobId job) const;

  size_t queued() const { return queued_total_; }
  size_t running() const { return running_total_; }
  size_t device_count() const;
  const Options& options() const { return options_; }
  DeviceStats Stats(uint32_t device) const;
  TenantStats Tenant(TenantId tenant) const;
  std::vector<TenantId> tenants() const;

 private:
  struct Device;
  struct Class;
  struct TenantState;
  struct JobState;
  enum class Placed { kStarted, kWait };
  struct QueueEntry {
    JobId id;
    uint64_t seq;  // tells a live entry from a stale one left by a removed job
  };

  bool Holds(const Device& d, const std::string& binary) const;
  // The compute units of `d` that a job of `alt` may use: those numbered below the result.
  uint32_t UnitLimit(const Device& d, const Alternative& alt) const;
  // The lowest-numbered free compute unit of `d` below `limit`, or -1.
  int FreeUnit(const Device& d, uint32_t limit) const;
  bool HasRoom(const Device& d) const;
  uint64_t Pending(const std::string& binary) const;
  // True when device `a` has less outstanding work than device `b`.
  bool LessLoaded(uint32_t a, uint32_t b) const;
  // Binaries to unload from `d` to make room for one more, least pending demand first, then
  // least recently used.
  std::vector<std::string> Victims(const Device& d, bool lru_only) const;
  Placed Place(JobState& job, Start* start);
  Placed PlaceFair(JobState& job, Start* start);
  Placed PlaceFifo(JobState& job, Start* start);
  void Commit(JobState& job, const Start& start);
  void Enqueue(JobState& job);
  // Takes a queued job out of the pending counts (started or removed).
  void Unqueue(JobState& job);
  void Activate(TenantState& tenant);
  // The first live job of a priority level of `c`, dropping stale entries.
  JobState* Front(Class& c, std::deque<QueueEntry>& level);

  Options options_;
  std::vector<Device> devices_;
  std::map<TenantId, std::unique_ptr<TenantState>> tenants_;
  std::unordered_map<JobId, std::unique_ptr<JobState>> jobs_;
  struct PendingBinary {
    uint64_t count = 0;  // queued jobs that could use the binary
    Nanos work = 0;      // their estimated run time
  };
  // Entries are never erased: classes keep pointers to them.
  std::unordered_map<std::string, PendingBinary> pending_;
  std::unordered_map<std::string, Nanos> estimates_;  // run time per cost key
  TenantId next_tenant_ = 1;
  uint64_t next_seq_ = 1;
  uint64_t tick_ = 0;  // counts starts: orders binaries by last use
  uint64_t free_units_ = 0;
  size_t queued_total_ = 0;
  size_t running_total_ = 0;
  double virtual_now_ = 0;
  struct Candidate;
  std::vector<Candidate> candidates_;  // Dispatch's, kept to reuse its memory
};

}  // namespace atl::scheduler
