// Test helpers that drive the cuda backend plugin exactly as atolld does: dlopen, the
// atoll_backend_get_v1 entry point, then the table's functions. Header-only.
#pragma once

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "atoll/backend.h"
#include "atoll/status.h"

namespace atl::cuda::testing {

// The plugin's table, loaded with dlopen as the daemon loads it (and, as the daemon, never
// unloaded: the CUDA driver's threads may outlive a test).
class Plugin {
 public:
  explicit Plugin(const char* path) {
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      ADD_FAILURE() << "dlopen " << path << ": " << dlerror();
      return;
    }
    auto get = reinterpret_cast<atoll_backend_get_v1_fn>(dlsym(handle, ATOLL_BACKEND_ENTRY_V1));
    if (get == nullptr) {
      ADD_FAILURE() << path << " exports no " << ATOLL_BACKEND_ENTRY_V1;
      return;
    }
    table_ = get();
  }
  const atoll_backend_v1* table() const { return table_; }

 private:
  const atoll_backend_v1* table_ = nullptr;
};

// One launch's completion: `done` records the call and wakes Wait.
struct Completion {
  std::mutex mutex;
  std::condition_variable changed;
  int calls = 0;
  int status = -1;
  std::string message;

  static void Done(void* user, int status, const char* message) {
    auto* self = static_cast<Completion*>(user);
    std::lock_guard<std::mutex> lock(self->mutex);
    ++self->calls;
    self->status = status;
    self->message = message;
    self->changed.notify_all();
  }

  // True when `done` was called within the timeout.
  bool Wait(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    std::unique_lock<std::mutex> lock(mutex);
    return changed.wait_for(lock, timeout, [this] { return calls > 0; });
  }
};

inline atoll_backend_arg_v1 Array(void* data, uint64_t size_bytes, const char* type,
                                  uint32_t access = ATOLL_BACKEND_ACCESS_READ_WRITE) {
  return {ATOLL_BACKEND_ARG_ARRAY, access, type, data, size_bytes};
}

template <typename T>
atoll_backend_arg_v1 Scalar(const T& value, const char* type) {
  return {ATOLL_BACKEND_ARG_SCALAR, 0, type, const_cast<T*>(&value), sizeof(T)};
}

inline atoll_backend_geometry_v1 Geometry(uint32_t dims = 0, uint64_t x = 0, uint64_t y = 0,
                                          uint32_t local_x = 0, uint32_t local_y = 0) {
  atoll_backend_geometry_v1 g{};
  g.dims = dims;
  g.global[0] = x;
  g.global[1] = y;
  g.local[0] = local_x;
  g.local[1] = local_y;
  return g;
}

// An opened backend, closed on destruction unless Close was called.
class OpenBackend {
 public:
  OpenBackend(const atoll_backend_v1* table, const char* config) : table_(table) {
    char error[1024] = "";
    int status = table_->open(config, &backend_, error, sizeof(error));
    EXPECT_EQ(status, ATOLL_OK) << error;
  }
  ~OpenBackend() { Close(); }
  OpenBackend(const OpenBackend&) = delete;
  OpenBackend& operator=(const OpenBackend&) = delete;

  void* get() const { return backend_; }
  void Close() {
    if (backend_ != nullptr) table_->close(backend_);
    backend_ = nullptr;
  }
  uint32_t devices() const { return backend_ != nullptr ? table_->device_count(backend_) : 0; }

  // Why device 0 does not exist, from device_info's error ("" if it does).
  std::string NoDeviceReason() const {
    atoll_backend_device_info_v1 info{};
    info.struct_size = sizeof(info);
    char error[2048] = "";
    if (table_->device_info(backend_, 0, &info, error, sizeof(error)) == ATOLL_OK) return "";
    return error;
  }

  // Loads `path` on `device`; returns the status and the program or the message.
  int Program(const std::string& path, void** program, std::string* message,
              const char* build_options = "", uint32_t device = 0) {
    char error[8192] = "";
    int status = table_->program(backend_, device, path.c_str(), build_options, program, error,
                                 sizeof(error));
    *message = error;
    return status;
  }

  int Kernel(void* program, const char* name, const std::vector<const char*>& types, void** kernel,
             std::string* message) {
    char error[4096] = "";
    int status = table_->kernel(backend_, program, name, types.data(),
                                static_cast<uint32_t>(types.size()), kernel, error, sizeof(error));
    *message = error;
    return status;
  }

  // Programs `device` with `path` and looks up `name`; fails the test on error.
  void* MustKernel(const std::string& path, const char* name, const std::vector<const char*>& types,
                   uint32_t device = 0) {
    void* program = nullptr;
    std::string message;
    EXPECT_EQ(Program(path, &program, &message, "", device), ATOLL_OK) << message;
    if (program == nullptr) return nullptr;
    void* kernel = nullptr;
    EXPECT_EQ(Kernel(program, name, types, &kernel, &message), ATOLL_OK) << message;
    return kernel;
  }

  // Starts a launch on `device`; returns launch's own status (done is called only on success).
  int Start(void* kernel, const std::vector<atoll_backend_arg_v1>& args,
            const atoll_backend_geometry_v1& geometry, Completion* completion,
            uint32_t compute_unit = 0, std::string* message = nullptr, uint32_t device = 0) {
    char error[4096] = "";
    int status = table_->launch(backend_, device, compute_unit, kernel, args.data(),
                                static_cast<uint32_t>(args.size()), &geometry, Completion::Done,
                                completion, error, sizeof(error));
    if (message != nullptr) *message = error;
    return status;
  }

  // Launches on `device` and waits; returns the status given to `done` (or launch's own error),
  // with the message in `message`.
  int Run(void* kernel, const std::vector<atoll_backend_arg_v1>& args,
          const atoll_backend_geometry_v1& geometry, std::string* message = nullptr,
          uint32_t compute_unit = 0, uint32_t device = 0) {
    Completion completion;
    std::string error;
    int status = Start(kernel, args, geometry, &completion, compute_unit, &error, device);
    if (status != ATOLL_OK) {
      if (message != nullptr) *message = error;
      return status;
    }
    EXPECT_TRUE(completion.Wait()) << "done was not called";
    std::lock_guard<std::mutex> lock(completion.mutex);
    EXPECT_EQ(completion.calls, 1);
    if (message != nullptr) *message = completion.message;
    return completion.status;
  }

 private:
  const atoll_backend_v1* table_;
  void* backend_ = nullptr;
};

}  // namespace atl::cuda::testing
