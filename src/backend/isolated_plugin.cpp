#include "backend/isolated_plugin.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>

#include "backend_host.pb.h"
#include "common/hop_trace.h"
#include "ipc/ring.h"
#include "ipc/ring_channel.h"
#include "ipc/scratch_message.h"
#include "ipc/socket.h"

extern char** environ;

namespace atl::backend {

namespace {

using Clock = std::chrono::steady_clock;

// How long the daemon waits for a device process to open its device or load a binary.
constexpr auto kCallTimeout = std::chrono::seconds(300);
// Restarts after a failed start back off from 1 s to 30 s.
constexpr auto kFirstBackoff = std::chrono::seconds(1);
constexpr auto kLastBackoff = std::chrono::seconds(30);
// How long a reader polls for its device process's next event before it sleeps (ipc/socket.h).
constexpr uint32_t kSpinUs = 200;

std::string DescribeExit(int wait_status) {
  if (WIFEXITED(wait_status))
    return "exited with status " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    int signal = WTERMSIG(wait_status);
    const char* abbrev = ::sigabbrev_np(signal);
    return std::string("killed by SIG") + (abbrev ? abbrev : std::to_string(signal).c_str()) +
           " (" + ::strsignal(signal) + ")";
  }
  return "ended (wait status " + std::to_string(wait_status) + ")";
}

// One call as one packet (with `fd` beside it when >= 0); each thread reuses its buffer.
Status SendCall(ipc::RingChannel& channel, const host::HostCall& call, int fd = -1) {
  thread_local std::string bytes;
  bytes.clear();
  call.SerializeToString(&bytes);
  return channel.Send(bytes, fd);
}

Status FromReply(const host::Reply& reply, const std::string& context) {
  if (reply.code() == 0) return OkStatus();
  return Status(CodeFromInt(static_cast<int>(reply.code())), context + ": " + reply.message());
}

}  // namespace

// One device's process: starts it, restarts it after it ends, forwards calls to it and hands
// its events (replies, completed launches) back.
class DeviceProcess {
 public:
  // A binary loaded on the device, as the engine holds it (its handle is this object's address).
  struct RemoteProgram;
  struct RemoteKernel {
    RemoteProgram* program = nullptr;
    std::string name;
    std::vector<std::string> arg_types;
    uint64_t remote = 0;  // GUARDED_BY(mu_): the handle in the current process, 0 if none
    Status broken;        // GUARDED_BY(mu_): why it could not be found again after a restart
  };
  struct RemoteProgram {
    DeviceProcess* process = nullptr;
    std::string path, build_options;
    uint64_t remote = 0;                                 // GUARDED_BY(mu_)
    Status broken;                                       // GUARDED_BY(mu_)
    std::vector<std::unique_ptr<RemoteKernel>> kernels;  // GUARDED_BY(mu_)
  };

  DeviceProcess(IsolatedPlugin* owner, const Library& library, std::string config_json,
                std::filesystem::path host_program, uint32_t device)
      : owner_(owner),
        plugin_path_(library.path),
        config_json_(std::move(config_json)),
        host_program_(std::move(host_program)),
        device_(device),
        label_(owner->name_ + " device " + std::to_string(device)) {}

  ~DeviceProcess() { Stop(); }

  // Starts the process and waits until it has opened its device; `device_total` receives how
  // many devices the backend has. Then a supervisor thread serves it, restarting it when it ends.
  Status Start(uint32_t* device_total) {
    Status started = Spawn(device_total);
    if (!started.ok()) return started;
    {
      std::lock_guard lock(mu_);
      state_ = State::kReady;
    }
    supervisor_ = std::thread([this] { Supervise(); });
    return OkStatus();
  }

  // Closes the process's socket for writing: it finishes its launched work, reports it, and
  // exits; then the supervisor ends. A process that does not exit within 30 s is killed.
  void Stop() {
    {
      std::lock_guard lock(mu_);
      if (state_ == State::kStopped) return;
      stopping_ = true;
      if (socket_.valid()) ::shutdown(socket_.get(), SHUT_WR);
      cv_.notify_all();
    }
    if (supervisor_.joinable()) {
      // The supervisor reads until the process has gone; a hung one is killed.
      std::thread killer([this] {
        std::unique_lock lock(mu_);
        if (!cv_.wait_for(lock, std::chrono::seconds(30),
                          [this] { return state_ == State::kStopped; }) &&
            pid_ > 0) {
          ::kill(pid_, SIGKILL);
        }
      });
      supervisor_.join();
      killer.join();
    } else {
      std::lock_guard lock(mu_);
      state_ = State::kStopped;
      cv_.notify_all();
    }
  }

