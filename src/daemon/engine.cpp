#include "daemon/engine.h"

#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <nlohmann/json.hpp>

#include "repository/signature.h"

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
};

// What an accelerator id resolves to, cached until the repository changes.
struct Engine::Resolved {
  std::shared_ptr<const repository::Index> index;  // keeps entry and kernel alive
  repository::Index::Provider provider;
  std::vector<uint32_t> eligible_devices;
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
  Clock::time_point deadline = Clock::time_point::max();
  uint32_t device = 0;
  uint32_t compute_unit = 0;
  bool started = false;    // GUARDED_BY(engine->mu_)
  bool cancelled = false;  // GUARDED_BY(engine->mu_)
};

namespace {

std::vector<scheduler::DeviceConfig> NoDevices() { return {}; }

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
      configs.push_back({std::max<uint32_t>(1, info->compute_units), info->binaries_at_once});
      platforms_.push_back(
          {plugin->name(), info->platform_vendor, info->platform_name, info->platform_version});
      spdlog::info("device {}: {} {} ({} backend, platform {}/{}/{}, {} compute units)",
                   devices_.size(), info->vendor, info->name, plugin->name(), info->platform_vendor,
                   info->platform_name, info->platform_version, info->compute_units);
      devices_.push_back(std::move(device));
    }
  }
  scheduler_ = scheduler::Scheduler(std::move(configs));
  index_ = std::make_shared<const repository::Index>();
}

Engine::~Engine() {
  // Closing a backend completes its launched work through OnDone, which needs the engine's
  // members: close the plugins while they still exist.
  plugins_.clear();
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
  auto provider = index->Resolve(accelerator, platforms_);
  if (!provider.ok()) return provider.status();
  auto resolved = std::make_shared<Resolved>();
  resolved->index = index;
  resolved->provider = *provider;
  for (uint32_t d = 0; d < platforms_.size(); ++d) {
    if (repository::PlatformFits(provider->entry->manifest.platform, platforms_[d])) {
      resolved->eligible_devices.push_back(d);
    }
  }
  std::lock_guard lock(mu_);
  if (index_ == index) resolved_[accelerator] = resolved;
  return std::shared_ptr<const Resolved>(resolved);
}

void Engine::Reply(const std::shared_ptr<Session>& session, uint64_t request_id,
                   const Status& status) {
  // Completions are sent from backend threads; each reuses its own message.
  thread_local wire::ServerMessage message;
  message.Clear();
  wire::Complete* complete = message.mutable_complete();
  complete->set_request_id(request_id);
  complete->mutable_status()->set_code(static_cast<uint32_t>(status.code()));
  if (!status.ok()) complete->mutable_status()->set_message(status.message());
  session->Send(message);
}

