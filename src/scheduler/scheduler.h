// Placement of requests on compute units: pure policy, no I/O, no clocks, no threads.
//
// Each device has a number of compute units and holds up to `binaries_at_once` binaries (0 = no
// limit). A job names the binary it needs and the devices whose platform fits it. The scheduler
// starts a job on a free compute unit, preferring a device that already holds the binary, then the
// device with the least outstanding work; a device is reprogrammed only when none of its compute
// units is busy. Jobs that cannot start wait in FIFO order.
//
// Thread safety: none; the daemon serialises calls.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace atl::scheduler {

using JobId = uint64_t;

struct DeviceConfig {
  uint32_t compute_units = 1;
  uint32_t binaries_at_once = 0;  // 0: no limit
};

struct Job {
  JobId id = 0;
  std::string binary;                      // a key identifying the binary (its checksum)
  std::vector<uint32_t> eligible_devices;  // indices of devices whose platform fits
};

// What the caller must do: run `job` on (`device`, `compute_unit`), loading `binary` first when
// `program` is set, after unloading `evict` (binaries the device must drop to make room).
struct Start {
  JobId job = 0;
  uint32_t device = 0;
  uint32_t compute_unit = 0;
  bool program = false;
  std::vector<std::string> evict;
};

struct DeviceStats {
  uint32_t busy_compute_units = 0;
  uint64_t started = 0;
  uint64_t programmed = 0;
  std::vector<std::string> loaded;
};

class Scheduler {
 public:
  explicit Scheduler(std::vector<DeviceConfig> devices);

  // Starts the job now or queues it. A job with no eligible device is the caller's error to
  // report; the scheduler returns nullopt and does not queue it.
  // REQUIRES: job ids are unique among jobs not yet finished.
  std::optional<Start> Submit(Job job);

  // The job on (device, compute_unit) has ended: frees the unit and returns the queued jobs that
  // can start now (usually at most one).
  std::vector<Start> Finish(uint32_t device, uint32_t compute_unit);

  // The binary could not be loaded on the device: forgets that it is loaded there.
  void ForgetBinary(uint32_t device, const std::string& binary);

  // Removes queued jobs for which `pred` is true and returns their ids, in queue order.
  std::vector<JobId> RemoveQueued(const std::function<bool(JobId)>& pred);

  size_t queued() const { return queue_.size(); }
  size_t device_count() const { return devices_.size(); }
  DeviceStats Stats(uint32_t device) const;

 private:
  struct Device {
    DeviceConfig config;
    std::vector<bool> busy;
    uint32_t busy_count = 0;
    std::vector<std::string> loaded;  // most recently used last
    uint64_t started = 0;
    uint64_t programmed = 0;
  };
  bool Holds(const Device& d, const std::string& binary) const;
  // Can `job` start on `device` now? Fills `start` if so.
  bool TryPlace(const Job& job, uint32_t device, bool require_loaded, Start* start);
  void Commit(const Job& job, Start* start);

  std::vector<Device> devices_;
  std::deque<Job> queue_;
  uint64_t free_units_ = 0;
};

}  // namespace atl::scheduler
