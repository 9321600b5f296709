#include "scheduler/scheduler.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace atl::scheduler {

struct Scheduler::Device {
  DeviceConfig config;
  std::vector<JobId> unit_job;  // 0: the compute unit is free
  uint32_t busy = 0;
  struct Loaded {
    std::string binary;
    uint64_t last_used = 0;  // tick_ of its last start here
  };
  std::vector<Loaded> loaded;
  uint64_t started = 0;
  uint64_t programmed = 0;
  uint64_t evicted = 0;
  uint64_t queued = 0;
  Nanos busy_ns = 0;
  Nanos outstanding_ns = 0;  // estimates of the jobs running here
  Nanos program_ns = -1;     // measured programming time, smoothed; -1 until measured
  std::string draining_for;
};

// Queued jobs of one tenant that have the same alternatives, so the same placement options: only
// the front of each priority level can be the next to start, which keeps dispatch independent of
// the queue's depth.
struct Scheduler::Class {
  std::vector<Alternative> alternatives;
  std::map<int32_t, std::deque<QueueEntry>, std::greater<>> levels;  // highest priority first
  size_t live = 0;
  // Looked up once per class rather than once per job: the pending entries of its binaries and
  // the distinct devices of its alternatives.
  std::vector<PendingBinary*> pending;
  std::vector<uint32_t> devices;
};

struct Scheduler::Candidate {
  JobState* job;
  std::deque<QueueEntry>* level;
  int64_t priority;
};

struct Scheduler::TenantState {
  TenantId id = 0;
  TenantConfig config;
  double vtime = 0;
  uint64_t queued = 0;
  uint64_t running = 0;
  uint64_t started = 0;
  uint64_t finished = 0;
  uint64_t refused = 0;
  uint64_t memory = 0;
  Nanos device_ns = 0;
  std::vector<std::unique_ptr<Class>> classes;  // only classes with live jobs
};

struct Scheduler::JobState {
  Job job;
  TenantState* tenant = nullptr;
  Class* cls = nullptr;  // while queued
  uint64_t seq = 0;
  uint64_t enqueued_at = 0;    // the tenant's `started` when it was queued: its age
  Nanos pending_estimate = 0;  // counted in pending_ while queued
  Nanos charged = 0;           // charged to the tenant at start
  Nanos* estimate = nullptr;   // the running estimate of its cost key
  bool running = false;
  uint32_t device = 0;
  uint32_t unit = 0;
  uint32_t alternative = 0;
};

Scheduler::Scheduler(std::vector<DeviceConfig> devices, Options options) : options_(options) {
  options_.aging_starts = std::max<uint32_t>(1, options_.aging_starts);
  for (auto& config : devices) {
    Device d;
    d.config = std::move(config);
    d.config.compute_units = std::max<uint32_t>(1, d.config.compute_units);
    d.unit_job.assign(d.config.compute_units, 0);
    free_units_ += d.config.compute_units;
    devices_.push_back(std::move(d));
  }
}

Scheduler::~Scheduler() = default;
Scheduler::Scheduler(Scheduler&&) noexcept = default;
Scheduler& Scheduler::operator=(Scheduler&&) noexcept = default;

TenantId Scheduler::AddTenant(TenantConfig config) {
  auto t = std::make_unique<TenantState>();
  t->id = next_tenant_++;
  t->config = std::move(config);
  t->config.weight = std::max<uint32_t>(1, t->config.weight);
  t->vtime = virtual_now_;
  TenantId id = t->id;
  tenants_.emplace(id, std::move(t));
  return id;
}

bool Scheduler::RemoveTenant(TenantId tenant) {
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) return false;
  if (it->second->queued != 0 || it->second->running != 0) return false;
  tenants_.erase(it);
  return true;
}

bool Scheduler::MayUse(uint32_t device, const Identity& who) const {
  if (device >= devices_.size()) return false;
  const DeviceConfig& c = devices_[device].config;
  if (!c.exclusive) return true;
  if (std::find(c.users.begin(), c.users.end(), who.uid) != c.users.end()) return true;
  for (uint32_t gid : who.gids) {
    if (std::find(c.groups.begin(), c.groups.end(), gid) != c.groups.end()) return true;
  }
  return false;
}

