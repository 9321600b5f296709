#include "daemon/engine.h"

#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <deque>
#include <nlohmann/json.hpp>
#include <system_error>
#include <thread>

#include "common/hop_trace.h"
#include "daemon/protocol.h"
#include "ipc/scratch_message.h"

namespace atl::daemon {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Engine::Device {
  backend::Plugin* plugin = nullptr;
  uint32_t index = 0;  // within its backend
  atoll_backend_device_info_v1 info{};
  struct Program {
    void* handle = nullptr;
    std::unordered_map<std::string, void*> kernels;
  };
  std::mutex program_mutex;  // serialises programming and kernel lookup on this device
  std::unordered_map<std::string, Program> programs;  // GUARDED_BY(program_mutex), by checksum
  // Starts that program this device (the backend's `program` can take seconds on an FPGA) run on
  // the device's launcher thread, and so do the starts the scheduler decides while one is pending,
  // which may need the binary being loaded: in the order of the scheduler's decisions.
  int pending_programs = 0;  // GUARDED_BY(engine mu_)
  std::mutex launch_mutex;
  std::condition_variable launch_cv;
  std::deque<scheduler::Start> launches;  // GUARDED_BY(launch_mutex)
  bool stopping = false;                  // GUARDED_BY(launch_mutex)
  std::thread launcher;                   // started on first use
};

// What an accelerator id resolves to, cached until the repository changes: every binary of the
// newest version that fits a device here, each with the devices it fits.
struct Engine::Resolved {
  std::shared_ptr<const repository::Index> index;  // keeps entries and kernels alive
  std::vector<repository::Index::Provider> providers;
  // Per provider: its kernel's checks, prepared once (they point into `index`).
  std::vector<repository::PreparedSignature> signatures;
  std::vector<scheduler::Alternative> alternatives;  // per provider: its checksum and devices
  // Per provider: the first provider whose kernel has the same signature (arguments and launch
  // block), whose checked arguments it shares.
  std::vector<size_t> signature;
};

// Per tenant of the scheduler.
struct Engine::TenantInfo {
  size_t sessions = 0;
  bool per_process = false;  // forgotten once its process has gone and its work has ended
  uint64_t key = 0;          // in automatic_tenants_, when not configured
  bool configured = false;
};

struct Engine::Job {
  Engine* engine = nullptr;
  uint64_t id = 0;
  uint64_t request_id = 0;
  std::shared_ptr<Session> session;
  std::shared_ptr<const Resolved> resolved;
  std::vector<std::shared_ptr<MappedBuffer>> buffers;  // held until the job ends
  std::vector<atoll_backend_arg_v1> args;
  std::vector<std::string> scalars;
  atoll_backend_geometry_v1 geometry{};
  // Arguments checked against kernels of other alternatives whose signature differs from the
  // first one's; `variant` maps a provider to them (-1: args above; -2: its check failed).
  std::vector<DecodedArguments> variants;
  std::vector<int> variant;
  Clock::time_point deadline = Clock::time_point::max();
  scheduler::TenantId tenant = 0;
  uint32_t device = 0;
  uint32_t compute_unit = 0;
  uint32_t alternative = 0;
  Clock::time_point launched_at;
  int64_t ran_ns = 0;      // set by OnDone
  bool started = false;    // GUARDED_BY(engine->mu_)
  bool cancelled = false;  // GUARDED_BY(engine->mu_)
};

namespace {

std::vector<scheduler::DeviceConfig> NoDevices() { return {}; }

bool SameSignature(const repository::KernelSpec& a, const repository::KernelSpec& b) {
  if (a.arguments.size() != b.arguments.size() || a.launch.global != b.launch.global ||
      a.launch.local != b.launch.local) {
    return false;
  }
  for (size_t i = 0; i < a.arguments.size(); ++i) {
    const auto& x = a.arguments[i];
    const auto& y = b.arguments[i];
    if (x.type != y.type || x.kind != y.kind || x.element_bytes != y.element_bytes ||
        x.access != y.access || x.single_pass != y.single_pass || x.length != y.length) {
      return false;
    }
  }
  return true;
}

std::string UserName(uint32_t uid) {
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return "";
}

std::string GroupName(uint32_t gid) {
  std::vector<char> buffer(65536);
  group entry{};
  group* found = nullptr;
  if (::getgrgid_r(gid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return found->gr_name;
  }
  return "";
}

// The primary group and the user's supplementary groups, as the system's group database has them.
std::vector<uint32_t> GroupsOf(uint32_t uid, uint32_t gid) {
  std::vector<uint32_t> groups{gid};
  std::string name = UserName(uid);
  if (name.empty()) return groups;
  int count = 64;
  std::vector<gid_t> found(static_cast<size_t>(count));
  if (::getgrouplist(name.c_str(), gid, found.data(), &count) < 0) {
    found.resize(static_cast<size_t>(count));
    if (::getgrouplist(name.c_str(), gid, found.data(), &count) < 0) return groups;
  }
  for (int i = 0; i < count; ++i) {
    uint32_t g = found[static_cast<size_t>(i)];
    if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
  }
  return groups;
}

std::string Principals(const std::vector<std::string>& users,
                       const std::vector<std::string>& groups) {
  std::string out;
  auto list = [](const std::vector<std::string>& names) {
    std::string text;
    for (const auto& n : names) text += (text.empty() ? "" : ", ") + n;
    return text;
  };
  if (!users.empty()) out += "users " + list(users);
  if (!groups.empty()) out += (out.empty() ? "" : "; ") + std::string("groups ") + list(groups);
  return out;
}

int64_t Nanoseconds(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

}  // namespace

Engine::Engine(std::vector<std::unique_ptr<backend::Plugin>> plugins,
               std::filesystem::path repository_root, EngineLimits limits)
    : plugins_(std::move(plugins)),
      repository_(std::move(repository_root)),
      limits_(limits),
      started_(Clock::now()),
      scheduler_(NoDevices()) {
  std::vector<scheduler::DeviceConfig> configs;
  for (const auto& plugin : plugins_) {
    uint32_t count = plugin->device_count();
    for (uint32_t i = 0; i < count; ++i) {
      auto info = plugin->DeviceInfo(i);
      if (!info.ok()) {
        spdlog::warn("skipping device: {}", info.status().message());
        continue;
      }
      auto device = std::make_unique<Device>();
      device->plugin = plugin.get();
      device->index = i;
      device->info = *info;
      scheduler::DeviceConfig config;
      config.compute_units = std::max<uint32_t>(1, info->compute_units);
      config.binaries_at_once = info->binaries_at_once;
      config.compute_units_by_binary = info->compute_units_by_binary != 0;
      config.name = "device " + std::to_string(devices_.size()) + " (" + plugin->name() + ":" +
                    std::to_string(i) + ")";
      configs.push_back(config);
      platforms_.push_back(
          {plugin->name(), info->platform_vendor, info->platform_name, info->platform_version});
      spdlog::info("device {}: {} {} ({} backend, platform {}/{}/{}, {} compute units)",
                   devices_.size(), info->vendor, info->name, plugin->name(), info->platform_vendor,
                   info->platform_name, info->platform_version, info->compute_units);
      devices_.push_back(std::move(device));
    }
  }
  device_configs_ = configs;
  scheduler_ = scheduler::Scheduler(std::move(configs));
  index_ = std::make_shared<const repository::Index>();
}

Engine::~Engine() {
  // The launchers use the plugins: they finish what they hold first.
  for (auto& device : devices_) {
    {
      std::lock_guard lock(device->launch_mutex);
      device->stopping = true;
    }
    device->launch_cv.notify_all();
    if (device->launcher.joinable()) device->launcher.join();
  }
  // Closing a backend completes its launched work through OnDone, which needs the engine's
  // members: close the plugins while they still exist.
  plugins_.clear();
}

Status Engine::Configure(const Config& config) {
  std::vector<scheduler::DeviceConfig> devices = device_configs_;
  auto users = [&](const std::string& field, const std::vector<std::string>& names,
                   std::vector<uint32_t>* out) -> Status {
    for (size_t i = 0; i < names.size(); ++i) {
      ATOLL_ASSIGN_OR_RETURN(uid_t uid,
                             LookupUser(field + ".users[" + std::to_string(i) + "]", names[i]));
      out->push_back(static_cast<uint32_t>(uid));
    }
    return OkStatus();
  };
  auto groups = [&](const std::string& field, const std::vector<std::string>& names,
                    std::vector<uint32_t>* out) -> Status {
    for (size_t i = 0; i < names.size(); ++i) {
      ATOLL_ASSIGN_OR_RETURN(gid_t gid,
                             LookupGroup(field + ".groups[" + std::to_string(i) + "]", names[i]));
      out->push_back(static_cast<uint32_t>(gid));
    }
    return OkStatus();
  };
  bool needs_groups = false;
  std::vector<std::string> exclusive_to(devices.size());
  for (size_t i = 0; i < config.devices.size(); ++i) {
    const DeviceSettings& settings = config.devices[i];
    std::string field = "devices[" + std::to_string(i) + "]";
    std::optional<uint32_t> found;
    const std::string& name = settings.device;
    size_t colon = name.find(':');
    for (uint32_t d = 0; d < devices_.size() && !found; ++d) {
      bool match = colon == std::string::npos
                       ? name == std::to_string(d)
                       : name.substr(0, colon) == devices_[d]->plugin->name() &&
                             name.substr(colon + 1) == std::to_string(devices_[d]->index);
      if (match) found = d;
    }
    if (!found) {
      std::string here;
      for (const auto& c : device_configs_) here += (here.empty() ? "" : ", ") + c.name;
      return InvalidArgumentError("configuration field '" + field + ".device': no device '" + name +
                                  "' here; the devices are " + (here.empty() ? "none" : here));
    }
    scheduler::DeviceConfig& device = devices[*found];
    device.exclusive = settings.exclusive;
    ATOLL_RETURN_IF_ERROR(users(field, settings.users, &device.users));
    ATOLL_RETURN_IF_ERROR(groups(field, settings.groups, &device.groups));
    device.owners = Principals(settings.users, settings.groups);
    if (device.exclusive) exclusive_to[*found] = device.owners;
    needs_groups = needs_groups || !device.groups.empty();
    if (device.exclusive) spdlog::info("{} is exclusive to {}", device.name, device.owners);
  }
  scheduler::Options options;
  options.policy =
      config.scheduler.policy == "fifo" ? scheduler::Policy::kFifo : scheduler::Policy::kFair;
  options.aging_starts = config.scheduler.aging_starts;
  scheduler::Scheduler fresh(std::move(devices), options);
  std::vector<ConfiguredTenant> tenants;
  std::unordered_map<scheduler::TenantId, TenantInfo> info;
  for (size_t i = 0; i < config.tenants.size(); ++i) {
    const TenantSettings& t = config.tenants[i];
    std::string field = "tenants[" + std::to_string(i) + "]";
    ConfiguredTenant tenant;
    ATOLL_RETURN_IF_ERROR(users(field, t.users, &tenant.users));
    ATOLL_RETURN_IF_ERROR(groups(field, t.groups, &tenant.groups));
    needs_groups = needs_groups || !tenant.groups.empty();
    tenant.id =
        fresh.AddTenant({t.name, t.weight, t.max_requests_in_flight, t.max_device_memory_bytes});
    info[tenant.id].configured = true;
    tenants.push_back(std::move(tenant));
  }
  std::lock_guard lock(mu_);
  if (!jobs_.empty()) return FailedPreconditionError("Configure must come before any request");
  scheduler_ = std::move(fresh);
  exclusive_to_ = std::move(exclusive_to);
  configured_tenants_ = std::move(tenants);
  tenant_info_ = std::move(info);
  automatic_tenants_.clear();
  tenant_by_ = config.scheduler.tenant_by;
  const TenantSettings& d = config.scheduler.defaults;
  default_tenant_ = {"", d.weight, d.max_requests_in_flight, d.max_device_memory_bytes};
  needs_groups_ = needs_groups;
  spdlog::info("scheduler: policy {}, {} configured tenants, others by {}", config.scheduler.policy,
               configured_tenants_.size(), tenant_by_);
  return OkStatus();
}

std::string Engine::AutomaticTenantName(const ipc::PeerCredentials& peer) const {
  if (tenant_by_ == "group") {
    std::string name = GroupName(peer.gid);
    return name.empty() ? "gid " + std::to_string(peer.gid) : name;
  }
  std::string name = UserName(peer.uid);
  if (name.empty()) name = "uid " + std::to_string(peer.uid);
  if (tenant_by_ == "process") name += " pid " + std::to_string(peer.pid);
  return name;
}

scheduler::TenantId Engine::TenantOf(Session& session, const std::string& automatic_name) {
  if (session.tenant != 0) return session.tenant;
  const ipc::PeerCredentials& peer = session.peer();
  auto covers = [&](const ConfiguredTenant& t) {
    if (std::find(t.users.begin(), t.users.end(), peer.uid) != t.users.end()) return true;
    for (uint32_t g : session.groups) {
      if (std::find(t.groups.begin(), t.groups.end(), g) != t.groups.end()) return true;
    }
    return false;
  };
  scheduler::TenantId id = 0;
  for (const auto& t : configured_tenants_) {
    if (covers(t)) {
      id = t.id;
      break;
    }
  }
  if (id == 0) {
    // Keys of the three kinds never collide: the kind is in the top bits.
    uint64_t key = tenant_by_ == "process" ? (uint64_t{3} << 32) | static_cast<uint32_t>(peer.pid)
                   : tenant_by_ == "group" ? (uint64_t{2} << 32) | peer.gid
                                           : (uint64_t{1} << 32) | peer.uid;
    auto it = automatic_tenants_.find(key);
    if (it != automatic_tenants_.end()) {
      id = it->second;
    } else {
      scheduler::TenantConfig config = default_tenant_;
      config.name = automatic_name;
      id = scheduler_.AddTenant(config);
      automatic_tenants_.emplace(key, id);
      TenantInfo& info = tenant_info_[id];
      info.key = key;
      info.per_process = tenant_by_ == "process";
    }
  }
  ++tenant_info_[id].sessions;
  session.tenant = id;
  return id;
}

void Engine::ReloadRepository() {
  std::vector<std::string> problems;
  auto entries = repository_.List(&problems);
  for (const auto& p : problems) spdlog::warn("repository: {}", p);
  if (!entries.ok()) {
    spdlog::error("cannot read the repository '{}': {}", repository_.root().string(),
                  entries.status().message());
    return;
  }
  auto index = std::make_shared<const repository::Index>(std::move(entries).value());
  std::lock_guard lock(mu_);
  generation_ = repository_.Generation();
  spdlog::info("repository '{}' generation {}: {} binaries", repository_.root().string(),
               generation_, index->entries().size());
  index_ = std::move(index);
  resolved_.clear();
}

StatusOr<std::shared_ptr<const Engine::Resolved>> Engine::Resolve(const std::string& accelerator) {
  std::shared_ptr<const repository::Index> index;
  {
    std::lock_guard lock(mu_);
    auto it = resolved_.find(accelerator);
    if (it != resolved_.end()) return it->second;
    index = index_;
  }
  if (devices_.empty()) {
    return FailedPreconditionError(
        "atolld has no devices: no backend plugin loaded or found a "
        "device (see the daemon's log and `atoll devices`)");
  }
  auto providers = index->ResolveAll(accelerator, platforms_);
  if (!providers.ok()) return providers.status();
  auto resolved = std::make_shared<Resolved>();
  resolved->index = index;
  resolved->providers = std::move(providers).value();
  for (size_t p = 0; p < resolved->providers.size(); ++p) {
    const repository::Index::Provider& provider = resolved->providers[p];
    scheduler::Alternative alternative;
    alternative.binary = provider.entry->checksum;
    alternative.compute_units = static_cast<uint32_t>(provider.kernel->names.size());
    for (uint32_t d = 0; d < platforms_.size(); ++d) {
      if (repository::PlatformFits(provider.entry->manifest.platform, platforms_[d])) {
        alternative.devices.push_back(d);
      }
    }
    resolved->alternatives.push_back(std::move(alternative));
    resolved->signatures.emplace_back(*provider.kernel);
    size_t same = p;
    for (size_t q = 0; q < p; ++q) {
      if (SameSignature(*resolved->providers[q].kernel, *provider.kernel)) {
        same = q;
        break;
      }
    }
    resolved->signature.push_back(same);
  }
  std::lock_guard lock(mu_);
  if (index_ == index) resolved_[accelerator] = resolved;
  return std::shared_ptr<const Resolved>(resolved);
}

void Engine::Reply(const std::shared_ptr<Session>& session, uint64_t request_id,
                   const Status& status) {
  // Completions are sent from backend threads; each builds its own message.
  thread_local ipc::ScratchMessage<wire::ServerMessage> scratch;
  wire::ServerMessage& message = scratch.Fresh();
  wire::Complete* complete = message.mutable_complete();
  complete->set_request_id(request_id);
  complete->mutable_status()->set_code(static_cast<uint32_t>(status.code()));
  if (!status.ok()) complete->mutable_status()->set_message(status.message());
  session->Send(message);
}

void Engine::RegisterBuffer(const std::shared_ptr<MappedBuffer>& buffer, int fd) {
  std::vector<backend::Plugin*> pinned;
  for (const auto& plugin : plugins_) {
    if (!plugin->wants_memory_registration() || buffer->data() == nullptr) continue;
    Status s = plugin->RegisterMemory(buffer->data(), buffer->size_bytes(), fd);
    if (!s.ok()) {
      spdlog::debug("{}", s.message());  // the backend falls back to unpinned copies
      continue;
    }
    pinned.push_back(plugin.get());
  }
  if (!pinned.empty()) {
    buffer->set_on_unmap([pinned](void* data) {
      for (auto* p : pinned) p->UnregisterMemory(data);
    });
  }
}

void Engine::Submit(const std::shared_ptr<Session>& session, const wire::Submit& submit) {
  ATOLL_HOP("d.submit");
  const uint64_t request_id = submit.request_id();
  const std::string& accelerator = submit.accelerator();
  auto reject = [&](const Status& status) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    Reply(session, request_id, status);
  };

  auto resolved_or = Resolve(accelerator);
  if (!resolved_or.ok()) return reject(resolved_or.status());
  std::shared_ptr<const Resolved> resolved = std::move(resolved_or).value();

  auto job = std::make_shared<Job>();
  job->engine = this;
  job->request_id = request_id;
  job->session = session;
  job->resolved = resolved;
  const BufferLookup lookup = [&](uint64_t buffer_id,
                                  std::string* why) -> std::shared_ptr<MappedBuffer> {
    auto it = session->buffers.find(buffer_id);
    if (it != session->buffers.end()) return it->second;
    auto refused = session->refused_buffers.find(buffer_id);
    *why = refused != session->refused_buffers.end()
               ? "its buffer was refused: " + refused->second
               : "buffer " + std::to_string(buffer_id) +
                     " is unknown on this connection (freed, or never sent)";
    return nullptr;
  };
  // The arguments are checked against the first provider's kernel, and again against each other
  // provider whose kernel's signature differs; a provider that refuses them is left out.
  DecodedArguments decoded;
  Status checked = DecodeArguments(accelerator, resolved->signatures[0], submit, lookup, &decoded);
  const size_t providers = resolved->providers.size();
  job->variant.assign(providers, checked.ok() ? -1 : -2);
  bool any = checked.ok();
  for (size_t p = 1; p < providers; ++p) {
    size_t same = resolved->signature[p];
    if (same != p) {
      job->variant[p] = job->variant[same];
      continue;
    }
    DecodedArguments other;
    if (DecodeArguments(accelerator, resolved->signatures[p], submit, lookup, &other).ok()) {
      job->variant[p] = static_cast<int>(job->variants.size());
      job->variants.push_back(std::move(other));
      any = true;
    }
  }
  if (!any) return reject(checked);
  uint64_t memory_bytes = 0;
  for (const auto& arg : checked.ok() ? decoded.args : job->variants.front().args) {
    if (arg.kind == ATOLL_BACKEND_ARG_ARRAY) memory_bytes += arg.size_bytes;
  }
  // Moving the vectors keeps the addresses of their elements, which args point into.
  job->buffers = std::move(decoded.buffers);
  job->args = std::move(decoded.args);
  job->scalars = std::move(decoded.scalars);
  job->geometry = decoded.geometry;
  // A timeout beyond a year is no deadline: adding it to the clock could overflow.
  constexpr uint64_t kMaxTimeoutUs = 365ull * 24 * 3600 * 1000000;
  if (submit.timeout_us() != 0 && submit.timeout_us() <= kMaxTimeoutUs) {
    job->deadline = Clock::now() + std::chrono::microseconds(submit.timeout_us());
  }
  if (submit.priority() < ATOLL_PRIORITY_MIN || submit.priority() > ATOLL_PRIORITY_MAX) {
    return reject(InvalidArgumentError(
        accelerator + ": priority " + std::to_string(submit.priority()) + " is out of range " +
        std::to_string(ATOLL_PRIORITY_MIN) + " to " + std::to_string(ATOLL_PRIORITY_MAX)));
  }
  scheduler::Job scheduled;
  scheduled.priority = submit.priority();
  scheduled.alternatives = resolved->alternatives;
  for (size_t p = 0; p < providers; ++p) {
    if (job->variant[p] == -2) scheduled.alternatives[p].devices.clear();
  }
  scheduled.memory_bytes = memory_bytes;
  scheduled.cost_key = accelerator;
  std::string tenant_name;
  if (session->tenant == 0) {
    // Looked up once per connection, before taking the lock: the user and group databases may
    // be slow (LDAP).
    if (needs_groups_) session->groups = GroupsOf(session->peer().uid, session->peer().gid);
    tenant_name = AutomaticTenantName(session->peer());
  }

  scheduler::Admission admission;
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) {
      return reject(UnavailableError("atolld is shutting down; the request did not run"));
    }
    if (session->requests.size() >= limits_.max_requests_per_connection) {
      return reject(ResourceExhaustedError(
          "this connection already has " + std::to_string(session->requests.size()) +
          " requests in flight (limit max_requests_per_connection); wait for some to complete"));
    }
    if (session->requests.count(request_id) != 0) {
      return reject(InvalidArgumentError("request id " + std::to_string(request_id) +
                                         " is already in flight on this connection"));
    }
    job->id = next_job_++;
    job->tenant = TenantOf(*session, tenant_name);
    scheduled.id = job->id;
    scheduled.tenant = job->tenant;
    scheduler::Identity who{session->peer().uid, session->groups};
    if (who.gids.empty()) who.gids.push_back(session->peer().gid);
    admission = scheduler_.Submit(std::move(scheduled), who);
    Reserve(&admission.starts);
    if (!admission.ok()) {
      Code code = admission.refusal == scheduler::Refusal::kExclusive ? Code::kPermissionDenied
                  : admission.refusal == scheduler::Refusal::kRequestQuota ||
                          admission.refusal == scheduler::Refusal::kMemoryQuota
                      ? Code::kResourceExhausted
                      : Code::kFailedPrecondition;
      return reject(Status(code, accelerator + ": " + admission.message));
    }
    session->requests.emplace(request_id, job->id);
    jobs_.emplace(job->id, job);
    if (job->deadline != Clock::time_point::max()) ++deadline_jobs_queued_;
  }
  LaunchAll(std::move(admission.starts));
}

