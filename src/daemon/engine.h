// The engine: turns checked requests into kernel launches on the devices of the loaded backends,
// and completes them. It owns the scheduler's state, the devices' loaded programs and the
// repository index.
//
// Threads: Submit, Cancel, Disconnect, ExpireDeadlines and Query come from the server's I/O thread;
// completions arrive on backend threads. One mutex guards scheduling state; programming a device
// and launching happen outside it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "atoll.pb.h"
#include "backend/plugin.h"
#include "common/adaptive_mutex.h"
#include "daemon/config.h"
#include "daemon/session.h"
#include "repository/repository.h"
#include "scheduler/scheduler.h"

namespace atl::daemon {

struct EngineLimits {
  uint32_t max_requests_per_connection = 65536;
};

class Engine {
 public:
  Engine(std::vector<std::unique_ptr<backend::Plugin>> plugins,
         std::filesystem::path repository_root, EngineLimits limits);
  ~Engine();

  // Applies the scheduling settings: policy, tenants, device modes. Call once, before the first
  // request. Errors name the configuration field (an unknown device, user or group).
  Status Configure(const Config& config);

  // Reads the repository again (at start and whenever it changes). Problems with single entries
  // are logged; the previous index stays in force if the repository cannot be read at all.
  void ReloadRepository();

  // Checks and schedules a request; any error completes it at once with a status that names
  // what was wrong.
  void Submit(const std::shared_ptr<Session>& session, const wire::Submit& submit);
  void Cancel(const std::shared_ptr<Session>& session, uint64_t request_id);
  // Drops the session's queued requests; running ones finish and their answers are discarded.
  void Disconnect(const std::shared_ptr<Session>& session);
  // Fails queued requests whose deadline has passed. Returns true while some queued request has
  // a deadline (the server then wakes up regularly).
  bool ExpireDeadlines();

  // JSON answers to the CLI's queries.
  std::string AcceleratorsJson() const;
  std::string DevicesJson() const;
  // `buffers` and `buffer_bytes`: client buffers mapped now, across connections.
  std::string StatusJson(size_t sessions, size_t buffers, uint64_t buffer_bytes) const;

  // Fails every queued request with UNAVAILABLE, then waits up to `grace` for running ones.
  // Returns how many were still running when it gave up.
  size_t Shutdown(std::chrono::milliseconds grace);

  size_t device_count() const { return devices_.size(); }
  // Lets a MappedBuffer be pinned by backends that want it, and mapped by device processes
  // (which get `fd`, the buffer's memfd).
  void RegisterBuffer(const std::shared_ptr<MappedBuffer>& buffer, int fd);

  struct Job;

 private:
  struct Device;
  struct Resolved;

  struct TenantInfo;

  StatusOr<std::shared_ptr<const Resolved>> Resolve(const std::string& accelerator);
  // The tenant of the session's requests, created on its first request with `automatic_name`
  // when no configured tenant covers it. REQUIRES: mu_ held.
  scheduler::TenantId TenantOf(Session& session, const std::string& automatic_name);
  // A tenant's name from the peer's credentials: its user, group, or user and pid.
  std::string AutomaticTenantName(const ipc::PeerCredentials& peer) const;
  // Hands the starts that must wait for a device's programming to that device's launcher
  // thread, in decision order, and leaves the others in `starts`. REQUIRES: mu_ held, in the
  // critical section of the scheduler call that returned them.
  void Reserve(std::vector<scheduler::Start>* starts);
  // Launches starts that Reserve left, on the calling thread.
  void LaunchAll(std::vector<scheduler::Start> starts);
  void RunLauncher(uint32_t device);
  void LaunchNow(const scheduler::Start& start);
  // Completes a job that never ran or has ended, frees its compute unit if it had one and launches
  // what the scheduler starts next.
  void Finish(const std::shared_ptr<Job>& job, Status status, bool ran);
  static void OnDone(void* user, int status, const char* message);
  static void Reply(const std::shared_ptr<Session>& session, uint64_t request_id,
                    const Status& status);
  // "vector 1.0" for a loaded binary's checksum. REQUIRES: mu_ held.
  std::string BinaryName(const std::string& checksum) const;

  std::vector<std::unique_ptr<backend::Plugin>> plugins_;
  std::vector<std::unique_ptr<Device>> devices_;
  std::vector<scheduler::DeviceConfig> device_configs_;  // as the backends describe them
  // Scheduling settings (Configure).
  struct ConfiguredTenant {
    scheduler::TenantId id = 0;
    std::vector<uint32_t> users, groups;
  };
  std::vector<ConfiguredTenant> configured_tenants_;
  std::string tenant_by_ = "user";
  scheduler::TenantConfig default_tenant_;
  bool needs_groups_ = false;              // some tenant or exclusive device names groups
  std::vector<std::string> exclusive_to_;  // per device: its owners, "" when shared
  std::vector<repository::DevicePlatform> platforms_;
  repository::Repository repository_;
  const EngineLimits limits_;
  const std::chrono::steady_clock::time_point started_;

  // Taken by the I/O thread for each request and by the backends' threads for each completion:
  // it polls before it sleeps (common/adaptive_mutex.h).
  mutable AdaptiveMutex mu_;
  std::condition_variable_any idle_cv_;
  scheduler::Scheduler scheduler_;                                             // GUARDED_BY(mu_)
  std::unordered_map<uint64_t, std::shared_ptr<Job>> jobs_;                    // GUARDED_BY(mu_)
  std::shared_ptr<const repository::Index> index_;                             // GUARDED_BY(mu_)
  std::unordered_map<std::string, std::shared_ptr<const Resolved>> resolved_;  // GUARDED_BY(mu_)
  uint64_t generation_ = 0;                                                    // GUARDED_BY(mu_)
  uint64_t next_job_ = 1;                                                      // GUARDED_BY(mu_)
  size_t deadline_jobs_queued_ = 0;                                            // GUARDED_BY(mu_)
  std::unordered_map<uint64_t, scheduler::TenantId> automatic_tenants_;        // GUARDED_BY(mu_)
  std::unordered_map<scheduler::TenantId, TenantInfo> tenant_info_;            // GUARDED_BY(mu_)
  bool shutting_down_ = false;                                                 // GUARDED_BY(mu_)
  std::atomic<uint64_t> completed_{0}, failed_{0}, rejected_{0};
  std::atomic<int> replies_in_flight_{0};  // completions decided but not yet sent
  std::atomic<bool> stopping_{false};      // shutting_down_, readable without mu_
};

}  // namespace atl::daemon