bool Scheduler::IsQueued(JobId job) const {
  auto it = jobs_.find(job);
  return it != jobs_.end() && !it->second->running;
}

bool Scheduler::Holds(const Device& d, const std::string& binary) const {
  for (const auto& l : d.loaded) {
    if (l.binary == binary) return true;
  }
  return false;
}

bool Scheduler::HasRoom(const Device& d) const {
  return d.config.binaries_at_once == 0 || d.loaded.size() < d.config.binaries_at_once;
}

uint64_t Scheduler::Pending(const std::string& binary) const {
  auto it = pending_.find(binary);
  return it == pending_.end() ? 0 : it->second.count;
}

bool Scheduler::LessLoaded(uint32_t a, uint32_t b) const {
  const Device& x = devices_[a];
  const Device& y = devices_[b];
  // Busy fractions compared without division.
  uint64_t fx = uint64_t{x.busy} * y.config.compute_units;
  uint64_t fy = uint64_t{y.busy} * x.config.compute_units;
  if (fx != fy) return fx < fy;
  if (x.outstanding_ns != y.outstanding_ns) return x.outstanding_ns < y.outstanding_ns;
  return a < b;
}

std::vector<std::string> Scheduler::Victims(const Device& d, bool lru_only) const {
  std::vector<const Device::Loaded*> order;
  for (const auto& l : d.loaded) order.push_back(&l);
  std::sort(order.begin(), order.end(), [&](const Device::Loaded* x, const Device::Loaded* y) {
    if (!lru_only) {
      uint64_t px = Pending(x->binary), py = Pending(y->binary);
      if (px != py) return px < py;
    }
    return x->last_used < y->last_used;
  });
  size_t limit = d.config.binaries_at_once;
  size_t drop = d.loaded.size() + 1 > limit ? d.loaded.size() + 1 - limit : 0;
  std::vector<std::string> victims;
  for (size_t i = 0; i < drop && i < order.size(); ++i) victims.push_back(order[i]->binary);
  return victims;
}

uint32_t Scheduler::UnitLimit(const Device& d, const Alternative& alt) const {
  if (!d.config.compute_units_by_binary || alt.compute_units == 0) return d.config.compute_units;
  return std::min(alt.compute_units, d.config.compute_units);
}

int Scheduler::FreeUnit(const Device& d, uint32_t limit) const {
  if (d.busy >= d.config.compute_units) return -1;
  for (uint32_t u = 0; u < limit && u < d.unit_job.size(); ++u) {
    if (d.unit_job[u] == 0) return static_cast<int>(u);
  }
  return -1;
}

Scheduler::Placed Scheduler::Place(JobState& job, Start* start) {
  return options_.policy == Policy::kFifo ? PlaceFifo(job, start) : PlaceFair(job, start);
}