  const atoll_backend_device_info_v1& info() const { return info_; }
  Plugin::DeviceProcessInfo process() const {
    std::lock_guard lock(mu_);
    return {pid_, starts_};
  }

  StatusOr<void*> Program(const std::string& path, const std::string& build_options) {
    auto program = std::make_shared<RemoteProgram>();
    program->process = this;
    program->path = path;
    program->build_options = build_options;
    std::unique_lock lock(mu_);
    auto reply = CallLocked(lock, [&](host::HostCall* call) {
      call->mutable_program()->set_path(path);
      call->mutable_program()->set_build_options(build_options);
      return OkStatus();
    });
    if (!reply.ok()) return reply.status();
    Status loaded = FromReply(*reply, "programming " + label_ + " failed");
    if (!loaded.ok()) return loaded;
    program->remote = reply->handle();
    programs_[program.get()] = program;
    return static_cast<void*>(program.get());
  }

  void ReleaseProgram(RemoteProgram* program) {
    std::lock_guard lock(mu_);
    auto it = programs_.find(program);
    if (it == programs_.end()) return;
    if (state_ == State::kReady && program->remote != 0) {
      host::HostCall call;
      call.mutable_release_program()->set_program(program->remote);
      (void)SendLocked(call);  // a process that is gone has released it
    }
    programs_.erase(it);
  }

  StatusOr<void*> Kernel(RemoteProgram* program, const std::string& name,
                         const std::vector<const char*>& arg_types) {
    auto kernel = std::make_unique<RemoteKernel>();
    kernel->program = program;
    kernel->name = name;
    for (const char* type : arg_types) kernel->arg_types.emplace_back(type);
    std::unique_lock lock(mu_);
    // Filled once the process is ready: a restart reloads the program under a new handle.
    auto reply = CallLocked(lock, [&](host::HostCall* call) {
      if (!program->broken.ok()) return program->broken;
      call->mutable_kernel()->set_program(program->remote);
      call->mutable_kernel()->set_name(name);
      for (const auto& type : kernel->arg_types) call->mutable_kernel()->add_arg_types(type);
      return OkStatus();
    });
    if (!reply.ok()) return reply.status();
    Status found = FromReply(*reply, "kernel '" + name + "'");
    if (!found.ok()) return found;
    kernel->remote = reply->handle();
    RemoteKernel* handle = kernel.get();
    program->kernels.push_back(std::move(kernel));
    return static_cast<void*>(handle);
  }

  Status Launch(RemoteKernel* kernel, host::HostCall* call, atoll_backend_done_fn done,
                void* user) {
    std::lock_guard lock(mu_);
    if (state_ == State::kDown || state_ == State::kStopped) {
      return UnavailableError(label_ + " is out of service: " + down_reason_);
    }
    if (!kernel->broken.ok()) return kernel->broken;
    const uint64_t tag = next_tag_++;
    call->mutable_launch()->set_tag(tag);
    Launched& launched = launches_[tag];
    launched.done = done;
    launched.user = user;
    launched.kernel = kernel;
    if (state_ == State::kStarting || checks_pending_ > 0) {
      // Sent once the restarted process has its binaries back, or once the process has found
      // its device working after a failure.
      launched.queued = std::move(*call);
      return OkStatus();
    }
    launched.sent_at = Clock::now();
    call->mutable_launch()->set_kernel(kernel->remote);
    ATOLL_HOP("i.send");
    if (!SendLocked(*call).ok()) {
      // The process has just ended and the supervisor has yet to see it: the launch waits for
      // the restarted process, as launches during a restart do.
      launched.queued = std::move(*call);
    }
    return OkStatus();
  }

  // Sends a buffer registration if the process is running; a starting process gets every
  // buffer when it is ready. REQUIRES: owner's buffers_mu_ held (so the two cannot miss).
  void SendBuffer(uint64_t id, uint64_t size_bytes, int fd) {
    std::lock_guard lock(mu_);
    if (state_ != State::kReady) return;
    host::HostCall call;
    call.mutable_register_buffer()->set_buffer(id);
    call.mutable_register_buffer()->set_size_bytes(size_bytes);
    (void)SendLocked(call, fd);  // a process that is gone gets every buffer when restarted
  }