void Engine::Reserve(std::vector<scheduler::Start>* starts) {
  size_t kept = 0;
  for (auto& start : *starts) {
    Device& device = *devices_[start.device];
    bool queued = false;
    if (start.program || device.pending_programs != 0) {
      std::lock_guard lock(device.launch_mutex);
      if (!device.launcher.joinable() && !device.stopping) {
        try {
          uint32_t index = start.device;
          device.launcher = std::thread([this, index] { RunLauncher(index); });
          std::string name = "atoll-load" + std::to_string(index);
          pthread_setname_np(device.launcher.native_handle(), name.substr(0, 15).c_str());
        } catch (const std::system_error& e) {
          // Launched on the calling thread instead, which programming then holds up.
          spdlog::warn("cannot start a launcher thread for device {}: {}", start.device, e.what());
        }
      }
      if (device.launcher.joinable() && !device.stopping) {
        if (start.program) ++device.pending_programs;
        device.launches.push_back(std::move(start));
        device.launch_cv.notify_one();
        queued = true;
      }
    }
    if (!queued) (*starts)[kept++] = std::move(start);
  }
  starts->resize(kept);
}

void Engine::RunLauncher(uint32_t index) {
  Device& device = *devices_[index];
  for (;;) {
    scheduler::Start start;
    {
      std::unique_lock lock(device.launch_mutex);
      device.launch_cv.wait(lock, [&] { return device.stopping || !device.launches.empty(); });
      if (device.launches.empty()) return;
      start = std::move(device.launches.front());
      device.launches.pop_front();
    }
    LaunchNow(start);
    if (start.program) {
      std::lock_guard lock(mu_);
      --device.pending_programs;
    }
  }
}