Scheduler::Placed Scheduler::PlaceFair(JobState& job, Start* start) {
  const auto& alternatives = job.job.alternatives;
  int best_a = -1;
  uint32_t best_d = 0;
  auto consider = [&](size_t a, uint32_t d) {
    if (best_a < 0 || LessLoaded(d, best_d)) {
      best_a = static_cast<int>(a);
      best_d = d;
    }
  };
  auto fill = [&](bool program, std::vector<std::string> evict) {
    const Device& d = devices_[best_d];
    start->job = job.job.id;
    start->alternative = static_cast<uint32_t>(best_a);
    start->device = best_d;
    start->compute_unit = static_cast<uint32_t>(FreeUnit(d, UnitLimit(d, alternatives[best_a])));
    start->program = program;
    start->evict = std::move(evict);
    return Placed::kStarted;
  };

  // 1. A free compute unit of a device that holds one of the job's binaries.
  bool has_holder = false;
  for (size_t a = 0; a < alternatives.size(); ++a) {
    for (uint32_t d : alternatives[a].devices) {
      const Device& dev = devices_[d];
      if (!Holds(dev, alternatives[a].binary)) continue;
      has_holder = true;
      if (dev.draining_for.empty() && FreeUnit(dev, UnitLimit(dev, alternatives[a])) >= 0) {
        consider(a, d);
      }
    }
  }
  if (best_a >= 0) return fill(false, {});

  // 2. A device that can load the binary beside the ones it holds.
  for (size_t a = 0; a < alternatives.size(); ++a) {
    for (uint32_t d : alternatives[a].devices) {
      const Device& dev = devices_[d];
      if (dev.draining_for.empty() && HasRoom(dev) &&
          FreeUnit(dev, UnitLimit(dev, alternatives[a])) >= 0) {
        consider(a, d);
      }
    }
  }
  if (best_a >= 0) return fill(true, {});

  // 3. Replace a binary on an idle device. A device drained for one of the job's binaries is
  // reserved for it.
  for (size_t a = 0; a < alternatives.size(); ++a) {
    for (uint32_t d : alternatives[a].devices) {
      const Device& dev = devices_[d];
      if (dev.busy == 0 && dev.draining_for == alternatives[a].binary) {
        best_a = static_cast<int>(a);
        best_d = d;
        return fill(true, Victims(dev, false));
      }
    }
  }
  // When some device holds the binary, its jobs could simply wait for it: replacing another
  // binary is worth it only when nobody waits for that one and the job's binary has more queued
  // work per holding compute unit than reprogramming takes.
  bool worth = !has_holder;
  Nanos work_per_unit = 0;
  if (has_holder) {
    Nanos work = job.cls == nullptr ? job.pending_estimate : 0;
    uint64_t holder_units = 0;
    std::vector<uint32_t> counted;
    for (const auto& alt : alternatives) {
      auto w = pending_.find(alt.binary);
      if (w != pending_.end()) work += w->second.work;
      for (uint32_t d : alt.devices) {
        if (!Holds(devices_[d], alt.binary)) continue;
        if (std::find(counted.begin(), counted.end(), d) != counted.end()) continue;
        counted.push_back(d);
        holder_units += UnitLimit(devices_[d], alt);
      }
    }
    worth = holder_units > 0 && work > 0;
    if (worth) work_per_unit = work / static_cast<Nanos>(holder_units);
  }
  if (worth) {
    uint64_t best_pending = 0;
    uint64_t best_used = 0;
    std::vector<std::string> best_victims;
    for (size_t a = 0; a < alternatives.size(); ++a) {
      for (uint32_t d : alternatives[a].devices) {
        const Device& dev = devices_[d];
        if (dev.busy != 0 || !dev.draining_for.empty()) continue;
        // Against this device's own programming time; unknown until it has been programmed once.
        if (has_holder && (dev.program_ns < 0 || work_per_unit <= dev.program_ns)) continue;
        std::vector<std::string> victims = Victims(dev, false);
        uint64_t pending = 0;
        uint64_t used = 0;
        for (const auto& v : victims) {
          pending += Pending(v);
          for (const auto& l : dev.loaded) {
            if (l.binary == v) used = std::max(used, l.last_used);
          }
        }
        if (has_holder && pending != 0) continue;
        if (best_a < 0 || pending < best_pending || (pending == best_pending && used < best_used)) {
          best_a = static_cast<int>(a);
          best_d = d;
          best_pending = pending;
          best_used = used;
          best_victims = std::move(victims);
        }
      }
    }
    if (best_a >= 0) return fill(true, std::move(best_victims));
  }

  // 4. No device holds any of the job's binaries and none can take one now: drain the device
  // whose binaries are least wanted, unless a device is draining for the job already or one with
  // room will take the binary as soon as a compute unit frees.
  if (!has_holder) {
    for (const auto& alt : alternatives) {
      for (uint32_t d : alt.devices) {
        const Device& dev = devices_[d];
        if (dev.draining_for == alt.binary) return Placed::kWait;
        if (dev.draining_for.empty() && HasRoom(dev)) return Placed::kWait;
      }
    }
    int drain_a = -1;
    uint32_t drain_d = 0;
    uint64_t drain_pending = 0;
    for (size_t a = 0; a < alternatives.size(); ++a) {
      for (uint32_t d : alternatives[a].devices) {
        const Device& dev = devices_[d];
        if (!dev.draining_for.empty()) continue;
        uint64_t pending = 0;
        for (const auto& l : dev.loaded) pending += Pending(l.binary);
        if (drain_a < 0 || pending < drain_pending ||
            (pending == drain_pending && LessLoaded(d, drain_d))) {
          drain_a = static_cast<int>(a);
          drain_d = d;
          drain_pending = pending;
        }
      }
    }
    if (drain_a >= 0) devices_[drain_d].draining_for = alternatives[drain_a].binary;
  }
  return Placed::kWait;
}