  void DropBuffer(uint64_t id) {
    std::lock_guard lock(mu_);
    if (state_ != State::kReady) return;
    host::HostCall call;
    call.mutable_unregister_buffer()->set_buffer(id);
    (void)SendLocked(call);  // a process that is gone has unmapped it
  }

  // Kills the process if a launch has run longer than `limit`; its launch then fails with
  // DEADLINE_EXCEEDED.
  void Expire(Clock::duration limit, uint32_t limit_ms) {
    std::lock_guard lock(mu_);
    if (state_ != State::kReady || pid_ <= 0) return;
    const auto now = Clock::now();
    bool kill = false;
    for (auto& [tag, launched] : launches_) {
      if (launched.queued.has_value() || launched.expired || now - launched.sent_at <= limit)
        continue;
      launched.expired = true;
      kill = true;
      std::fprintf(stderr,
                   "atolld: kernel '%s' has run longer than launch_timeout_ms (%u ms) on %s: "
                   "stopping its process\n",
                   launched.kernel->name.c_str(), limit_ms, label_.c_str());
    }
    if (kill) ::kill(pid_, SIGKILL);
  }

 private:
  enum class State { kStarting, kReady, kDown, kStopped };

  struct Launched {
    atoll_backend_done_fn done = nullptr;
    void* user = nullptr;
    RemoteKernel* kernel = nullptr;
    Clock::time_point sent_at;
    std::optional<host::HostCall> queued;  // not sent yet: waits for a restart
    bool expired = false;                  // ran past launch_timeout_ms
  };

  // Sends `call`. REQUIRES: mu_ held (orders sends with state changes).
  Status SendLocked(const host::HostCall& call, int fd = -1) {
    if (channel_ == nullptr) return UnavailableError(label_ + "'s process has ended");
    return SendCall(*channel_, call, fd);
  }

  // A call answered by a Reply, once the process is ready (waiting for a restart in progress).
  // `prepare` fills the call then, since handles change with each process. A process that ends
  // before answering gets the call again once restarted: loading a binary and looking up a
  // kernel are safe to repeat.
  StatusOr<host::Reply> CallLocked(std::unique_lock<std::mutex>& lock,
                                   const std::function<Status(host::HostCall*)>& prepare) {
    const auto deadline = Clock::now() + kCallTimeout;
    for (int attempt = 1;; ++attempt) {
      if (!cv_.wait_until(lock, deadline, [this] { return state_ != State::kStarting; })) {
        return UnavailableError(label_ + ": its process did not restart within " +
                                std::to_string(kCallTimeout.count()) + " s");
      }
      if (state_ != State::kReady) {
        return UnavailableError(label_ + " is out of service: " + down_reason_);
      }
      host::HostCall call;
      ATOLL_RETURN_IF_ERROR(prepare(&call));
      const uint64_t id = next_call_++;
      call.set_call(id);
      const uint64_t generation = starts_;
      bool ended = !SendLocked(call).ok();
      if (!ended) {
        Waiting& waiting = calls_[id];
        cv_.wait_until(lock, deadline, [&] {
          return waiting.answered || starts_ != generation || state_ != State::kReady;
        });
        // An answer from a process that has since ended names handles that no longer exist.
        const bool answered = waiting.answered && starts_ == generation;
        host::Reply reply = std::move(waiting.reply);
        calls_.erase(id);
        if (answered) return reply;
        ended = starts_ != generation || state_ != State::kReady;
      }
      if (!ended) {
        return UnavailableError(label_ + ": its process did not answer within " +
                                std::to_string(kCallTimeout.count()) + " s");
      }
      if (attempt == 2) {
        return UnavailableError(label_ +
                                ": its process ended twice while this call ran (see "
                                "the daemon's log for why)");
      }
      // Sent to a process that then ended: wait for the next one (the supervisor may not have
      // seen the end yet) and try once more.
      cv_.wait_until(lock, deadline,
                     [&] { return starts_ != generation || state_ != State::kReady; });
    }
  }