void Engine::LaunchAll(std::vector<scheduler::Start> starts) {
  for (const auto& start : starts) LaunchNow(start);
}

void Engine::LaunchNow(const scheduler::Start& start) {
  Device& device = *devices_[start.device];
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(start.job);
    if (it == jobs_.end()) return;
    job = it->second;
    job->started = true;
    job->device = start.device;
    job->compute_unit = start.compute_unit;
    job->alternative = start.alternative;
    if (job->deadline != Clock::time_point::max()) --deadline_jobs_queued_;
  }
  const repository::Index::Provider& provider = job->resolved->providers[start.alternative];
  if (job->deadline != Clock::time_point::max() && Clock::now() >= job->deadline) {
    return Finish(job,
                  Status(Code::kDeadlineExceeded,
                         provider.entry->manifest.bitstream_id + "." + provider.kernel->kernel_id +
                             ": the deadline passed before the request could run"),
                  false);
  }
  const repository::Entry& entry = *provider.entry;
  const repository::KernelSpec& spec = *provider.kernel;
  void* kernel = nullptr;
  Status failure;
  int64_t program_ns = -1;
  bool program_failed = false;
  {
    std::lock_guard lock(device.program_mutex);
    for (const auto& evicted : start.evict) {
      auto it = device.programs.find(evicted);
      if (it == device.programs.end()) continue;
      device.plugin->ReleaseProgram(it->second.handle);
      device.programs.erase(it);
    }
    auto program = device.programs.find(entry.checksum);
    if (program == device.programs.end()) {
      Clock::time_point begin = Clock::now();
      auto handle = device.plugin->Program(device.index, entry.binary_path.string(),
                                           entry.manifest.build_options);
      if (handle.ok()) {
        program_ns = Nanoseconds(Clock::now() - begin);
        program = device.programs.emplace(entry.checksum, Device::Program{*handle, {}}).first;
        spdlog::info("device {}: loaded {} {} ({})", start.device, entry.manifest.bitstream_id,
                     entry.manifest.version, entry.binary_path.string());
      } else {
        failure = handle.status();
        program_failed = true;
      }
    }
    if (failure.ok()) {
      const std::string& name = spec.names[start.compute_unit % spec.names.size()];
      auto k = program->second.kernels.find(name);
      if (k == program->second.kernels.end()) {
        std::vector<const char*> types;
        types.reserve(spec.arguments.size());
        for (const auto& arg : spec.arguments) types.push_back(arg.type.c_str());
        auto handle = device.plugin->Kernel(program->second.handle, name, types);
        if (handle.ok()) {
          k = program->second.kernels.emplace(name, *handle).first;
          kernel = k->second;
        } else {
          failure = handle.status();
        }
      } else {
        kernel = k->second;
      }
    }
  }
  if (program_ns >= 0 || program_failed) {
    std::lock_guard lock(mu_);
    if (program_ns >= 0) scheduler_.ProgramTime(start.device, program_ns);
    // A binary that loaded but lacks a kernel stays loaded, as the scheduler believes.
    if (program_failed) scheduler_.ForgetBinary(start.device, entry.checksum);
  }
  // Finishing may launch the next job on this device, so it happens outside program_mutex.
  if (!failure.ok()) return Finish(job, failure, false);
  int variant = job->variant[start.alternative];
  std::vector<atoll_backend_arg_v1>& args =
      variant < 0 ? job->args : job->variants[static_cast<size_t>(variant)].args;
  const atoll_backend_geometry_v1& geometry =
      variant < 0 ? job->geometry : job->variants[static_cast<size_t>(variant)].geometry;
  if (!device.plugin->accepts_single_pass()) {
    for (atoll_backend_arg_v1& arg : args)
      arg.access &= ~uint32_t{ATOLL_BACKEND_ACCESS_SINGLE_PASS};
  }
  // The job keeps itself alive until OnDone: the backend only holds a raw pointer.
  auto* holder = new std::shared_ptr<Job>(job);
  job->launched_at = Clock::now();
  ATOLL_HOP("d.launch");
  Status launched =
      device.plugin->Launch(device.index, start.compute_unit, kernel, args.data(),
                            static_cast<uint32_t>(args.size()), geometry, &Engine::OnDone, holder);
  ATOLL_HOP("d.launched");
  if (!launched.ok()) {
    delete holder;
    Finish(job, launched, false);
  }
}

