#include "device.h"

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "atoll/status.h"
#include "hop_trace.h"

namespace atl::cuda {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kFirstBackoff = std::chrono::microseconds(10);
constexpr auto kLongestBackoff = std::chrono::microseconds(100);

void NameThisThread(const std::string& name) {
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

std::string Dims(const uint32_t (&d)[3]) {
  return "(" + std::to_string(d[0]) + ", " + std::to_string(d[1]) + ", " + std::to_string(d[2]) +
         ")";
}

}  // namespace

Device::Device(const Driver& driver, const Config& config, HostRegistry* registry, JitCache* jit,
               uint32_t index, int ordinal)
    : cu_(driver),
      config_(config),
      registry_(registry),
      jit_(jit),
      index_(index),
      ordinal_(ordinal) {}

Device::~Device() {
  Drain();
  Release();
}

std::string Device::Describe() const {
  return "GPU " + std::to_string(index_) + " (" + name_ + ", sm_" + std::to_string(cc_major_) +
         std::to_string(cc_minor_) + ", " + pci_id_ + ")";
}

int Device::StatusOf(CUresult result) const {
  switch (result) {
    case CUDA_SUCCESS:
      return ATOLL_OK;
    case CUDA_ERROR_OUT_OF_MEMORY:
      return ATOLL_RESOURCE_EXHAUSTED;
    case CUDA_ERROR_INVALID_VALUE:
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES:
    case CUDA_ERROR_INVALID_IMAGE:
    case CUDA_ERROR_INVALID_PTX:
    case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
      return ATOLL_INVALID_ARGUMENT;
    case CUDA_ERROR_NOT_FOUND:
      return ATOLL_NOT_FOUND;
    case CUDA_ERROR_NO_BINARY_FOR_GPU:
      return ATOLL_FAILED_PRECONDITION;
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_DEVICE_UNAVAILABLE:
    case CUDA_ERROR_DEVICE_NOT_LICENSED:
    case CUDA_ERROR_NOT_INITIALIZED:
    case CUDA_ERROR_DEINITIALIZED:
    case CUDA_ERROR_SYSTEM_NOT_READY:
      return ATOLL_UNAVAILABLE;
    default:
      return IsStickyError(result) ? ATOLL_ABORTED : ATOLL_INTERNAL;
  }
}

std::string Device::Start() {
  CUresult result = cu_.cuDeviceGet(&device_, ordinal_);
  if (result != CUDA_SUCCESS) {
    return "CUDA device " + std::to_string(ordinal_) + ": cuDeviceGet failed with " +
           cu_.Describe(result);
  }
  char text[256] = "";
  if (cu_.cuDeviceGetName(text, sizeof(text), device_) == CUDA_SUCCESS) name_ = text;
  auto attribute = [&](CUdevice_attribute which, int fallback) {
    int value = 0;
    return cu_.cuDeviceGetAttribute(&value, which, device_) == CUDA_SUCCESS ? value : fallback;
  };
  cc_major_ = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0);
  cc_minor_ = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0);
  limits_.max_threads_per_block =
      static_cast<uint32_t>(attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 1024));
  limits_.max_block[0] =
      static_cast<uint32_t>(attribute(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X, 1024));
  limits_.max_block[1] =
      static_cast<uint32_t>(attribute(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y, 1024));
  limits_.max_block[2] = static_cast<uint32_t>(attribute(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z, 64));
  limits_.max_grid[0] = static_cast<uint32_t>(attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X, 65535));
  limits_.max_grid[1] = static_cast<uint32_t>(attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, 65535));
  limits_.max_grid[2] = static_cast<uint32_t>(attribute(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z, 65535));
  host_pointer_ok_ =
      attribute(CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM, 0) != 0 &&
      attribute(CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, 0) != 0;
  size_t total = 0;
  if (cu_.cuDeviceTotalMem(&total, device_) == CUDA_SUCCESS) total_memory_ = total;
  char pci[32] = "";
  if (cu_.cuDeviceGetPCIBusId(pci, sizeof(pci), device_) == CUDA_SUCCESS) {
    pci_id_ = pci;
    std::transform(pci_id_.begin(), pci_id_.end(), pci_id_.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }

  CUuuid uuid{};
  if (cu_.cuDeviceGetUuid != nullptr && cu_.cuDeviceGetUuid(&uuid, device_) == CUDA_SUCCESS) {
    const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
    char formatted[64];
    std::snprintf(formatted, sizeof(formatted),
                  "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                  b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                  b[14], b[15]);
    uuid_ = formatted;
  }

  std::string problem = CreateContext();
  if (!problem.empty()) return Describe() + ": " + problem;

  uint64_t cap = config_.pool_bytes.value_or(total_memory_ / 10 * 9);
  pool_ = std::make_unique<BlockPool>(
      cap,
      [this](uint64_t bytes, uint64_t* handle, std::string* error) {
        CUdeviceptr pointer = 0;
        CUresult r = cu_.cuMemAlloc(&pointer, bytes);
        if (r != CUDA_SUCCESS) {
          *error = "cuMemAlloc failed with " + cu_.Describe(r);
          size_t free = 0, all = 0;
          if (r == CUDA_ERROR_OUT_OF_MEMORY && cu_.cuMemGetInfo(&free, &all) == CUDA_SUCCESS) {
            *error += "; " + Describe() + " has " + std::to_string(free >> 20) + " MiB free of " +
                      std::to_string(all >> 20) + " MiB";
          }
          return StatusOf(r);
        }
        *handle = pointer;
        return static_cast<int>(ATOLL_OK);
      },
      [this](uint64_t handle) { cu_.cuMemFree(static_cast<CUdeviceptr>(handle)); });

  problem = CreateStreams();
  if (!problem.empty()) return problem;
  uint32_t threads = config_.EffectiveCompletionThreads();
  for (uint32_t t = 0; t < threads; ++t) completers_.push_back(std::make_unique<Completer>());
  for (uint32_t s = 0; s < streams_.size(); ++s) {
    Completer* completer = completers_[s % threads].get();
    streams_[s]->completer = completer;
    completer->streams.push_back(streams_[s].get());
  }
  for (uint32_t t = 0; t < threads; ++t) {
    Completer* completer = completers_[t].get();
    completer->thread = std::thread([this, completer, t] {
      NameThisThread("atoll-cuda" + std::to_string(index_) + "." + std::to_string(t));
      CompletionLoop(completer);
    });
  }
  return "";
}

std::string Device::CreateContext() {
  CUresult result = CUDA_SUCCESS;
  if (config_.own_context) {
    result = cu_.CreateContext(&context_, device_);
    if (result != CUDA_SUCCESS) return "cuCtxCreate failed with " + cu_.Describe(result);
  } else {
    result = cu_.cuDevicePrimaryCtxRetain(&context_, device_);
    if (result != CUDA_SUCCESS) {
      return "cuDevicePrimaryCtxRetain failed with " + cu_.Describe(result);
    }
  }
  context_retained_ = true;
  cu_.cuCtxSetCurrent(context_);
  return "";
}

std::string Device::DestroyContext() {
  if (!context_retained_) return "";
  context_retained_ = false;
  CUresult result = CUDA_SUCCESS;
  if (config_.own_context) {
    result = cu_.cuCtxDestroy(context_);
    if (result != CUDA_SUCCESS && !IsStickyError(result)) {
      return "cuCtxDestroy failed with " + cu_.Describe(result);
    }
  } else {
    // Not current anywhere in this thread while it is reset.
    cu_.cuCtxSetCurrent(nullptr);
    result = cu_.cuDevicePrimaryCtxReset(device_);
    cu_.cuDevicePrimaryCtxRelease(device_);
    if (result != CUDA_SUCCESS) {
      return "cuDevicePrimaryCtxReset failed with " + cu_.Describe(result);
    }
  }
  return "";
}

std::string Device::CreateStreams() {
  if (streams_.empty()) {
    for (uint32_t s = 0; s < config_.streams; ++s) streams_.push_back(std::make_unique<Stream>());
  }
  for (auto& stream : streams_) {
    CUresult result = cu_.cuStreamCreate(&stream->stream, CU_STREAM_NON_BLOCKING);
    if (result != CUDA_SUCCESS) {
      stream->stream = nullptr;
      return Describe() + ": cuStreamCreate failed with " + cu_.Describe(result);
    }
  }
  return "";
}

void Device::DestroyStreams() {
  for (auto& stream : streams_) {
    if (stream->stream != nullptr) cu_.cuStreamDestroy(stream->stream);
    stream->stream = nullptr;
  }
}

void Device::Drain() {
  {
    std::lock_guard<std::mutex> lock(state_mutex_);
    closing_ = true;
  }
  for (auto& completer : completers_) {
    {
      std::lock_guard<std::mutex> lock(completer->mutex);
      completer->stop = true;
    }
    completer->wake.notify_all();
  }
  for (auto& completer : completers_) {
    if (completer->thread.joinable()) completer->thread.join();
  }
}

void Device::Release() {
  if (!context_retained_) return;
  cu_.cuCtxSetCurrent(context_);
  {
    std::lock_guard<std::mutex> lock(programs_mutex_);
    for (Program* program : programs_) {
      if (program->module != nullptr) cu_.cuModuleUnload(program->module);
      delete program;
    }
    programs_.clear();
  }
  pool_.reset();
  {
    std::lock_guard<std::mutex> lock(events_mutex_);
    for (CUevent event : free_events_) cu_.cuEventDestroy(event);
    free_events_.clear();
  }
  DestroyStreams();
  if (config_.own_context) {
    cu_.cuCtxDestroy(context_);
  } else {
    cu_.cuDevicePrimaryCtxRelease(device_);
  }
  context_retained_ = false;
}

int Device::Info(const Nvml& nvml, atoll_backend_device_info_v1* info, std::string* error) const {
  {
    // A lost GPU says so: in a process of its own (open_device), that process is then replaced.
    std::lock_guard<std::mutex> state(state_mutex_);
    if (!lost_.empty()) {
      *error = lost_;
      return ATOLL_UNAVAILABLE;
    }
  }
  auto copy = [](char* destination, size_t size, const std::string& text) {
    size_t length = std::min(size - 1, text.size());
    std::memcpy(destination, text.data(), length);
    destination[length] = '\0';
  };
  atoll_backend_device_info_v1 filled{};
  filled.struct_size = info->struct_size;
  copy(filled.vendor, sizeof(filled.vendor), "NVIDIA Corporation");
  copy(filled.name, sizeof(filled.name), name_);
  copy(filled.platform_vendor, sizeof(filled.platform_vendor), "nvidia");
  copy(filled.platform_name, sizeof(filled.platform_name),
       "sm_" + std::to_string(cc_major_) + std::to_string(cc_minor_));
  copy(filled.platform_version, sizeof(filled.platform_version),
       std::to_string(cu_.version / 1000) + "." + std::to_string(cu_.version % 1000 / 10));
  copy(filled.pci_id, sizeof(filled.pci_id), pci_id_);
  Nvml::Readings readings = nvml.Read(pci_id_, uuid_);
  copy(filled.serial, sizeof(filled.serial), readings.serial);
  filled.global_memory_bytes = static_cast<int64_t>(total_memory_);
  filled.temperature_c = readings.temperature_c;
  filled.power_mw = readings.power_mw;
  filled.compute_units = static_cast<uint32_t>(streams_.size());
  filled.binaries_at_once = 0;
  std::memcpy(info, &filled, sizeof(filled));
  return ATOLL_OK;
}

bool Device::Enter(std::shared_lock<std::shared_mutex>* lock, std::string* error) {
  {
    std::unique_lock<std::mutex> state(state_mutex_);
    state_changed_.wait(state, [this] { return !recovering_; });
    if (!lost_.empty()) {
      *error = lost_;
      return false;
    }
    if (closing_) {
      *error = Describe() + " is closing: the cuda backend is shutting down";
      return false;
    }
  }
  *lock = std::shared_lock<std::shared_mutex>(context_mutex_);
  cu_.cuCtxSetCurrent(context_);
  return true;
}

CUevent Device::TakeEvent(CUresult* result) {
  {
    std::lock_guard<std::mutex> lock(events_mutex_);
    if (!free_events_.empty()) {
      CUevent event = free_events_.back();
      free_events_.pop_back();
      *result = CUDA_SUCCESS;
      return event;
    }
  }
  CUevent event = nullptr;
  *result = cu_.cuEventCreate(&event, CU_EVENT_DISABLE_TIMING);
  return *result == CUDA_SUCCESS ? event : nullptr;
}

void Device::GiveEvent(CUevent event, uint64_t generation) {
  if (event == nullptr || generation != generation_.load()) return;  // died with its context
  std::lock_guard<std::mutex> lock(events_mutex_);
  free_events_.push_back(event);
}

int Device::Pin(void* data, uint64_t bytes, uint64_t* device_pointer, std::string* error) {
  CUresult result = cu_.cuMemHostRegister(
      data, bytes, CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP);
  if (result != CUDA_SUCCESS && result != CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED) {
    *error = "cuMemHostRegister of " + std::to_string(bytes) + " bytes failed with " +
             cu_.Describe(result);
    return result == CUDA_ERROR_OUT_OF_MEMORY   ? ATOLL_RESOURCE_EXHAUSTED
           : result == CUDA_ERROR_NOT_SUPPORTED ? ATOLL_UNIMPLEMENTED
                                                : ATOLL_INVALID_ARGUMENT;
  }
  CUdeviceptr pointer = 0;
  if (cu_.cuMemHostGetDevicePointer(&pointer, data, 0) != CUDA_SUCCESS) pointer = 0;
  *device_pointer = pointer;
  return ATOLL_OK;
}

void Device::Unpin(void* data) {
  if (!context_retained_) return;
  cu_.cuCtxSetCurrent(context_);
  cu_.cuMemHostUnregister(data);
}

int Device::RegisterMemory(void* data, uint64_t bytes, std::string* error) {
  std::shared_lock<std::shared_mutex> context;
  if (!Enter(&context, error)) return ATOLL_UNAVAILABLE;
  return registry_->Add(
      data, bytes, index_,
      [this](void* d, uint64_t b, uint64_t* p, std::string* e) { return Pin(d, b, p, e); }, error);
}

void Device::AbortEnqueued(Stream* stream, Record* record) {
  // Work already on the stream reads client memory and device blocks: it must end before they
  // are given back.
  cu_.cuStreamSynchronize(stream->stream);
  for (void* base : record->leases) registry_->Release(base);
  for (const auto& block : record->blocks) pool_->Release(block);
  GiveEvent(record->event, record->generation);
  record->leases.clear();
  record->blocks.clear();
  record->event = nullptr;
}

int Device::Launch(uint32_t compute_unit, Kernel* kernel, const atoll_backend_arg_v1* args,
                   uint32_t arg_count, const atoll_backend_geometry_v1* geometry,
                   atoll_backend_done_fn done, void* user, std::string* error) {
  ATOLL_HOP("g.launch");
  if (compute_unit >= streams_.size()) {
    *error = "compute unit " + std::to_string(compute_unit) + " does not exist: " + Describe() +
             " has " + std::to_string(streams_.size()) +
             " (set \"streams\" in the cuda backend's configuration)";
    return ATOLL_INVALID_ARGUMENT;
  }
  if (arg_count != kernel->arg_count) {
    *error = "kernel '" + kernel->name + "' was looked up with " +
             std::to_string(kernel->arg_count) + " arguments but launched with " +
             std::to_string(arg_count);
    return ATOLL_INVALID_ARGUMENT;
  }
  atoll_backend_geometry_v1 single{};
  LaunchShape shape;
  std::string problem = ComputeLaunchShape(geometry != nullptr ? *geometry : single, limits_,
                                           kernel->max_threads, &shape);
  if (!problem.empty()) {
    *error = "launch of kernel '" + kernel->name + "' on " + Describe() + ": " + problem;
    return ATOLL_INVALID_ARGUMENT;
  }
  size_t storage_bytes = 0;
  for (uint32_t i = 0; i < arg_count; ++i) {
    const atoll_backend_arg_v1& arg = args[i];
    if (arg.kind != ATOLL_BACKEND_ARG_ARRAY && arg.kind != ATOLL_BACKEND_ARG_SCALAR) {
      *error = "launch of kernel '" + kernel->name + "': argument " + std::to_string(i) +
               " has kind " + std::to_string(arg.kind) + ", neither array (1) nor scalar (2)";
      return ATOLL_INVALID_ARGUMENT;
    }
    if (arg.data == nullptr && arg.size_bytes > 0) {
      *error = "launch of kernel '" + kernel->name + "': argument " + std::to_string(i) + " has " +
               std::to_string(arg.size_bytes) + " bytes at NULL";
      return ATOLL_INVALID_ARGUMENT;
    }
    uint64_t size = arg.kind == ATOLL_BACKEND_ARG_ARRAY ? sizeof(CUdeviceptr) : arg.size_bytes;
    storage_bytes += (size + 15) / 16 * 16;
  }
  if (shape.empty) {
    done(user, ATOLL_OK, "");
    return ATOLL_OK;
  }

  std::shared_lock<std::shared_mutex> context;
  if (!Enter(&context, error)) return ATOLL_UNAVAILABLE;
  ATOLL_HOP("g.entered");
  if (kernel->function == nullptr) {
    *error = "kernel '" + kernel->name + "' is unusable: " + kernel->program->reload_problem;
    return ATOLL_INTERNAL;
  }
  auto record = std::make_unique<Record>();
  record->done = done;
  record->user = user;
  record->generation = generation_.load();
  record->kernel = kernel->name;

  // Parameter values: cuLaunchKernel copies them, so they live only for this call.
  std::vector<unsigned char> storage(storage_bytes);
  std::vector<void*> params(arg_count);
  std::vector<Download> pinned_outputs;
  Stream& stream = *streams_[compute_unit];
  std::lock_guard<std::mutex> order(stream.enqueue_mutex);
  bool enqueued = false;
  auto fail = [&](int status, const std::string& message) {
    if (enqueued) {
      AbortEnqueued(&stream, record.get());
    } else {
      for (void* base : record->leases) registry_->Release(base);
      for (const auto& block : record->blocks) pool_->Release(block);
      GiveEvent(record->event, record->generation);
    }
    *error = "launch of kernel '" + kernel->name + "' on " + Describe() + ": " + message;
    return status;
  };
  auto argument = [&](uint32_t i) {
    return "argument " + std::to_string(i) + " ('" +
           std::string(args[i].type != nullptr ? args[i].type : "?") + "', " +
           std::to_string(args[i].size_bytes) + " bytes)";
  };
  auto pin = [this](void* d, uint64_t b, uint64_t* p, std::string* e) { return Pin(d, b, p, e); };
  size_t offset = 0;
  for (uint32_t i = 0; i < arg_count; ++i) {
    const atoll_backend_arg_v1& arg = args[i];
    unsigned char* slot = storage.data() + offset;
    params[i] = slot;
    if (arg.kind == ATOLL_BACKEND_ARG_SCALAR) {
      if (arg.size_bytes > 0) std::memcpy(slot, arg.data, arg.size_bytes);
      offset += (arg.size_bytes + 15) / 16 * 16;
      continue;
    }
    offset += 16;
    CUdeviceptr pointer = 0;
    if (arg.size_bytes > 0) {
      HostRegistry::Lease lease = registry_->Acquire(arg.data, arg.size_bytes, index_, pin);
      if (lease.base != nullptr) record->leases.push_back(lease.base);
      const uint64_t zero_copy_limit =
          (arg.access & ATOLL_BACKEND_ACCESS_SINGLE_PASS) != 0
              ? std::max(config_.zero_copy_bytes, config_.single_pass_zero_copy_bytes)
              : config_.zero_copy_bytes;
      if (lease.pinned && host_pointer_ok_ && arg.size_bytes <= zero_copy_limit) {
        // Small arrays of pinned memory: the kernel reads and writes them in place over PCIe,
        // which costs less than a copy each way.
        pointer = reinterpret_cast<CUdeviceptr>(arg.data);
      } else {
        BlockPool::Block block;
        std::string why;
        int status = pool_->Acquire(arg.size_bytes, &block, &why);
        if (status != ATOLL_OK) return fail(status, argument(i) + " " + why);
        record->blocks.push_back(block);
        pointer = static_cast<CUdeviceptr>(block.handle);
        if ((arg.access & ATOLL_BACKEND_ACCESS_READ) != 0) {
          enqueued = true;
          CUresult r = cu_.cuMemcpyHtoDAsync(pointer, arg.data, arg.size_bytes, stream.stream);
          if (r != CUDA_SUCCESS) {
            if (IsStickyError(r)) RequestRecovery(r);
            return fail(StatusOf(r), "uploading " + argument(i) + ": " + cu_.Describe(r));
          }
        }
        if ((arg.access & ATOLL_BACKEND_ACCESS_WRITE) != 0) {
          Download download{pointer, arg.data, arg.size_bytes};
          (lease.pinned ? pinned_outputs : record->downloads).push_back(download);
        }
      }
    }
    std::memcpy(slot, &pointer, sizeof(pointer));
  }
  enqueued = true;
  ATOLL_HOP("g.args");
  CUresult r = cu_.cuLaunchKernel(kernel->function, shape.grid[0], shape.grid[1], shape.grid[2],
                                  shape.block[0], shape.block[1], shape.block[2], 0, stream.stream,
                                  params.data(), nullptr);
  if (r != CUDA_SUCCESS) {
    if (IsStickyError(r)) RequestRecovery(r);
    return fail(StatusOf(r), "cuLaunchKernel with grid " + Dims(shape.grid) + " and block " +
                                 Dims(shape.block) + " failed with " + cu_.Describe(r));
  }
  ATOLL_HOP("g.kernel");
  for (const Download& d : pinned_outputs) {
    r = cu_.cuMemcpyDtoHAsync(d.destination, d.source, d.bytes, stream.stream);
    if (r != CUDA_SUCCESS) {
      if (IsStickyError(r)) RequestRecovery(r);
      return fail(StatusOf(r), "downloading an output: " + cu_.Describe(r));
    }
  }
  record->event = TakeEvent(&r);
  if (r == CUDA_SUCCESS) r = cu_.cuEventRecord(record->event, stream.stream);
  if (r != CUDA_SUCCESS) {
    if (IsStickyError(r)) RequestRecovery(r);
    return fail(StatusOf(r), "recording the completion event: " + cu_.Describe(r));
  }
  ATOLL_HOP("g.recorded");
  record->started = Clock::now();
  Completer* completer = stream.completer;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(completer->mutex);
    stream.queue.push_back(record.release());
    completer->kicked = true;
    wake = completer->waiting;
  }
  if (wake) completer->wake.notify_one();
  return ATOLL_OK;
}