  // Starts a process, opens the device in it and restores what the engine holds: the loaded
  // binaries and their kernels, and every client buffer. Leaves state_ at kStarting.
  Status Spawn(uint32_t* device_total) {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      return ErrnoError("creating the socket for " + label_ + "'s process", errno);
    }
    UniqueFd mine(pair[0]), theirs(pair[1]);
    if (theirs.get() == 3) {  // dup2 onto itself would keep close-on-exec
      int moved = ::fcntl(theirs.get(), F_DUPFD_CLOEXEC, 4);
      theirs.reset(moved);
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    // The daemon blocks its shutdown signals and ignores SIGPIPE; the process starts clean.
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &all);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::string program = host_program_.string();
    std::string backend = owner_->name_, device = std::to_string(device_);
    char* argv[] = {program.data(), const_cast<char*>("--backend"),
                    backend.data(), const_cast<char*>("--device"),
                    device.data(),  nullptr};
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, program.c_str(), &actions, &attributes, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (rc != 0) {
      return Status(Code::kFailedPrecondition,
                    "cannot start '" + program + "' for " + label_ + ": " + std::strerror(rc) +
                        " (set ATOLL_BACKEND_HOST to where atoll-backend-host is installed)");
    }
    theirs.reset();
    // Shared rings for the calls and events once the process has opened its device; without
    // them (no memory for them, say) the socket carries everything.
    auto rings = ipc::SharedRings::Create();
    if (!rings.ok()) {
      std::fprintf(stderr, "atolld: %s talks over its socket alone: %s\n", label_.c_str(),
                   rings.status().message().c_str());
    }
    {
      std::lock_guard lock(mu_);
      rings_ = rings.ok() ? std::move(rings).value() : nullptr;
      channel_ = std::make_unique<ipc::RingChannel>(mine.get(), nullptr, ipc::RingOrder::kMarked,
                                                    nullptr, ipc::RingOrder::kUnordered);
      socket_ = std::move(mine);
      pid_ = pid;
      state_ = State::kStarting;
      ++starts_;
    }
    Status restored = Restore(device_total);
    if (!restored.ok()) {
      ::kill(pid, SIGKILL);
      Reap();
    }
    return restored;
  }

  // One call and its reply, before the supervisor reads (only the starting thread talks then).
  StatusOr<host::Reply> Exchange(host::HostCall call, int fd = -1) {
    call.set_call(next_call_++);
    Status sent = SendCall(*channel_, call, fd);
    if (!sent.ok()) return UnavailableError(label_ + "'s process is gone: " + sent.message());
    std::string buffer;
    for (;;) {
      size_t size = 0;
      UniqueFd ignored;
      auto got = channel_->Receive(&buffer, &size, &ignored, kSpinUs);
      if (!got.ok()) return got.status();
      if (*got != ipc::RecvResult::kPacket) {
        return UnavailableError(label_ +
                                "'s process ended while starting (see its messages "
                                "above in the daemon's log)");
      }
      host::HostEvent event;
      if (!event.ParseFromArray(buffer.data(), static_cast<int>(size))) {
        return InternalError(label_ + "'s process sent an unreadable message");
      }
      if (event.has_lost()) return UnavailableError(label_ + ": " + event.lost().message());
      if (event.has_reply() && event.reply().call() == call.call()) return event.reply();
    }
  }

  Status Restore(uint32_t* device_total) {
    host::HostCall open;
    open.mutable_open()->set_plugin_path(plugin_path_.string());
    open.mutable_open()->set_config_json(config_json_);
    open.mutable_open()->set_device(device_);
    if (rings_ != nullptr) open.mutable_open()->set_ring_capacity(rings_->capacity());
    auto opened = Exchange(open, rings_ != nullptr ? rings_->fd() : -1);
    if (rings_ != nullptr) rings_->CloseFd();  // the process has it; the mappings keep the memory
    if (!opened.ok()) return opened.status();
    if (rings_ != nullptr && opened->code() == 0) {
      std::lock_guard lock(mu_);
      channel_ = std::make_unique<ipc::RingChannel>(socket_.get(), &rings_->from_creator(),
                                                    ipc::RingOrder::kMarked, &rings_->to_creator(),
                                                    ipc::RingOrder::kUnordered);
    }
    if (device_total != nullptr) *device_total = opened->device_total();
    if (opened->code() != 0) return FromReply(*opened, "opening " + label_ + " in its process");
    if (opened->device_info().size() != sizeof(atoll_backend_device_info_v1)) {
      return InternalError(label_ + "'s process describes its device in " +
                           std::to_string(opened->device_info().size()) + " bytes, not " +
                           std::to_string(sizeof(atoll_backend_device_info_v1)) +
                           ": atoll-backend-host and atolld come from different builds");
    }
    // Read once: DeviceInfo hands it out without a lock (the device is the same after restarts).
    if (device_total != nullptr) std::memcpy(&info_, opened->device_info().data(), sizeof(info_));
    // The binaries the engine holds, loaded again (with their kernels) in the new process.
    std::vector<std::shared_ptr<RemoteProgram>> programs;
    {
      std::lock_guard lock(mu_);
      for (const auto& [raw, program] : programs_) programs.push_back(program);
    }
    for (const auto& program : programs) {
      host::HostCall call;
      call.mutable_program()->set_path(program->path);
      call.mutable_program()->set_build_options(program->build_options);
      auto reply = Exchange(call);
      if (!reply.ok()) return reply.status();
      Status loaded = FromReply(*reply, "reloading '" + program->path + "' on " + label_ +
                                            " after its process restarted");
      std::vector<RemoteKernel*> kernels;
      {
        std::lock_guard lock(mu_);
        program->remote = loaded.ok() ? reply->handle() : 0;
        program->broken = loaded;
        for (const auto& kernel : program->kernels) kernels.push_back(kernel.get());
      }
      for (RemoteKernel* kernel : kernels) {
        Status found = loaded;
        uint64_t handle = 0;
        if (loaded.ok()) {
          host::HostCall lookup;
          lookup.mutable_kernel()->set_program(reply->handle());
          lookup.mutable_kernel()->set_name(kernel->name);
          for (const auto& type : kernel->arg_types) lookup.mutable_kernel()->add_arg_types(type);
          auto kernel_reply = Exchange(lookup);
          if (!kernel_reply.ok()) return kernel_reply.status();
          found = FromReply(*kernel_reply, "kernel '" + kernel->name + "' after " + label_ +
                                               "'s process restarted");
          handle = kernel_reply->handle();
        }
        std::lock_guard lock(mu_);
        kernel->remote = handle;
        kernel->broken = found;
      }
    }
    // Every client buffer, then ready: a buffer registered meanwhile waits on buffers_mu_ and
    // is sent by SendBuffer once the state says ready.
    std::lock_guard buffers(owner_->buffers_mu_);
    for (const auto& [address, buffer] : owner_->buffers_) {
      host::HostCall call;
      call.mutable_register_buffer()->set_buffer(buffer.id);
      call.mutable_register_buffer()->set_size_bytes(buffer.size_bytes);
      std::lock_guard lock(mu_);
      Status sent = SendLocked(call, buffer.fd.get());
      if (!sent.ok()) return UnavailableError(label_ + "'s process is gone: " + sent.message());
    }
    std::lock_guard lock(mu_);
    state_ = State::kReady;
    checks_pending_ = 0;
    SendQueuedLocked();  // launches that arrived during the restart
    cv_.notify_all();
    return OkStatus();
  }

  // Sends the launches that waited. REQUIRES: mu_ held, the process ready.
  void SendQueuedLocked() {
    for (auto& [tag, launched] : launches_) {
      if (!launched.queued.has_value()) continue;
      host::HostCall call = std::move(*launched.queued);
      launched.queued.reset();
      launched.sent_at = Clock::now();
      call.mutable_launch()->set_kernel(launched.kernel->remote);
      (void)SendLocked(call);  // a failure shows as the process ending, which fails the launch
    }
  }

  // Waits for the process to end; returns how it ended.
  std::string Reap() {
    pid_t pid;
    {
      std::lock_guard lock(mu_);
      pid = pid_;
    }
    int status = 0;
    std::string how = "ended";
    if (pid > 0) {
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      how = DescribeExit(status);
    }
    std::lock_guard lock(mu_);
    pid_ = -1;
    return how;
  }

  // Reads the process's events until it ends, restarts it, and again, until Stop.
  void Supervise() {
    auto backoff = kFirstBackoff;
    for (;;) {
      std::string lost = ReadEvents();
      std::string how = Reap();
      std::vector<std::pair<Launched, Status>> failed;
      bool stopping;
      {
        std::lock_guard lock(mu_);
        stopping = stopping_;
        const std::string why = label_ + "'s process " + how + (lost.empty() ? "" : ": " + lost);
        for (auto& [tag, launched] : launches_) {
          // Not sent: goes to the next process, unless there is none.
          if (launched.queued.has_value() && !stopping) continue;
          Status status =
              launched.expired
                  ? Status(Code::kDeadlineExceeded,
                           "kernel '" + launched.kernel->name + "' ran longer than " +
                               "launch_timeout_ms (" + std::to_string(owner_->launch_timeout_ms_) +
                               " ms) on " + label_ + ": its process was stopped" +
                               (stopping ? "" : " and restarted"))
                  : Status(Code::kAborted, why + " while this request ran" +
                                               (stopping ? "" : "; the process was restarted"));
          failed.emplace_back(launched, std::move(status));
        }
        std::erase_if(launches_,
                      [stopping](const auto& entry) { return stopping || !entry.second.queued; });
        channel_.reset();
        rings_.reset();
        socket_.reset();
        if (!stopping) {
          std::fprintf(stderr, "atolld: %s; restarting it\n", why.c_str());
          state_ = State::kStarting;
        }
        cv_.notify_all();  // waiting calls give up
      }
      for (auto& [launched, status] : failed) {
        launched.done(launched.user, static_cast<int>(status.code()), status.message().c_str());
      }
      if (stopping) break;
      for (;;) {
        Status started = Spawn(nullptr);
        if (started.ok()) {
          backoff = kFirstBackoff;
          break;
        }
        std::vector<Launched> dropped;
        {
          std::unique_lock lock(mu_);
          state_ = State::kDown;
          down_reason_ = started.message();
          for (auto& [tag, launched] : launches_) dropped.push_back(launched);
          launches_.clear();
          cv_.notify_all();
          std::fprintf(stderr, "atolld: %s; trying again in %lld s\n", started.message().c_str(),
                       static_cast<long long>(backoff.count()));
          if (cv_.wait_for(lock, backoff, [this] { return stopping_; })) {
            state_ = State::kStopped;
            cv_.notify_all();
            lock.unlock();
            for (auto& launched : dropped) Fail(launched, started);
            return;
          }
          state_ = State::kStarting;
        }
        for (auto& launched : dropped) Fail(launched, started);
        backoff = std::min<std::chrono::seconds>(backoff * 2, kLastBackoff);
      }
    }
    std::lock_guard lock(mu_);
    state_ = State::kStopped;
    cv_.notify_all();
  }

  void Fail(const Launched& launched, const Status& why) {
    std::string message = label_ + " is out of service: " + why.message();
    launched.done(launched.user, static_cast<int>(Code::kUnavailable), message.c_str());
  }

  // Dispatches the process's replies and completions until it closes its end. Returns what a
  // Lost event said, or "".
  std::string ReadEvents() {
    ipc::RingChannel* channel;
    {
      std::lock_guard lock(mu_);
      channel = channel_.get();  // replaced only by this thread, after this returns
    }
    std::string buffer, lost;
    ipc::ScratchMessage<host::HostEvent> scratch;
    for (;;) {
      size_t size = 0;
      UniqueFd ignored;
      auto got = channel->Receive(&buffer, &size, &ignored, kSpinUs);
      if (!got.ok() || *got != ipc::RecvResult::kPacket) return lost;
      ATOLL_HOP("i.event");
      host::HostEvent& event = scratch.Fresh();
      if (!event.ParseFromArray(buffer.data(), static_cast<int>(size))) {
        std::fprintf(stderr, "atolld: %s's process sent an unreadable message; stopping it\n",
                     label_.c_str());
        std::lock_guard lock(mu_);
        if (pid_ > 0) ::kill(pid_, SIGKILL);
        continue;
      }
      if (event.has_done()) {
        Launched launched;
        {
          std::lock_guard lock(mu_);
          // Before the failure reaches its client, who may submit again at once.
          if (event.done().checking_device()) ++checks_pending_;
          auto it = launches_.find(event.done().tag());
          if (it == launches_.end() || it->second.queued.has_value()) continue;
          launched = std::move(it->second);
          launches_.erase(it);
        }
        ATOLL_HOP("i.done");
        launched.done(launched.user, static_cast<int>(event.done().code()),
                      event.done().message().c_str());
      } else if (event.has_reply()) {
        std::lock_guard lock(mu_);
        auto it = calls_.find(event.reply().call());
        if (it == calls_.end()) continue;
        it->second.reply = std::move(*event.mutable_reply());
        it->second.answered = true;
        cv_.notify_all();
      } else if (event.has_device_checked()) {
        std::lock_guard lock(mu_);
        if (checks_pending_ > 0 && --checks_pending_ == 0 && state_ == State::kReady) {
          SendQueuedLocked();
        }
      } else if (event.has_lost()) {
        lost = event.lost().message();
      }
    }
  }

  struct Waiting {
    bool answered = false;
    host::Reply reply;
  };

  IsolatedPlugin* const owner_;
  const std::filesystem::path plugin_path_;
  const std::string config_json_;
  const std::filesystem::path host_program_;
  const uint32_t device_;
  const std::string label_;              // "cuda device 0"
  atoll_backend_device_info_v1 info_{};  // from the first start

  mutable std::mutex mu_;
  std::condition_variable cv_;
  State state_ = State::kStarting;
  bool stopping_ = false;
  std::string down_reason_;
  UniqueFd socket_;
  // The rings beside socket_ (null when they could not be made) and the channel over both.
  // Replaced, like socket_, only by the supervisor thread, under mu_.
  std::unique_ptr<ipc::SharedRings> rings_;
  std::unique_ptr<ipc::RingChannel> channel_;
  pid_t pid_ = -1;
  uint64_t starts_ = 0;
  // Failed launches whose process is checking its device: new launches wait meanwhile.
  uint32_t checks_pending_ = 0;
  uint64_t next_call_ = 1;
  uint64_t next_tag_ = 1;
  std::map<uint64_t, Waiting> calls_;
  std::map<uint64_t, Launched> launches_;
  std::map<RemoteProgram*, std::shared_ptr<RemoteProgram>> programs_;
  std::thread supervisor_;
};

