// atoll-backend-host: runs one device of a backend plugin for atolld, in a process of its own
// (isolated_plugin.h). atolld starts it with its end of a socketpair as fd 3 and talks
// backend_host.proto over it; it ends when atolld closes the socket, or when its device can no
// longer run kernels (it says so first, and atolld starts a fresh one).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "backend/plugin.h"
#include "backend_host.pb.h"
#include "common/hop_trace.h"
#include "ipc/ring.h"
#include "ipc/ring_channel.h"
#include "ipc/scratch_message.h"
#include "ipc/socket.h"

namespace atl::backend {
namespace {

constexpr int kSocket = 3;
// How long the serving thread polls for atolld's next call before it sleeps (ipc/socket.h).
constexpr uint32_t kSpinUs = 200;

std::string g_label = "atoll-backend-host";

void Log(const std::string& text) {
  std::fprintf(stderr, "%s: %s\n", g_label.c_str(), text.c_str());
}

// The link to atolld once the device is open: shared rings beside the socket (or the socket
// alone). Events come from several threads (completions, slow calls, the serving thread).
std::mutex g_send_mu;
ipc::RingChannel* g_channel = nullptr;  // GUARDED_BY(g_send_mu) for sends

void Send(const host::HostEvent& event) {
  thread_local std::string bytes;
  bytes.clear();
  event.SerializeToString(&bytes);
  std::lock_guard lock(g_send_mu);
  // atolld gone: it no longer wants the answer.
  (void)(g_channel != nullptr ? g_channel->Send(bytes) : ipc::SendPacket(kSocket, bytes));
}

void Reply(uint64_t call, const Status& status, uint64_t handle = 0) {
  host::HostEvent event;
  host::Reply* reply = event.mutable_reply();
  reply->set_call(call);
  reply->set_code(static_cast<uint32_t>(status.code()));
  reply->set_message(status.message());
  reply->set_handle(handle);
  Send(event);
}

void SendDone(uint64_t tag, int code, const char* message, bool checking_device = false) {
  // Sent from the completion threads, each on its own arena.
  thread_local ipc::ScratchMessage<host::HostEvent> scratch;
  host::HostEvent& event = scratch.Fresh();
  event.mutable_done()->set_tag(tag);
  event.mutable_done()->set_code(static_cast<uint32_t>(code));
  if (code != 0) event.mutable_done()->set_message(message != nullptr ? message : "");
  event.mutable_done()->set_checking_device(checking_device);
  Send(event);
}

// Runs the calls that may block (loading binaries, looking up kernels, checking the device after
// a failure) in order on one thread, so launches keep flowing meanwhile.
class SlowCalls {
 public:
  SlowCalls() : thread_([this] { Run(); }) {}
  ~SlowCalls() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Post(std::function<void()> work) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(std::move(work));
    }
    cv_.notify_all();
  }

 private:
  void Run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto work = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      work();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

struct Mapping {
  uint8_t* data = nullptr;
  uint64_t size_bytes = 0;  // as atolld declared it
  uint64_t mapped_bytes = 0;
};

class Host {
 public:
  explicit Host(std::unique_ptr<LoadedPlugin> plugin)
      : plugin_(std::move(plugin)), slow_(std::make_unique<SlowCalls>()) {}

  // Serves calls until atolld closes the socket. Only this thread receives on `channel`.
  void Serve(ipc::RingChannel& channel) {
    std::string buffer;
    ipc::ScratchMessage<host::HostCall> scratch;
    for (;;) {
      size_t size = 0;
      UniqueFd fd;
      auto got = channel.Receive(&buffer, &size, &fd, kSpinUs);
      if (!got.ok() || *got != ipc::RecvResult::kPacket) return;
      ATOLL_HOP("h.recv");
      host::HostCall& call = scratch.Fresh();
      if (!call.ParseFromArray(buffer.data(), static_cast<int>(size))) {
        Log("atolld sent an unreadable message; ending");
        return;
      }
      switch (call.what_case()) {
        case host::HostCall::kLaunch:
          Launch(call.launch());
          break;
        case host::HostCall::kRegisterBuffer:
          Register(call.register_buffer(), std::move(fd));
          break;
        case host::HostCall::kUnregisterBuffer:
          Unregister(call.unregister_buffer().buffer());
          break;
        case host::HostCall::kProgram:
          slow_->Post([this, id = call.call(), program = call.program()] { Program(id, program); });
          break;
        case host::HostCall::kKernel:
          slow_->Post([this, id = call.call(), kernel = call.kernel()] { Kernel(id, kernel); });
          break;
        case host::HostCall::kReleaseProgram:
          slow_->Post([this, program = call.release_program().program()] { Release(program); });
          break;
        default:
          Reply(call.call(), UnimplementedError("atoll-backend-host does not know this call"));
      }
    }
  }