void Engine::OnDone(void* user, int status, const char* message) {
  ATOLL_HOP("d.ondone");
  std::unique_ptr<std::shared_ptr<Job>> holder(static_cast<std::shared_ptr<Job>*>(user));
  std::shared_ptr<Job> job = *holder;
  Status result(CodeFromInt(status), status == 0 ? std::string() : std::string(message));
  job->ran_ns = Nanoseconds(Clock::now() - job->launched_at);
  job->engine->Finish(job, std::move(result), true);
}

void Engine::Finish(const std::shared_ptr<Job>& job, Status status, bool ran) {
  std::vector<scheduler::Start> next;
  {
    std::lock_guard lock(mu_);
    if (status.ok() && job->cancelled) {
      status = Status(Code::kCancelled,
                      "cancelled while running; the kernel ran to completion "
                      "and its outputs were written");
    } else if (ran && status.ok() && Clock::now() > job->deadline) {
      status = Status(Code::kDeadlineExceeded,
                      "the request ran past its deadline; its outputs were written late");
    }
    // The scheduler charges the tenant what the kernel took (nothing if it never ran).
    if (job->started) next = scheduler_.Finish(job->id, ran ? job->ran_ns : 0);
    Reserve(&next);
    auto info = tenant_info_.find(job->tenant);
    if (info != tenant_info_.end() && info->second.per_process && info->second.sessions == 0 &&
        scheduler_.RemoveTenant(job->tenant)) {
      automatic_tenants_.erase(info->second.key);
      tenant_info_.erase(info);
    }
    if (job->deadline != Clock::time_point::max() && !job->started) --deadline_jobs_queued_;
    jobs_.erase(job->id);
    job->session->requests.erase(job->request_id);
    // Counted until the answer is sent: Shutdown's goodbye must not overtake it.
    replies_in_flight_.fetch_add(1, std::memory_order_relaxed);
    if (shutting_down_ && jobs_.empty()) idle_cv_.notify_all();
  }
  (status.ok() ? completed_ : failed_).fetch_add(1, std::memory_order_relaxed);
  ATOLL_HOP("d.reply");
  Reply(job->session, job->request_id, status);
  ATOLL_HOP("d.replied");
  if (replies_in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
      stopping_.load(std::memory_order_acquire)) {
    std::lock_guard lock(mu_);
    idle_cv_.notify_all();
  }
  LaunchAll(std::move(next));
}