StatusOr<std::unique_ptr<IsolatedPlugin>> IsolatedPlugin::Start(
    const Library& library, const std::string& config_json,
    const std::filesystem::path& host_program, uint32_t launch_timeout_ms) {
  std::unique_ptr<IsolatedPlugin> plugin(new IsolatedPlugin());
  plugin->path_ = library.path;
  plugin->name_ = library.table->name;
  plugin->launch_timeout_ms_ = launch_timeout_ms;
  plugin->accepts_single_pass_ = library.accepts_single_pass();
  if (library.open_device() == nullptr) {
    return FailedPreconditionError(
        "backend '" + plugin->name_ +
        "' cannot run a process per device: its plugin has no open_device; set \"isolate\": "
        "\"none\" in its configuration");
  }
  uint32_t total = 0;
  for (uint32_t device = 0; device == 0 || device < total; ++device) {
    auto process =
        std::make_unique<DeviceProcess>(plugin.get(), library, config_json, host_program, device);
    uint32_t reported = 0;
    Status started = process->Start(&reported);
    if (device == 0) total = reported;
    if (!started.ok()) {
      if (device == 0 && total == 0 && started.code() == Code::kNotFound) {
        // The backend has no device: it opens with none, as in-process backends do.
        std::fprintf(stderr, "atolld: backend '%s' has no device: %s\n", plugin->name_.c_str(),
                     started.message().c_str());
        break;
      }
      return started;
    }
    plugin->devices_.push_back(std::move(process));
  }
  if (launch_timeout_ms > 0) plugin->watchdog_ = std::thread([p = plugin.get()] { p->Watch(); });
  return plugin;
}

