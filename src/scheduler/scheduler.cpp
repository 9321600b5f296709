#include "scheduler/scheduler.h"

#include <algorithm>

namespace atl::scheduler {

Scheduler::Scheduler(std::vector<DeviceConfig> devices) {
  for (const auto& config : devices) {
    Device d;
    d.config = config;
    d.config.compute_units = std::max<uint32_t>(1, config.compute_units);
    d.busy.assign(d.config.compute_units, false);
    free_units_ += d.config.compute_units;
    devices_.push_back(std::move(d));
  }
}

bool Scheduler::Holds(const Device& d, const std::string& binary) const {
  return std::find(d.loaded.begin(), d.loaded.end(), binary) != d.loaded.end();
}

bool Scheduler::TryPlace(const Job& job, uint32_t device, bool require_loaded, Start* start) {
  if (device >= devices_.size()) return false;
  Device& d = devices_[device];
  if (d.busy_count >= d.config.compute_units) return false;
  bool loaded = Holds(d, job.binary);
  if (require_loaded && !loaded) return false;
  start->job = job.id;
  start->device = device;
  start->program = !loaded;
  start->evict.clear();
  if (!loaded && d.config.binaries_at_once != 0 && d.loaded.size() >= d.config.binaries_at_once) {
    // Making room means unloading a binary, which is only safe on an idle device.
    if (d.busy_count != 0) return false;
    size_t drop = d.loaded.size() + 1 - d.config.binaries_at_once;
    start->evict.assign(d.loaded.begin(), d.loaded.begin() + static_cast<long>(drop));
  }
  auto free_unit = std::find(d.busy.begin(), d.busy.end(), false);
  start->compute_unit = static_cast<uint32_t>(free_unit - d.busy.begin());
  return true;
}

void Scheduler::Commit(const Job& job, Start* start) {
  Device& d = devices_[start->device];
  for (const auto& binary : start->evict) {
    d.loaded.erase(std::remove(d.loaded.begin(), d.loaded.end(), binary), d.loaded.end());
  }
  auto it = std::find(d.loaded.begin(), d.loaded.end(), job.binary);
  if (it != d.loaded.end()) d.loaded.erase(it);
  d.loaded.push_back(job.binary);
  if (start->program) ++d.programmed;
  d.busy[start->compute_unit] = true;
  ++d.busy_count;
  --free_units_;
  ++d.started;
}

std::optional<Start> Scheduler::Submit(Job job) {
  if (job.eligible_devices.empty()) return std::nullopt;
  // FIFO fairness: nothing overtakes jobs already waiting for the same devices.
  if (queue_.empty()) {
    std::optional<Start> best;
    for (bool require_loaded : {true, false}) {
      for (uint32_t device : job.eligible_devices) {
        Start s;
        if (!TryPlace(job, device, require_loaded, &s)) continue;
        if (!best || devices_[device].busy_count < devices_[best->device].busy_count) best = s;
      }
      if (best) break;
    }
    if (best) {
      Commit(job, &*best);
      return best;
    }
  }
  queue_.push_back(std::move(job));
  return std::nullopt;
}

std::vector<Start> Scheduler::Finish(uint32_t device, uint32_t compute_unit) {
  std::vector<Start> starts;
  if (device < devices_.size() && compute_unit < devices_[device].busy.size() &&
      devices_[device].busy[compute_unit]) {
    devices_[device].busy[compute_unit] = false;
    --devices_[device].busy_count;
    ++free_units_;
  }
  // Start waiting jobs in order while any can go; a job that cannot start yet keeps its place.
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (free_units_ == 0) break;  // keeps Finish O(1) under a deep queue
    std::optional<Start> best;
    for (bool require_loaded : {true, false}) {
      for (uint32_t d : it->eligible_devices) {
        Start s;
        if (!TryPlace(*it, d, require_loaded, &s)) continue;
        if (!best || devices_[d].busy_count < devices_[best->device].busy_count) best = s;
      }
      if (best) break;
    }
    if (!best) {
      ++it;
      continue;
    }
    Commit(*it, &*best);
    starts.push_back(*best);
    it = queue_.erase(it);
  }
  return starts;
}

void Scheduler::ForgetBinary(uint32_t device, const std::string& binary) {
  if (device >= devices_.size()) return;
  auto& loaded = devices_[device].loaded;
  loaded.erase(std::remove(loaded.begin(), loaded.end(), binary), loaded.end());
}

std::vector<JobId> Scheduler::RemoveQueued(const std::function<bool(JobId)>& pred) {
  std::vector<JobId> removed;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (pred(it->id)) {
      removed.push_back(it->id);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  return removed;
}

DeviceStats Scheduler::Stats(uint32_t device) const {
  DeviceStats s;
  if (device >= devices_.size()) return s;
  const Device& d = devices_[device];
  s.busy_compute_units = d.busy_count;
  s.started = d.started;
  s.programmed = d.programmed;
  s.loaded = d.loaded;
  return s;
}

}  // namespace atl::scheduler