void Engine::RegisterBuffer(const std::shared_ptr<MappedBuffer>& buffer) {
  std::vector<backend::Plugin*> pinned;
  for (const auto& plugin : plugins_) {
    if (!plugin->wants_memory_registration() || buffer->data() == nullptr) continue;
    Status s = plugin->RegisterMemory(buffer->data(), buffer->size_bytes());
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
  const uint64_t request_id = submit.request_id();
  const std::string& accelerator = submit.accelerator();
  auto reject = [&](const Status& status) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    Reply(session, request_id, status);
  };

  auto resolved_or = Resolve(accelerator);
  if (!resolved_or.ok()) return reject(resolved_or.status());
  std::shared_ptr<const Resolved> resolved = std::move(resolved_or).value();
  const repository::KernelSpec& kernel = *resolved->provider.kernel;

  // Arguments may arrive in any order; they must cover 0..n-1 exactly once.
  const int count = submit.arguments_size();
  std::vector<const wire::Argument*> ordered(static_cast<size_t>(count), nullptr);
  for (const auto& arg : submit.arguments()) {
    if (arg.index() >= static_cast<uint32_t>(count) || ordered[arg.index()] != nullptr) {
      return reject(InvalidArgumentError(accelerator + ": argument indices must be 0.." +
                                         std::to_string(count - 1) + " without gaps or repeats"));
    }
    ordered[arg.index()] = &arg;
  }

  auto job = std::make_shared<Job>();
  job->engine = this;
  job->request_id = request_id;
  job->session = session;
  job->resolved = resolved;
  job->args.resize(static_cast<size_t>(count));
  job->scalars.resize(static_cast<size_t>(count));
  std::vector<repository::ArgValue> values(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const wire::Argument& arg = *ordered[static_cast<size_t>(i)];
    atoll_backend_arg_v1& out = job->args[static_cast<size_t>(i)];
    repository::ArgValue& value = values[static_cast<size_t>(i)];
    if (arg.has_array()) {
      const wire::ArrayRef& ref = arg.array();
      auto it = session->buffers.find(ref.buffer_id());
      if (it == session->buffers.end()) {
        auto refused = session->refused_buffers.find(ref.buffer_id());
        std::string why = refused != session->refused_buffers.end()
                              ? "its buffer was refused: " + refused->second
                              : "buffer " + std::to_string(ref.buffer_id()) +
                                    " is unknown on this connection (freed, or never sent)";
        return reject(
            InvalidArgumentError(accelerator + ": argument " + std::to_string(i) + ": " + why));
      }
      const MappedBuffer& buffer = *it->second;
      if (ref.offset() > buffer.size_bytes() ||
          ref.size_bytes() > buffer.size_bytes() - ref.offset()) {
        return reject(InvalidArgumentError(
            accelerator + ": argument " + std::to_string(i) + ": range of " +
            std::to_string(ref.size_bytes()) + " bytes at offset " + std::to_string(ref.offset()) +
            " runs past the end of its " + std::to_string(buffer.size_bytes()) + "-byte buffer"));
      }
      value.is_array = true;
      value.size_bytes = ref.size_bytes();
      out.kind = ATOLL_BACKEND_ARG_ARRAY;
      out.data = buffer.data() == nullptr ? nullptr : buffer.data() + ref.offset();
      out.size_bytes = ref.size_bytes();
      job->buffers.push_back(it->second);
    } else {
      job->scalars[static_cast<size_t>(i)] = arg.scalar();
      value.is_array = false;
      value.size_bytes = arg.scalar().size();
      value.scalar_data = job->scalars[static_cast<size_t>(i)].data();
      out.kind = ATOLL_BACKEND_ARG_SCALAR;
      out.data = job->scalars[static_cast<size_t>(i)].data();
      out.size_bytes = arg.scalar().size();
    }
  }
  Status checked = repository::CheckSignature(accelerator, kernel, values);
  if (!checked.ok()) return reject(checked);
  if (!kernel.launch.global.empty()) {
    StatusOr<repository::LaunchGeometry> geometry =
        repository::EvaluateLaunch(accelerator, kernel, values);
    if (!geometry.ok()) return reject(geometry.status());
    job->geometry.dims = geometry->dims;
    for (uint32_t d = 0; d < geometry->dims; ++d) {
      job->geometry.global[d] = geometry->global[d];
      job->geometry.local[d] = geometry->local[d];
    }
  }
  for (int i = 0; i < count; ++i) {
    const auto& spec = kernel.arguments[static_cast<size_t>(i)];
    atoll_backend_arg_v1& out = job->args[static_cast<size_t>(i)];
    out.type = spec.type.c_str();
    out.access = static_cast<uint32_t>(spec.access);
    // Kernels read arrays as their element type, which needs natural alignment.
    uint64_t align = std::min<uint64_t>(spec.element_bytes, 16);
    if (out.kind == ATOLL_BACKEND_ARG_ARRAY && align > 1 && (align & (align - 1)) == 0 &&
        reinterpret_cast<uintptr_t>(out.data) % align != 0) {
      return reject(InvalidArgumentError(
          accelerator + ": argument " + std::to_string(i) + " '" + spec.name +
          "' starts at a byte offset that is not a multiple of " + std::to_string(align) +
          " (the alignment of " + spec.type + "); pass a range that starts on an element"));
    }
  }
  if (submit.timeout_us() != 0) {
    job->deadline = Clock::now() + std::chrono::microseconds(submit.timeout_us());
  }

  std::optional<scheduler::Start> start;
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
    if (!session->requests.emplace(request_id, 0).second) {
      return reject(InvalidArgumentError("request id " + std::to_string(request_id) +
                                         " is already in flight on this connection"));
    }
    job->id = next_job_++;
    session->requests[request_id] = job->id;
    jobs_.emplace(job->id, job);
    if (job->deadline != Clock::time_point::max()) ++deadline_jobs_queued_;
    start = scheduler_.Submit(
        scheduler::Job{job->id, resolved->provider.entry->checksum, resolved->eligible_devices});
  }
  if (start) Launch(*start);
}