IsolatedPlugin::~IsolatedPlugin() {
  {
    std::lock_guard lock(watch_mu_);
    stopping_ = true;
  }
  watch_cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  for (auto& device : devices_) device->Stop();
}

void IsolatedPlugin::Watch() {
  const auto limit = std::chrono::milliseconds(launch_timeout_ms_);
  const auto tick = std::clamp<std::chrono::milliseconds>(limit / 8, std::chrono::milliseconds(2),
                                                          std::chrono::milliseconds(100));
  std::unique_lock lock(watch_mu_);
  while (!watch_cv_.wait_for(lock, tick, [this] { return stopping_; })) {
    for (auto& device : devices_) device->Expire(limit, launch_timeout_ms_);
  }
}

std::optional<Plugin::DeviceProcessInfo> IsolatedPlugin::device_process(uint32_t device) const {
  if (device >= devices_.size()) return std::nullopt;
  return devices_[device]->process();
}

StatusOr<atoll_backend_device_info_v1> IsolatedPlugin::DeviceInfo(uint32_t device) const {
  if (device >= devices_.size()) {
    return InvalidArgumentError(name_ + " device " + std::to_string(device) +
                                " does not exist: the backend has " +
                                std::to_string(devices_.size()) + " device(s)");
  }
  return devices_[device]->info();
}