void Device::RequestRecovery(CUresult result) {
  int expected = 0;
  recovery_requested_.compare_exchange_strong(expected, static_cast<int>(result));
  Completer* completer = completers_.front().get();
  {
    std::lock_guard<std::mutex> lock(completer->mutex);
    completer->kicked = true;
  }
  completer->wake.notify_one();
}

Device::Fault Device::Poll(Completer* completer, std::vector<Outcome>* finished) {
  Fault fault;
  std::shared_lock<std::shared_mutex> context(context_mutex_);
  cu_.cuCtxSetCurrent(context_);
  const auto now = Clock::now();
  const auto timeout = std::chrono::milliseconds(config_.kernel_timeout_ms);
  for (Stream* stream : completer->streams) {
    for (;;) {
      Record* record = nullptr;
      {
        std::lock_guard<std::mutex> lock(completer->mutex);
        if (stream->queue.empty()) break;
        record = stream->queue.front();
      }
      CUresult result = cu_.cuEventQuery(record->event);
      if (result == CUDA_ERROR_NOT_READY) {
        if (config_.kernel_timeout_ms > 0 && !record->overran && now - record->started > timeout) {
          record->overran = true;
          std::fprintf(stderr,
                       "atoll cuda backend: %s: kernel '%s' has run longer than "
                       "kernel_timeout_ms (%u ms); its request fails when it ends (CUDA cannot "
                       "stop a running kernel short of ending the process)\n",
                       Describe().c_str(), record->kernel.c_str(), config_.kernel_timeout_ms);
        }
        break;
      }
      ATOLL_HOP("g.ready");
      for (size_t i = 0; result == CUDA_SUCCESS && i < record->downloads.size(); ++i) {
        const Download& d = record->downloads[i];
        result = cu_.cuMemcpyDtoH(d.destination, d.source, d.bytes);
      }
      Outcome outcome{record, ATOLL_OK, ""};
      if (result != CUDA_SUCCESS) {
        if (IsStickyError(result)) {
          fault.result = result;
          return fault;
        }
        outcome.status = StatusOf(result);
        outcome.message =
            "kernel '" + record->kernel + "' on " + Describe() + " failed: " + cu_.Describe(result);
      } else if (record->overran) {
        auto ran =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - record->started);
        outcome.status = ATOLL_DEADLINE_EXCEEDED;
        outcome.message = "kernel '" + record->kernel + "' ran " + std::to_string(ran.count()) +
                          " ms on " + Describe() + ", longer than kernel_timeout_ms (" +
                          std::to_string(config_.kernel_timeout_ms) +
                          " ms); CUDA cannot stop a running kernel, so this request failed when "
                          "the kernel ended";
      }
      {
        std::lock_guard<std::mutex> lock(completer->mutex);
        stream->queue.pop_front();
      }
      finished->push_back(std::move(outcome));
    }
  }
  return fault;
}