  // Closes the backend (its launched work finishes and is reported), then unmaps the buffers.
  ~Host() {
    closing_.store(true);
    slow_.reset();  // runs what is queued, then ends
    plugin_.reset();
    for (auto& [id, mapping] : buffers_) ::munmap(mapping.data, mapping.mapped_bytes);
  }

 private:
  struct Launched {
    Host* host;
    uint64_t tag;
  };

  static void OnDone(void* user, int status, const char* message) {
    ATOLL_HOP("h.ondone");
    std::unique_ptr<Launched> launched(static_cast<Launched*>(user));
    Host* host = launched->host;
    const bool check = status != 0 && !host->closing_.load();
    SendDone(launched->tag, status, message, check);
    ATOLL_HOP("h.sent");
    if (check) host->CheckDevice();
  }

  // After a failure: a device that can no longer run kernels ends this process (atolld starts a
  // fresh one, with a fresh driver state).
  // REQUIRES: the failure's Done said checking_device, so atolld waits for the answer.
  void CheckDevice() {
    slow_->Post([this] {
      auto info = plugin_->DeviceInfo(0);
      if (info.ok() || info.status().code() != Code::kUnavailable) {
        host::HostEvent checked;
        checked.mutable_device_checked();
        Send(checked);
        return;
      }
      Log(info.status().message() + "; ending so that atolld starts a fresh process");
      host::HostEvent event;
      event.mutable_lost()->set_message(info.status().message());
      Send(event);
      std::fflush(stderr);
      ::_exit(3);  // closing the backend would wait on a device that no longer answers
    });
  }

  void Launch(const host::Launch& launch) {
    auto fail = [&](const Status& status) {
      SendDone(launch.tag(), static_cast<int>(status.code()), status.message().c_str());
    };
    // A launch the backend refuses is checked too: the refusal may mean a device that is gone.
    auto fail_and_check = [&](const Status& status) {
      SendDone(launch.tag(), static_cast<int>(status.code()), status.message().c_str(), true);
      CheckDevice();
    };
    void* kernel = reinterpret_cast<void*>(launch.kernel());
    {
      std::lock_guard lock(handles_mu_);
      if (kernels_.count(kernel) == 0) {
        return fail(InternalError("launch names a kernel this process did not look up"));
      }
    }
    args_.clear();
    args_.resize(static_cast<size_t>(launch.args_size()));
    for (int i = 0; i < launch.args_size(); ++i) {
      const host::Arg& in = launch.args(i);
      atoll_backend_arg_v1& out = args_[static_cast<size_t>(i)];
      out.kind = in.kind();
      out.access = in.access();
      out.type = in.type().c_str();
      out.size_bytes = in.size_bytes();
      if (in.kind() != ATOLL_BACKEND_ARG_ARRAY) {
        if (in.scalar().size() != in.size_bytes()) {
          return fail(InternalError("argument " + std::to_string(i) + "'s value has " +
                                    std::to_string(in.scalar().size()) + " bytes, not " +
                                    std::to_string(in.size_bytes())));
        }
        out.data = const_cast<char*>(in.scalar().data());
        continue;
      }
      if (in.size_bytes() == 0) continue;
      auto buffer = buffers_.find(in.buffer());
      if (buffer == buffers_.end() || in.offset() > buffer->second.size_bytes ||
          in.size_bytes() > buffer->second.size_bytes - in.offset()) {
        return fail(InternalError("argument " + std::to_string(i) +
                                  " lies outside the buffers this process has mapped"));
      }
      out.data = buffer->second.data + in.offset();
    }
    atoll_backend_geometry_v1 geometry{};
    geometry.dims = std::min<uint32_t>(launch.dims(), 3);
    for (uint32_t d = 0; d < geometry.dims; ++d) {
      geometry.local[d] =
          d < static_cast<uint32_t>(launch.local_size()) ? launch.local(static_cast<int>(d)) : 0;
      geometry.global[d] =
          d < static_cast<uint32_t>(launch.global_size()) ? launch.global(static_cast<int>(d)) : 0;
    }
    auto* user = new Launched{this, launch.tag()};
    ATOLL_HOP("h.launch");
    Status launched = plugin_->Launch(0, launch.compute_unit(), kernel, args_.data(),
                                      static_cast<uint32_t>(args_.size()), geometry, &OnDone, user);
    ATOLL_HOP("h.launched");
    if (!launched.ok()) {
      delete user;
      fail_and_check(launched);
    }
  }