Scheduler::Placed Scheduler::PlaceFifo(JobState& job, Start* start) {
  const auto& alternatives = job.job.alternatives;
  for (bool require_loaded : {true, false}) {
    int best_a = -1;
    uint32_t best_d = 0;
    for (size_t a = 0; a < alternatives.size(); ++a) {
      for (uint32_t d : alternatives[a].devices) {
        const Device& dev = devices_[d];
        if (FreeUnit(dev, UnitLimit(dev, alternatives[a])) < 0) continue;
        bool loaded = Holds(dev, alternatives[a].binary);
        if (require_loaded != loaded) continue;
        // Making room means unloading a binary, which is only safe on an idle device.
        if (!loaded && !HasRoom(dev) && dev.busy != 0) continue;
        if (best_a < 0 || LessLoaded(d, best_d)) {
          best_a = static_cast<int>(a);
          best_d = d;
        }
      }
    }
    if (best_a < 0) continue;
    const Device& dev = devices_[best_d];
    start->job = job.job.id;
    start->alternative = static_cast<uint32_t>(best_a);
    start->device = best_d;
    start->compute_unit =
        static_cast<uint32_t>(FreeUnit(dev, UnitLimit(dev, alternatives[best_a])));
    start->program = !require_loaded;
    start->evict.clear();
    if (!require_loaded && !HasRoom(dev)) start->evict = Victims(dev, true);
    return Placed::kStarted;
  }
  return Placed::kWait;
}

void Scheduler::Activate(TenantState& tenant) {
  // Idle time earns no credit: a tenant that comes back starts at the virtual time of those
  // being served.
  double now = std::numeric_limits<double>::infinity();
  for (const auto& [id, t] : tenants_) {
    if (t.get() != &tenant && (t->queued != 0 || t->running != 0)) now = std::min(now, t->vtime);
  }
  if (now == std::numeric_limits<double>::infinity()) now = virtual_now_;
  virtual_now_ = std::max(virtual_now_, now);
  tenant.vtime = std::max(tenant.vtime, now);
}

void Scheduler::Enqueue(JobState& job) {
  TenantState& t = *job.tenant;
  Class* cls = nullptr;
  for (auto& c : t.classes) {
    if (c->alternatives == job.job.alternatives) {
      cls = c.get();
      break;
    }
  }
  if (cls == nullptr) {
    t.classes.push_back(std::make_unique<Class>());
    cls = t.classes.back().get();
    cls->alternatives = job.job.alternatives;
    for (const auto& alt : cls->alternatives) {
      cls->pending.push_back(&pending_[alt.binary]);
      for (uint32_t d : alt.devices) {
        if (std::find(cls->devices.begin(), cls->devices.end(), d) == cls->devices.end()) {
          cls->devices.push_back(d);
        }
      }
    }
  }
  int32_t level = options_.policy == Policy::kFifo ? 0 : job.job.priority;
  cls->levels[level].push_back({job.job.id, job.seq});
  ++cls->live;
  job.cls = cls;
  job.enqueued_at = t.started;
  job.pending_estimate = *job.estimate;
  ++t.queued;
  ++queued_total_;
  for (PendingBinary* p : cls->pending) {
    ++p->count;
    p->work += job.pending_estimate;
  }
  for (uint32_t d : cls->devices) ++devices_[d].queued;
}

void Scheduler::Unqueue(JobState& job) {
  TenantState& t = *job.tenant;
  --t.queued;
  --queued_total_;
  Class* cls = job.cls;
  for (size_t a = 0; a < cls->pending.size(); ++a) {
    PendingBinary& p = *cls->pending[a];
    p.work -= job.pending_estimate;
    if (--p.count == 0) {
      p.work = 0;
      // Nobody waits for the binary any more (its jobs started, or were cancelled or expired).
      for (Device& d : devices_) {
        if (d.draining_for == cls->alternatives[a].binary) d.draining_for.clear();
      }
    }
  }
  for (uint32_t d : cls->devices) --devices_[d].queued;
  job.cls = nullptr;
  if (--cls->live == 0) {
    auto it = std::find_if(t.classes.begin(), t.classes.end(),
                           [&](const auto& c) { return c.get() == cls; });
    if (it != t.classes.end()) {
      std::swap(*it, t.classes.back());
      t.classes.pop_back();
    }
  }
}