void Engine::Cancel(const std::shared_ptr<Session>& session, uint64_t request_id) {
  std::shared_ptr<Job> job;
  std::vector<scheduler::Start> next;
  {
    std::lock_guard lock(mu_);
    auto it = session->requests.find(request_id);
    if (it == session->requests.end()) return;  // already completed: nothing to do
    auto j = jobs_.find(it->second);
    if (j == jobs_.end()) return;
    // A job the scheduler has started may not have reached its launch yet (`started` is set
    // there): it counts as running.
    if (j->second->started || !scheduler_.RemoveQueued(j->second->id)) {
      j->second->cancelled = true;
      return;
    }
    job = j->second;
    // Removing a job may end a drain it caused, freeing compute units for others.
    next = scheduler_.Dispatch();
    Reserve(&next);
  }
  Finish(job, Status(Code::kCancelled, "cancelled before it ran"), false);
  LaunchAll(std::move(next));
}

void Engine::Disconnect(const std::shared_ptr<Session>& session) {
  session->MarkClosed();
  std::vector<std::shared_ptr<Job>> dropped;
  std::vector<scheduler::Start> next;
  {
    std::lock_guard lock(mu_);
    for (const auto& [request, id] : session->requests) {
      if (!scheduler_.RemoveQueued(id)) continue;  // running: it finishes, unanswered
      auto it = jobs_.find(id);
      if (it != jobs_.end()) dropped.push_back(it->second);
    }
    if (session->tenant != 0) {
      auto info = tenant_info_.find(session->tenant);
      if (info != tenant_info_.end() && --info->second.sessions == 0 && info->second.per_process &&
          scheduler_.RemoveTenant(session->tenant)) {
        automatic_tenants_.erase(info->second.key);
        tenant_info_.erase(info);
      }
    }
    if (!dropped.empty()) next = scheduler_.Dispatch();
    Reserve(&next);
  }
  for (const auto& job : dropped)
    Finish(job, Status(Code::kCancelled, "client disconnected"), false);
  LaunchAll(std::move(next));
}