StatusOr<void*> IsolatedPlugin::Program(uint32_t device, const std::string& binary_path,
                                        const std::string& build_options) const {
  if (device >= devices_.size()) {
    return InvalidArgumentError(name_ + " device " + std::to_string(device) + " does not exist");
  }
  return devices_[device]->Program(binary_path, build_options);
}

void IsolatedPlugin::ReleaseProgram(void* program) const {
  auto* remote = static_cast<DeviceProcess::RemoteProgram*>(program);
  if (remote != nullptr) remote->process->ReleaseProgram(remote);
}

StatusOr<void*> IsolatedPlugin::Kernel(void* program, const std::string& name,
                                       const std::vector<const char*>& arg_types) const {
  auto* remote = static_cast<DeviceProcess::RemoteProgram*>(program);
  if (remote == nullptr) return InvalidArgumentError("kernel '" + name + "': no program");
  return remote->process->Kernel(remote, name, arg_types);
}

Status IsolatedPlugin::Launch(uint32_t device, uint32_t compute_unit, void* kernel,
                              const atoll_backend_arg_v1* args, uint32_t arg_count,
                              const atoll_backend_geometry_v1& geometry, atoll_backend_done_fn done,
                              void* user) const {
  auto* remote = static_cast<DeviceProcess::RemoteKernel*>(kernel);
  if (device >= devices_.size() || remote == nullptr ||
      remote->program->process != devices_[device].get()) {
    return InvalidArgumentError("launch on " + name_ + " device " + std::to_string(device) +
                                ": the kernel belongs to another device");
  }
  // One message per launch, built on each launching thread's own arena.
  thread_local ipc::ScratchMessage<host::HostCall> scratch;
  host::HostCall& call = scratch.Fresh();
  host::Launch* launch = call.mutable_launch();
  launch->set_compute_unit(compute_unit);
  launch->set_dims(geometry.dims);
  for (uint32_t d = 0; d < geometry.dims && d < 3; ++d) {
    launch->add_local(geometry.local[d]);
    launch->add_global(geometry.global[d]);
  }
  {
    std::lock_guard lock(buffers_mu_);
    for (uint32_t i = 0; i < arg_count; ++i) {
      const atoll_backend_arg_v1& arg = args[i];
      host::Arg* out = launch->add_args();
      out->set_kind(arg.kind);
      out->set_access(arg.access);
      out->set_type(arg.type != nullptr ? arg.type : "");
      out->set_size_bytes(arg.size_bytes);
      if (arg.kind != ATOLL_BACKEND_ARG_ARRAY) {
        out->set_scalar(arg.data, arg.size_bytes);
        continue;
      }
      if (arg.size_bytes == 0) continue;  // an empty array needs no memory
      const auto address = reinterpret_cast<uintptr_t>(arg.data);
      auto it = buffers_.upper_bound(address);
      if (it == buffers_.begin() ||
          address - std::prev(it)->first + arg.size_bytes > std::prev(it)->second.size_bytes) {
        return InternalError("launch on " + name_ + " device " + std::to_string(device) +
                             ": argument " + std::to_string(i) +
                             " is not in a buffer registered with the device's process");
      }
      --it;
      out->set_buffer(it->second.id);
      out->set_offset(address - it->first);
    }
  }
  return devices_[device]->Launch(remote, &call, done, user);
}

Status IsolatedPlugin::RegisterMemory(void* data, uint64_t size_bytes, int fd) const {
  if (fd < 0) {
    return InvalidArgumentError("registering a buffer with " + name_ +
                                ": its device processes need the buffer's file descriptor");
  }
  UniqueFd kept(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!kept.valid()) return ErrnoError("keeping a client buffer for " + name_, errno);
  std::lock_guard lock(buffers_mu_);
  const uint64_t id = next_buffer_++;
  Buffer& buffer = buffers_[reinterpret_cast<uintptr_t>(data)];
  buffer.id = id;
  buffer.size_bytes = size_bytes;
  buffer.fd = std::move(kept);
  for (const auto& device : devices_) device->SendBuffer(id, size_bytes, buffer.fd.get());
  return OkStatus();
}

void IsolatedPlugin::UnregisterMemory(void* data) const {
  std::lock_guard lock(buffers_mu_);
  auto it = buffers_.find(reinterpret_cast<uintptr_t>(data));
  if (it == buffers_.end()) return;
  for (const auto& device : devices_) device->DropBuffer(it->second.id);
  buffers_.erase(it);
}

}  // namespace atl::backend