void Scheduler::Commit(JobState& job, const Start& start) {
  if (job.cls != nullptr) Unqueue(job);
  Device& d = devices_[start.device];
  for (const auto& binary : start.evict) {
    auto it = std::find_if(d.loaded.begin(), d.loaded.end(),
                           [&](const Device::Loaded& l) { return l.binary == binary; });
    if (it != d.loaded.end()) {
      d.loaded.erase(it);
      ++d.evicted;
    }
  }
  const std::string& binary = job.job.alternatives[start.alternative].binary;
  ++tick_;
  if (start.program && !Holds(d, binary)) {
    d.loaded.push_back({binary, tick_});
    ++d.programmed;
  } else {
    for (auto& l : d.loaded) {
      if (l.binary == binary) l.last_used = tick_;
    }
  }
  if (start.program) {
    // The binary has a holder now: devices drained for it may take other work again.
    for (Device& other : devices_) {
      if (other.draining_for == binary) other.draining_for.clear();
    }
  }
  d.unit_job[start.compute_unit] = job.job.id;
  ++d.busy;
  ++d.started;
  --free_units_;
  ++running_total_;
  job.running = true;
  job.device = start.device;
  job.unit = start.compute_unit;
  job.alternative = start.alternative;
  job.charged = *job.estimate;
  d.outstanding_ns += job.charged;
  TenantState& t = *job.tenant;
  virtual_now_ = std::max(virtual_now_, t.vtime);
  t.vtime += static_cast<double>(job.charged) / t.config.weight;
  ++t.running;
  ++t.started;
}

Scheduler::JobState* Scheduler::Front(Class& c, std::deque<QueueEntry>& level) {
  while (!level.empty()) {
    auto it = jobs_.find(level.front().id);
    if (it != jobs_.end() && it->second->cls == &c && it->second->seq == level.front().seq) {
      return it->second.get();
    }
    level.pop_front();  // left behind by a removed job
  }
  return nullptr;
}