bool Engine::ExpireDeadlines() {
  std::vector<std::shared_ptr<Job>> expired;
  std::vector<scheduler::Start> next;
  const auto now = Clock::now();
  {
    std::lock_guard lock(mu_);
    if (deadline_jobs_queued_ == 0) return false;
    auto removed = scheduler_.RemoveQueued([&](scheduler::JobId id) {
      auto it = jobs_.find(id);
      return it != jobs_.end() && it->second->deadline <= now;
    });
    for (auto id : removed) expired.push_back(jobs_.at(id));
    if (!expired.empty()) next = scheduler_.Dispatch();
    Reserve(&next);
  }
  for (const auto& job : expired) {
    Finish(job,
           Status(Code::kDeadlineExceeded,
                  "the deadline passed while the request waited for a compute unit; it did "
                  "not run"),
           false);
  }
  LaunchAll(std::move(next));
  std::lock_guard lock(mu_);
  return deadline_jobs_queued_ != 0;
}

size_t Engine::Shutdown(std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<Job>> queued;
  {
    std::lock_guard lock(mu_);
    shutting_down_ = true;
    stopping_.store(true, std::memory_order_release);
    auto removed = scheduler_.RemoveQueued([](scheduler::JobId) { return true; });
    for (auto id : removed) queued.push_back(jobs_.at(id));
  }
  for (const auto& job : queued) {
    Finish(job,
           UnavailableError("atolld is shutting down; the request did not run. Submit it "
                            "again once the daemon is back"),
           false);
  }
  std::unique_lock lock(mu_);
  idle_cv_.wait_for(lock, grace, [&] {
    return jobs_.empty() && replies_in_flight_.load(std::memory_order_acquire) == 0;
  });
  return jobs_.size();
}