void Device::Complete(Outcome* outcome) {
  Record* record = outcome->record;
  for (void* base : record->leases) registry_->Release(base);
  for (const auto& block : record->blocks) pool_->Release(block);
  GiveEvent(record->event, record->generation);
  atoll_backend_done_fn done = record->done;
  void* user = record->user;
  delete record;
  ATOLL_HOP("g.complete");
  done(user, outcome->status, outcome->message.c_str());
}

void Device::CompletionLoop(Completer* completer) {
  const auto spin = std::chrono::microseconds(config_.spin_us);
  auto last_progress = Clock::now();
  auto backoff = std::chrono::duration_cast<Clock::duration>(kFirstBackoff);
  std::vector<Outcome> finished;
  auto has_work = [completer] {
    for (Stream* stream : completer->streams) {
      if (!stream->queue.empty()) return true;
    }
    return false;
  };
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(completer->mutex);
      if (!has_work() && recovery_requested_.load() == 0) {
        if (completer->stop) return;
        if (Clock::now() - last_progress < spin) {
          // Idle, but a launch came or finished recently: the next one usually follows within
          // microseconds, and finding this thread awake saves its wake-up (several
          // microseconds on a VM).
          lock.unlock();
          std::this_thread::yield();
          continue;
        }
        completer->waiting = true;
        completer->wake.wait(lock, [&] { return completer->stop || completer->kicked; });
        completer->waiting = false;
        completer->kicked = false;
        last_progress = Clock::now();
        backoff = kFirstBackoff;
        continue;
      }
      if (completer->kicked) {
        completer->kicked = false;
        last_progress = Clock::now();
        backoff = kFirstBackoff;
      }
    }
    if (recovering_flag_.load()) {
      std::unique_lock<std::mutex> state(state_mutex_);
      state_changed_.wait(state, [this] { return !recovering_; });
      continue;
    }
    if (int requested = recovery_requested_.exchange(0); requested != 0) {
      Fault fault;
      fault.result = static_cast<CUresult>(requested);
      Recover(fault);
      continue;
    }
    finished.clear();
    Fault fault = Poll(completer, &finished);
    for (Outcome& outcome : finished) Complete(&outcome);
    if (fault.result != CUDA_SUCCESS) {
      Recover(fault);
      continue;
    }
    auto now = Clock::now();
    if (!finished.empty()) {
      last_progress = now;
      backoff = kFirstBackoff;
      continue;
    }
    if (now - last_progress < spin) {
      std::this_thread::yield();
      continue;
    }
    // A long kernel or transfer: poll less often, but wake at once for a new launch.
    std::unique_lock<std::mutex> lock(completer->mutex);
    if (!completer->kicked && !completer->stop) {
      completer->waiting = true;
      completer->wake.wait_for(lock, backoff);
      completer->waiting = false;
    }
    backoff = std::min<Clock::duration>(backoff * 2, kLongestBackoff);
  }
}