Admission Scheduler::Submit(Job job, const Identity& who) {
  Admission out;
  auto t = tenants_.find(job.tenant);
  if (t == tenants_.end()) {
    out.refusal = Refusal::kUnknownTenant;
    out.message = "unknown tenant " + std::to_string(job.tenant);
    return out;
  }
  TenantState& tenant = *t->second;
  bool any_device = false;
  std::vector<uint32_t> refused_devices;
  for (auto& alt : job.alternatives) {
    any_device = any_device || !alt.devices.empty();
    auto keep = std::remove_if(alt.devices.begin(), alt.devices.end(), [&](uint32_t d) {
      if (d < devices_.size() && MayUse(d, who)) return false;
      if (d < devices_.size() &&
          std::find(refused_devices.begin(), refused_devices.end(), d) == refused_devices.end()) {
        refused_devices.push_back(d);
      }
      return true;
    });
    alt.devices.erase(keep, alt.devices.end());
  }
  if (!any_device) {
    out.refusal = Refusal::kNoDevice;
    out.message = "no device fits any binary that provides it";
    return out;
  }
  // Alternatives left without devices stay, so that Start::alternative indexes the caller's list.
  if (std::all_of(job.alternatives.begin(), job.alternatives.end(),
                  [](const Alternative& a) { return a.devices.empty(); })) {
    ++tenant.refused;
    out.refusal = Refusal::kExclusive;
    std::sort(refused_devices.begin(), refused_devices.end());
    out.message = "every device that can run it is exclusive to others:";
    for (size_t i = 0; i < refused_devices.size(); ++i) {
      const DeviceConfig& c = devices_[refused_devices[i]].config;
      out.message += (i == 0 ? " " : "; ") + c.name + " is exclusive to " + c.owners;
    }
    out.message += ". The request comes from uid " + std::to_string(who.uid) + " (groups";
    for (size_t i = 0; i < who.gids.size(); ++i) {
      out.message += (i == 0 ? " " : ", ") + std::to_string(who.gids[i]);
    }
    out.message += "), which is none of them";
    return out;
  }
  const TenantConfig& limits = tenant.config;
  uint64_t in_flight = tenant.queued + tenant.running;
  if (limits.max_requests_in_flight != 0 && in_flight >= limits.max_requests_in_flight) {
    ++tenant.refused;
    out.refusal = Refusal::kRequestQuota;
    out.message = "tenant '" + limits.name + "' already has " + std::to_string(in_flight) +
                  " requests in flight, its limit (max_requests_in_flight); wait for some to "
                  "complete";
    return out;
  }
  if (limits.max_device_memory_bytes != 0) {
    if (job.memory_bytes > limits.max_device_memory_bytes) {
      ++tenant.refused;
      out.refusal = Refusal::kMemoryQuota;
      out.message = "its array arguments take " + std::to_string(job.memory_bytes) +
                    " bytes of device memory, more than tenant '" + limits.name +
                    "' may use at once (max_device_memory_bytes " +
                    std::to_string(limits.max_device_memory_bytes) +
                    "); split the work into smaller requests";
      return out;
    }
    if (tenant.memory + job.memory_bytes > limits.max_device_memory_bytes) {
      ++tenant.refused;
      out.refusal = Refusal::kMemoryQuota;
      out.message = "tenant '" + limits.name + "' has " + std::to_string(tenant.memory) +
                    " bytes of device memory in requests in flight; this request's " +
                    std::to_string(job.memory_bytes) + " bytes would exceed its limit of " +
                    std::to_string(limits.max_device_memory_bytes) +
                    " (max_device_memory_bytes); wait for some to complete";
      return out;
    }
  }

  auto state = std::make_unique<JobState>();
  JobState& j = *state;
  j.tenant = &tenant;
  j.seq = next_seq_++;
  auto [estimate, fresh] = estimates_.try_emplace(job.cost_key, options_.default_estimate_ns);
  (void)fresh;
  j.estimate = &estimate->second;
  j.pending_estimate = *j.estimate;
  j.job = std::move(job);
  JobId id = j.job.id;
  if (tenant.queued == 0 && tenant.running == 0) Activate(tenant);
  tenant.memory += j.job.memory_bytes;
  jobs_[id] = std::move(state);
  // Nothing waits, so nothing can be overtaken: start at once if possible.
  if (queued_total_ == 0) {
    Start s;
    if (Place(j, &s) == Placed::kStarted) {
      Commit(j, s);
      out.starts.push_back(std::move(s));
      return out;
    }
    Enqueue(j);
    return out;
  }
  Enqueue(j);
  out.starts = Dispatch();
  return out;
}

std::vector<Start> Scheduler::Dispatch() {
  std::vector<Start> starts;
  std::vector<Candidate>& candidates = candidates_;
  while (queued_total_ > 0 && free_units_ > 0) {
    candidates.clear();
    for (auto& [tid, t] : tenants_) {
      if (t->queued == 0) continue;
      for (auto& c : t->classes) {
        Candidate best{nullptr, nullptr, 0};
        for (auto level = c->levels.begin(); level != c->levels.end();) {
          JobState* j = Front(*c, level->second);
          if (j == nullptr) {
            level = c->levels.erase(level);
            continue;
          }
          int64_t priority =
              int64_t{level->first} +
              static_cast<int64_t>((t->started - j->enqueued_at) / options_.aging_starts);
          if (best.job == nullptr || priority > best.priority ||
              (priority == best.priority && j->seq < best.job->seq)) {
            best = {j, &level->second, priority};
          }
          ++level;
        }
        if (best.job != nullptr) candidates.push_back(best);
      }
    }
    if (options_.policy == Policy::kFifo) {
      std::sort(candidates.begin(), candidates.end(),
                [](const Candidate& a, const Candidate& b) { return a.job->seq < b.job->seq; });
    } else {
      std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
        const TenantState& x = *a.job->tenant;
        const TenantState& y = *b.job->tenant;
        if (x.vtime != y.vtime) return x.vtime < y.vtime;
        if (x.id != y.id) return x.id < y.id;
        if (a.priority != b.priority) return a.priority > b.priority;
        return a.job->seq < b.job->seq;
      });
    }
    bool started = false;
    for (const Candidate& c : candidates) {
      Start s;
      if (Place(*c.job, &s) != Placed::kStarted) continue;
      c.level->pop_front();
      Commit(*c.job, s);
      starts.push_back(std::move(s));
      started = true;
      break;
    }
    if (!started) break;
  }
  return starts;
}