  void Register(const host::RegisterBuffer& buffer, UniqueFd fd) {
    if (!fd.valid()) {
      Log("a buffer came without its file descriptor; launches using it will fail");
      return;
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0 || st.st_size < 0) {
      Log(std::string("cannot read a client buffer's size: ") + std::strerror(errno));
      return;
    }
    // As atolld maps it: the declared bytes in whole pages, never past the memfd's end.
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t wanted =
        std::max<uint64_t>((buffer.size_bytes() + page - 1) / page * page, page);
    const uint64_t length = std::min<uint64_t>(static_cast<uint64_t>(st.st_size), wanted);
    if (length < buffer.size_bytes() || length == 0) {
      Log("a client buffer is smaller than declared; launches using it will fail");
      return;
    }
    void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (p == MAP_FAILED) {
      Log(std::string("cannot map a client buffer: ") + std::strerror(errno));
      return;
    }
    Mapping mapping{static_cast<uint8_t*>(p), buffer.size_bytes(), length};
    if (plugin_->wants_memory_registration()) {
      Status pinned = plugin_->RegisterMemory(mapping.data, mapping.size_bytes, fd.get());
      if (!pinned.ok()) Log(pinned.message());  // the backend copies without pinning
    }
    buffers_[buffer.buffer()] = mapping;
  }

  void Unregister(uint64_t id) {
    auto it = buffers_.find(id);
    if (it == buffers_.end()) return;
    if (plugin_->wants_memory_registration()) plugin_->UnregisterMemory(it->second.data);
    ::munmap(it->second.data, it->second.mapped_bytes);
    buffers_.erase(it);
  }

  void Program(uint64_t id, const host::Program& program) {
    auto loaded = plugin_->Program(0, program.path(), program.build_options());
    if (!loaded.ok()) return Reply(id, loaded.status());
    {
      std::lock_guard lock(handles_mu_);
      programs_.insert(*loaded);
    }
    Reply(id, OkStatus(), reinterpret_cast<uint64_t>(*loaded));
  }

  void Kernel(uint64_t id, const host::Kernel& kernel) {
    void* program = reinterpret_cast<void*>(kernel.program());
    {
      std::lock_guard lock(handles_mu_);
      if (programs_.count(program) == 0) {
        return Reply(id, InternalError("kernel lookup in a program this process did not load"));
      }
    }
    std::vector<const char*> types;
    for (const auto& type : kernel.arg_types()) types.push_back(type.c_str());
    auto found = plugin_->Kernel(program, kernel.name(), types);
    if (!found.ok()) return Reply(id, found.status());
    {
      std::lock_guard lock(handles_mu_);
      kernels_.insert(*found);
      kernels_of_[program].push_back(*found);
    }
    Reply(id, OkStatus(), reinterpret_cast<uint64_t>(*found));
  }

  void Release(uint64_t handle) {
    void* program = reinterpret_cast<void*>(handle);
    {
      std::lock_guard lock(handles_mu_);
      if (programs_.erase(program) == 0) return;
      for (void* kernel : kernels_of_[program]) kernels_.erase(kernel);
      kernels_of_.erase(program);
    }
    plugin_->ReleaseProgram(program);
  }