void Engine::Launch(scheduler::Start start) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(mu_);
    auto it = jobs_.find(start.job);
    if (it == jobs_.end()) return;
    job = it->second;
    job->started = true;
    job->device = start.device;
    job->compute_unit = start.compute_unit;
    if (job->deadline != Clock::time_point::max()) --deadline_jobs_queued_;
  }
  if (job->deadline != Clock::time_point::max() && Clock::now() >= job->deadline) {
    return Finish(
        job,
        Status(Code::kDeadlineExceeded, job->resolved->provider.entry->manifest.bitstream_id + "." +
                                            job->resolved->provider.kernel->kernel_id +
                                            ": the deadline passed before the request could run"),
        false);
  }
  Device& device = *devices_[start.device];
  const repository::Entry& entry = *job->resolved->provider.entry;
  const repository::KernelSpec& spec = *job->resolved->provider.kernel;
  void* kernel = nullptr;
  Status failure;
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
      auto handle = device.plugin->Program(device.index, entry.binary_path.string(),
                                           entry.manifest.build_options);
      if (handle.ok()) {
        program = device.programs.emplace(entry.checksum, Device::Program{*handle, {}}).first;
        spdlog::info("device {}: loaded {} {} ({})", start.device, entry.manifest.bitstream_id,
                     entry.manifest.version, entry.binary_path.string());
      } else {
        failure = handle.status();
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
  // Finishing may launch the next job on this device, so it happens outside program_mutex.
  if (!failure.ok()) {
    {
      std::lock_guard lock(mu_);
      scheduler_.ForgetBinary(start.device, entry.checksum);
    }
    return Finish(job, failure, false);
  }
  // The job keeps itself alive until OnDone: the backend only holds a raw pointer.
  auto* holder = new std::shared_ptr<Job>(job);
  Status launched = device.plugin->Launch(device.index, start.compute_unit, kernel,
                                          job->args.data(), static_cast<uint32_t>(job->args.size()),
                                          job->geometry, &Engine::OnDone, holder);
  if (!launched.ok()) {
    delete holder;
    Finish(job, launched, false);
  }
}

void Engine::OnDone(void* user, int status, const char* message) {
  std::unique_ptr<std::shared_ptr<Job>> holder(static_cast<std::shared_ptr<Job>*>(user));
  std::shared_ptr<Job> job = *holder;
  Status result(CodeFromInt(status), status == 0 ? std::string() : std::string(message));
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
    if (job->started) next = scheduler_.Finish(job->device, job->compute_unit);
    if (job->deadline != Clock::time_point::max() && !job->started) --deadline_jobs_queued_;
    jobs_.erase(job->id);
    job->session->requests.erase(job->request_id);
    // Counted until the answer is sent: Shutdown's goodbye must not overtake it.
    replies_in_flight_.fetch_add(1, std::memory_order_relaxed);
    if (shutting_down_ && jobs_.empty()) idle_cv_.notify_all();
  }
  (status.ok() ? completed_ : failed_).fetch_add(1, std::memory_order_relaxed);
  Reply(job->session, job->request_id, status);
  if (replies_in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1 &&
      stopping_.load(std::memory_order_acquire)) {
    std::lock_guard lock(mu_);
    idle_cv_.notify_all();
  }
  for (const auto& start : next) Launch(start);
}

void Engine::Cancel(const std::shared_ptr<Session>& session, uint64_t request_id) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(mu_);
    auto it = session->requests.find(request_id);
    if (it == session->requests.end()) return;  // already completed: nothing to do
    auto j = jobs_.find(it->second);
    if (j == jobs_.end()) return;
    if (j->second->started) {
      j->second->cancelled = true;
      return;
    }
    uint64_t id = it->second;
    scheduler_.RemoveQueued([id](scheduler::JobId q) { return q == id; });
    job = j->second;
  }
  Finish(job, Status(Code::kCancelled, "cancelled before it ran"), false);
}

void Engine::Disconnect(const std::shared_ptr<Session>& session) {
  session->MarkClosed();
  std::vector<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard lock(mu_);
    std::unordered_map<uint64_t, bool> mine;
    for (const auto& [request, id] : session->requests) mine[id] = true;
    auto removed = scheduler_.RemoveQueued([&](scheduler::JobId id) { return mine.count(id); });
    for (auto id : removed) {
      auto it = jobs_.find(id);
      if (it == jobs_.end()) continue;
      dropped.push_back(it->second);
    }
  }
  for (const auto& job : dropped)
    Finish(job, Status(Code::kCancelled, "client disconnected"), false);
}

bool Engine::ExpireDeadlines() {
  std::vector<std::shared_ptr<Job>> expired;
  const auto now = Clock::now();
  {
    std::lock_guard lock(mu_);
    if (deadline_jobs_queued_ == 0) return false;
    auto removed = scheduler_.RemoveQueued([&](scheduler::JobId id) {
      auto it = jobs_.find(id);
      return it != jobs_.end() && it->second->deadline <= now;
    });
    for (auto id : removed) expired.push_back(jobs_.at(id));
  }
  for (const auto& job : expired) {
    Finish(job,
           Status(Code::kDeadlineExceeded,
                  "the deadline passed while the request waited for a compute unit; it did "
                  "not run"),
           false);
  }
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
                   {"busy_compute_units", stats.busy_compute_units},
                   {"requests_started", stats.started},
                   {"reprogrammed", stats.programmed},
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
  return out.dump();
}

}  // namespace atl::daemon