std::string Engine::AcceleratorsJson() const {
  std::shared_ptr<const repository::Index> index;
  {
    std::lock_guard lock(mu_);
    index = index_;
  }
  json out = json::array();
  for (const auto& entry : index->entries()) {
    const auto& m = entry.manifest;
    bool runnable = std::any_of(platforms_.begin(), platforms_.end(), [&](const auto& p) {
      return repository::PlatformFits(m.platform, p);
    });
    for (const auto& kernel : m.kernels) {
      json k = repository::AcceleratorToJson(entry, kernel);
      k["runnable"] = runnable;
      // `atoll run` sizes outputs and parses scalars from these, whatever the type is called.
      for (size_t i = 0; i < kernel.arguments.size(); ++i) {
        const auto& a = kernel.arguments[i];
        k["arguments"][i]["kind"] = a.kind == repository::ArgKind::kArray ? "array" : "scalar";
        k["arguments"][i]["element_bytes"] = a.element_bytes;
      }
      out.push_back(std::move(k));
    }
  }
  return out.dump();
}

std::string Engine::DevicesJson() const {
  json out = json::array();
  std::lock_guard lock(mu_);
  for (uint32_t d = 0; d < devices_.size(); ++d) {
    const auto& info = devices_[d]->info;
    auto stats = scheduler_.Stats(d);
    json loaded = json::array();
    for (const auto& checksum : stats.loaded) {
      json b{{"checksum", checksum}};
      for (const auto& e : index_->entries()) {
        if (e.checksum == checksum) {
          b["bitstream"] = e.manifest.bitstream_id;
          b["version"] = e.manifest.version;
        }
      }
      loaded.push_back(std::move(b));
    }
    out.push_back({{"index", d},
                   {"backend", devices_[d]->plugin->name()},
                   {"vendor", info.vendor},
                   {"name", info.name},
                   {"platform",
                    {{"vendor", info.platform_vendor},
                     {"name", info.platform_name},
                     {"version", info.platform_version}}},
                   {"pci_id", info.pci_id},
                   {"serial", info.serial},
                   {"memory_bytes", info.global_memory_bytes},
                   {"temperature_c", info.temperature_c},
                   {"power_mw", info.power_mw},
                   {"compute_units", info.compute_units},
                   {"compute_units_by_binary", info.compute_units_by_binary != 0},
                   {"busy_compute_units", stats.busy_compute_units},
                   {"requests_started", stats.started},
                   {"reprogrammed", stats.programmed},
                   {"evicted", stats.evicted},
                   {"queued", stats.queued},
                   {"mode", stats.exclusive ? "exclusive" : "shared"},
                   {"exclusive_to", d < exclusive_to_.size() ? exclusive_to_[d] : ""},
                   {"loaded", std::move(loaded)}});
  }
  return out.dump();
}