void Device::Recover(const Fault& fault) {
  {
    std::unique_lock<std::mutex> state(state_mutex_);
    if (recovering_) {
      state_changed_.wait(state, [this] { return !recovering_; });
      return;
    }
    recovering_ = true;
    recovering_flag_.store(true);
  }
  const std::string error = cu_.Describe(fault.result);
  std::vector<Outcome> outcomes;
  {
    std::unique_lock<std::shared_mutex> context(context_mutex_);
    cu_.cuCtxSetCurrent(context_);
    std::vector<Record*> in_flight;
    for (auto& completer : completers_) {
      std::lock_guard<std::mutex> lock(completer->mutex);
      for (Stream* stream : completer->streams) {
        in_flight.insert(in_flight.end(), stream->queue.begin(), stream->queue.end());
        stream->queue.clear();
      }
    }
    std::vector<Record*> failed;
    for (Record* record : in_flight) {
      // A launch whose work ended before the fault completed normally.
      CUresult result = cu_.cuEventQuery(record->event);
      for (size_t i = 0; result == CUDA_SUCCESS && i < record->downloads.size(); ++i) {
        const Download& d = record->downloads[i];
        result = cu_.cuMemcpyDtoH(d.destination, d.source, d.bytes);
      }
      if (result == CUDA_SUCCESS) {
        outcomes.push_back({record, ATOLL_OK, ""});
      } else {
        failed.push_back(record);
      }
    }

    // Everything of the old context goes with it: its handles are forgotten, not destroyed.
    {
      std::lock_guard<std::mutex> lock(events_mutex_);
      free_events_.clear();
    }
    for (auto& stream : streams_) stream->stream = nullptr;
    pool_->Forget();
    registry_->DropOwner(index_);
    std::string problem = DestroyContext();
    if (problem.empty()) problem = CreateContext();
    if (problem.empty()) problem = CreateStreams();
    generation_.fetch_add(1);
    resets_.fetch_add(1);
    if (problem.empty()) ReloadPrograms();

    std::string after;
    if (problem.empty()) {
      after = "the GPU's context was rebuilt and later requests run normally";
    } else {
      after = "the CUDA driver cannot recover this process from it (" + problem + "), so " +
              (config_.own_process
                   ? std::string("atolld replaces the GPU's process; later requests run there")
                   : std::string("the GPU takes no more requests until atolld restarts (with "
                                 "\"isolate\": \"device\" atolld restarts the GPU alone)"));
    }
    const std::string count = std::to_string(failed.size());
    for (Record* record : failed) {
      outcomes.push_back({record, ATOLL_ABORTED,
                          error + ": a kernel faulted on " + Describe() +
                              " while this request's kernel '" + record->kernel +
                              "' was in flight; the driver cannot tell which of the " + count +
                              " launches in flight faulted, so each of them fails; " + after});
    }
    std::lock_guard<std::mutex> state(state_mutex_);
    if (!problem.empty()) {
      lost_ = Describe() + " is unusable after " + cu_.ErrorName(fault.result) +
              ": the CUDA driver keeps that error for the rest of the process (" + problem + ")" +
              (config_.own_process ? std::string()
                                   : std::string("; restart atolld to use the GPU again"));
      std::fprintf(stderr, "atoll cuda backend: %s\n", lost_.c_str());
    }
    recovering_ = false;
    recovering_flag_.store(false);
    recovery_requested_.store(0);
  }
  state_changed_.notify_all();
  for (Outcome& outcome : outcomes) Complete(&outcome);
}

}  // namespace atl::cuda