  std::unique_ptr<LoadedPlugin> plugin_;
  // Read and written on the serving thread only.
  std::map<uint64_t, Mapping> buffers_;
  std::vector<atoll_backend_arg_v1> args_;
  // Handles handed to atolld, checked before use.
  std::mutex handles_mu_;
  std::set<void*> programs_, kernels_;
  std::map<void*, std::vector<void*>> kernels_of_;
  std::unique_ptr<SlowCalls> slow_;
  std::atomic<bool> closing_{false};
};

// The first call opens the device; returns the plugin, or null after replying why not. The
// shared rings that came with the call, if any, land in `*rings`.
std::unique_ptr<LoadedPlugin> Open(std::unique_ptr<ipc::SharedRings>* rings) {
  std::string buffer;
  size_t size = 0;
  UniqueFd fd;
  auto got = ipc::RecvPacket(kSocket, &buffer, &size, &fd);
  host::HostCall call;
  if (!got.ok() || *got != ipc::RecvResult::kPacket ||
      !call.ParseFromArray(buffer.data(), static_cast<int>(size)) || !call.has_open()) {
    Log("expected atolld's open call first");
    return nullptr;
  }
  const host::Open& open = call.open();
  g_label = "atoll-backend-host[" + std::to_string(::getpid()) + "] device " +
            std::to_string(open.device());
  host::HostEvent event;
  host::Reply* reply = event.mutable_reply();
  reply->set_call(call.call());
  auto refuse = [&](const Status& why) {
    reply->set_code(static_cast<uint32_t>(why.code()));
    reply->set_message(why.message());
    Send(event);
  };
  auto library = LoadLibrary(open.plugin_path());
  if (!library.ok()) {
    refuse(library.status());
    return nullptr;
  }
  g_label = std::string("atoll-backend-host[") + std::to_string(::getpid()) + "] " +
            library->table->name + " device " + std::to_string(open.device());
  uint32_t total = 0;
  auto plugin = LoadedPlugin::Open(*library, open.config_json(), open.device(), &total);
  reply->set_device_total(total);
  if (!plugin.ok()) {
    refuse(plugin.status());
    return nullptr;
  }
  auto info = (*plugin)->DeviceInfo(0);
  if (!info.ok()) {
    refuse(info.status());
    return nullptr;
  }
  if (open.ring_capacity() != 0) {
    auto mapped = fd.valid() ? ipc::SharedRings::Map(fd.get(), open.ring_capacity())
                             : StatusOr<std::unique_ptr<ipc::SharedRings>>(InternalError(
                                   "the open call offered shared rings without their memory"));
    if (!mapped.ok()) {
      refuse(mapped.status());
      return nullptr;
    }
    *rings = std::move(mapped).value();
  }
  reply->set_device_info(&*info, sizeof(*info));
  Send(event);
  return std::move(plugin).value();
}

}  // namespace
}  // namespace atl::backend

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      std::printf(
          "atoll-backend-host: runs one device of an Atoll backend plugin in a process of its "
          "own.\n"
          "atolld starts it (one per device of a backend configured with \"isolate\": "
          "\"device\", the default for cuda) with a socket as file descriptor 3; it is not "
          "meant to be run by hand. The --backend and --device arguments only label the "
          "process for ps and logs. See docs/architecture.md, \"A process per device\".\n");
      return 0;
    }
  }
  if (::fcntl(atl::backend::kSocket, F_GETFD) < 0) {
    std::fprintf(stderr,
                 "atoll-backend-host: file descriptor 3 is not open: this program is started "
                 "by atolld (see --help)\n");
    return 2;
  }
  std::unique_ptr<atl::ipc::SharedRings> rings;
  auto plugin = atl::backend::Open(&rings);
  if (plugin == nullptr) return 1;
  // From here on, calls and events take the rings; the channel outlives the host, whose closing
  // backend still reports completions.
  atl::ipc::Ring* calls = rings ? &rings->from_creator() : nullptr;
  atl::ipc::Ring* events = rings ? &rings->to_creator() : nullptr;
  atl::ipc::RingChannel channel(atl::backend::kSocket, events, atl::ipc::RingOrder::kUnordered,
                                calls, atl::ipc::RingOrder::kMarked);
  {
    std::lock_guard lock(atl::backend::g_send_mu);
    atl::backend::g_channel = &channel;
  }
  {
    atl::backend::Host host(std::move(plugin));
    host.Serve(channel);
  }
  std::lock_guard lock(atl::backend::g_send_mu);
  atl::backend::g_channel = nullptr;
  return 0;
}