std::vector<Start> Scheduler::Finish(JobId id, Nanos ran_ns) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || !it->second->running) return {};
  JobState& j = *it->second;
  ran_ns = std::max<Nanos>(0, ran_ns);
  Device& d = devices_[j.device];
  d.unit_job[j.unit] = 0;
  --d.busy;
  ++free_units_;
  d.outstanding_ns -= j.charged;
  d.busy_ns += ran_ns;
  TenantState& t = *j.tenant;
  --t.running;
  ++t.finished;
  t.device_ns += ran_ns;
  t.memory -= j.job.memory_bytes;
  // The tenant was charged an estimate at start; now it pays what the job took.
  t.vtime += static_cast<double>(ran_ns - j.charged) / t.config.weight;
  --running_total_;
  if (ran_ns > 0) *j.estimate += (ran_ns - *j.estimate) / 4;
  jobs_.erase(it);
  if (queued_total_ == 0) return {};
  return Dispatch();
}

void Scheduler::ProgramTime(uint32_t device, Nanos ns) {
  if (device >= devices_.size() || ns < 0) return;
  Nanos& p = devices_[device].program_ns;
  p = p < 0 ? ns : (3 * p + ns) / 4;
}

void Scheduler::ForgetBinary(uint32_t device, const std::string& binary) {
  if (device >= devices_.size()) return;
  auto& loaded = devices_[device].loaded;
  loaded.erase(std::remove_if(loaded.begin(), loaded.end(),
                              [&](const Device::Loaded& l) { return l.binary == binary; }),
               loaded.end());
}

bool Scheduler::RemoveQueued(JobId id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end() || it->second->running) return false;
  JobState& j = *it->second;
  Unqueue(j);
  j.tenant->memory -= j.job.memory_bytes;
  jobs_.erase(it);
  return true;
}

std::vector<JobId> Scheduler::RemoveQueued(const std::function<bool(JobId)>& pred) {
  std::vector<std::pair<uint64_t, JobId>> matched;
  for (const auto& [id, j] : jobs_) {
    if (!j->running && pred(id)) matched.emplace_back(j->seq, id);
  }
  std::sort(matched.begin(), matched.end());
  std::vector<JobId> removed;
  removed.reserve(matched.size());
  for (const auto& [seq, id] : matched) {
    RemoveQueued(id);
    removed.push_back(id);
  }
  return removed;
}

size_t Scheduler::device_count() const { return devices_.size(); }

DeviceStats Scheduler::Stats(uint32_t device) const {
  DeviceStats s;
  if (device >= devices_.size()) return s;
  const Device& d = devices_[device];
  s.compute_units = d.config.compute_units;
  s.busy_compute_units = d.busy;
  s.queued = d.queued;
  s.started = d.started;
  s.programmed = d.programmed;
  s.evicted = d.evicted;
  s.busy_ns = d.busy_ns;
  s.exclusive = d.config.exclusive;
  s.draining_for = d.draining_for;
  std::vector<const Device::Loaded*> order;
  for (const auto& l : d.loaded) order.push_back(&l);
  std::sort(order.begin(), order.end(),
            [](const auto* a, const auto* b) { return a->last_used < b->last_used; });
  for (const auto* l : order) s.loaded.push_back(l->binary);
  return s;
}

TenantStats Scheduler::Tenant(TenantId tenant) const {
  TenantStats s;
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) return s;
  const TenantState& t = *it->second;
  s.name = t.config.name;
  s.weight = t.config.weight;
  s.queued = t.queued;
  s.running = t.running;
  s.started = t.started;
  s.finished = t.finished;
  s.refused = t.refused;
  s.memory_bytes = t.memory;
  s.device_ns = t.device_ns;
  s.virtual_time_ns = t.vtime;
  return s;
}

std::vector<TenantId> Scheduler::tenants() const {
  std::vector<TenantId> ids;
  for (const auto& [id, t] : tenants_) ids.push_back(id);
  return ids;
}

}  // namespace atl::scheduler