std::string Engine::StatusJson(size_t sessions, size_t buffers, uint64_t buffer_bytes) const {
  std::lock_guard lock(mu_);
  size_t running = 0;
  for (const auto& [id, job] : jobs_) running += job->started ? 1 : 0;
  json out{{"version", ATOLL_VERSION},
           {"pid", ::getpid()},
           {"uptime_s",
            std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started_).count()},
           {"connections", sessions},
           {"buffers", {{"mapped", buffers}, {"bytes", buffer_bytes}}},
           {"requests",
            {{"completed", completed_.load()},
             {"failed", failed_.load()},
             {"rejected", rejected_.load()},
             {"running", running},
             {"queued", scheduler_.queued()}}},
           {"repository",
            {{"root", repository_.root().string()},
             {"generation", generation_},
             {"binaries", index_->entries().size()}}},
           {"devices", devices_.size()},
           {"backends", json::array()}};
  for (const auto& p : plugins_)
    out["backends"].push_back({{"name", p->name()}, {"path", p->path().string()}});
  // What the scheduler counts, per device and per tenant (the metrics to export).
  json scheduling{
      {"policy", scheduler_.options().policy == scheduler::Policy::kFifo ? "fifo" : "fair"},
      {"tenant_by", tenant_by_},
      {"devices", json::array()},
      {"tenants", json::array()}};
  for (uint32_t d = 0; d < devices_.size(); ++d) {
    scheduler::DeviceStats stats = scheduler_.Stats(d);
    json loaded = json::array();
    for (const auto& checksum : stats.loaded) loaded.push_back(BinaryName(checksum));
    scheduling["devices"].push_back(
        {{"index", d},
         {"device", devices_[d]->plugin->name() + ":" + std::to_string(devices_[d]->index)},
         {"mode", stats.exclusive ? "exclusive" : "shared"},
         {"loaded", std::move(loaded)},
         {"busy_compute_units", stats.busy_compute_units},
         {"compute_units", stats.compute_units},
         {"queued", stats.queued},
         {"started", stats.started},
         {"programmed", stats.programmed},
         {"reprogrammed", stats.evicted},
         {"busy_ms", static_cast<double>(stats.busy_ns) / 1e6},
         {"draining_for", stats.draining_for.empty() ? "" : BinaryName(stats.draining_for)}});
    if (auto process = devices_[d]->plugin->device_process(devices_[d]->index)) {
      scheduling["devices"].back()["process"] = {{"pid", process->pid},
                                                 {"starts", process->starts}};
    }
  }
  for (scheduler::TenantId id : scheduler_.tenants()) {
    scheduler::TenantStats t = scheduler_.Tenant(id);
    scheduling["tenants"].push_back({{"name", t.name},
                                     {"weight", t.weight},
                                     {"queued", t.queued},
                                     {"running", t.running},
                                     {"in_flight", t.queued + t.running},
                                     {"done", t.finished},
                                     {"refused", t.refused},
                                     {"device_ms", static_cast<double>(t.device_ns) / 1e6},
                                     {"memory_bytes", t.memory_bytes}});
  }
  out["scheduler"] = std::move(scheduling);
  return out.dump();
}

std::string Engine::BinaryName(const std::string& checksum) const {
  for (const auto& e : index_->entries()) {
    if (e.checksum == checksum) return e.manifest.bitstream_id + " " + e.manifest.version;
  }
  return checksum.substr(0, 12);  // removed from the repository since it was loaded
}

}  // namespace atl::daemon
