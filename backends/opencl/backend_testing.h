// Test helpers that drive any backend plugin exactly as atolld does: dlopen, the
// atoll_backend_get_v1 entry point, then the table's functions (ABI version 2: build options,
// the manifest's argument types, a launch geometry). Header-only; used by the opencl backend's
// tests and by the bundled accelerators' tests on every backend.
#pragma once

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <string>
#include <vector>

#include "atoll/backend.h"

namespace atl::backend_testing {

// The plugin's table, loaded with dlopen as the daemon loads it. The library stays mapped after
// destruction (RTLD_NODELETE), as a daemon's backends stay for its whole life: unmapping the
// opencl plugin would unmap the ICD loader too, and LeakSanitizer could then no longer see that
// the loader's own allocations are still referenced.
class Plugin {
 public:
  explicit Plugin(const char* path) {
    handle_ = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (handle_ == nullptr) {
      ADD_FAILURE() << "dlopen " << path << ": " << dlerror();
      return;
    }
    auto get = reinterpret_cast<atoll_backend_get_v1_fn>(dlsym(handle_, ATOLL_BACKEND_ENTRY_V1));
    if (get == nullptr) {
      ADD_FAILURE() << path << " exports no " << ATOLL_BACKEND_ENTRY_V1;
      return;
    }
    table_ = get();
  }
  ~Plugin() {
    if (handle_ != nullptr) dlclose(handle_);
  }
  Plugin(const Plugin&) = delete;
  Plugin& operator=(const Plugin&) = delete;

  const atoll_backend_v1* table() const { return table_; }

 private:
  void* handle_ = nullptr;
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
  bool Wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
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

// A geometry: Geometry() is one work-item; Geometry({n}, {64}) an NDRange of n in groups of 64.
inline atoll_backend_geometry_v1 Geometry(std::initializer_list<uint64_t> global = {},
                                          std::initializer_list<uint32_t> local = {}) {
  atoll_backend_geometry_v1 geometry{};
  geometry.dims = static_cast<uint32_t>(global.size());
  uint32_t d = 0;
  for (uint64_t g : global) geometry.global[d++] = g;
  d = 0;
  for (uint32_t l : local) geometry.local[d++] = l;
  return geometry;
}

// The types of `args`, as the daemon passes the manifest's to kernel().
inline std::vector<const char*> TypesOf(const std::vector<atoll_backend_arg_v1>& args) {
  std::vector<const char*> types;
  for (const auto& arg : args) types.push_back(arg.type);
  return types;
}

// An opened backend, closed on destruction unless Close was called.
class OpenBackend {
 public:
  OpenBackend(const atoll_backend_v1* table, const char* config) : table_(table) {
    if (table_ == nullptr) return;
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

  // Programs `device` with `path` and returns the status, with the program or the message.
  int Program(const char* path, void** program, std::string* message, uint32_t device = 0,
              const char* build_options = "") {
    char error[1024] = "";
    *program = nullptr;
    int status =
        table_->program(backend_, device, path, build_options, program, error, sizeof(error));
    if (message != nullptr) *message = error;
    return status;
  }

  // Looks up `name` in `program` with the manifest's argument `types`; returns the status.
  int FindKernel(void* program, const char* name, const std::vector<const char*>& types,
                 void** kernel, std::string* message) {
    char error[1024] = "";
    *kernel = nullptr;
    int status = table_->kernel(backend_, program, name, types.data(),
                                static_cast<uint32_t>(types.size()), kernel, error, sizeof(error));
    if (message != nullptr) *message = error;
    return status;
  }

  // Programs `device` with `path` and looks up `name`; fails the test on error.
  void* Kernel(const char* path, const char* name, const std::vector<const char*>& types,
               uint32_t device = 0, const char* build_options = "") {
    std::string message;
    void* program = nullptr;
    EXPECT_EQ(Program(path, &program, &message, device, build_options), ATOLL_OK) << message;
    if (program == nullptr) return nullptr;
    void* kernel = nullptr;
    EXPECT_EQ(FindKernel(program, name, types, &kernel, &message), ATOLL_OK) << message;
    return kernel;
  }

 private:
  const atoll_backend_v1* table_;
  void* backend_ = nullptr;
};

// Launches and waits; returns the status given to `done` (or launch's own error), with the
// message in `message`.
inline int LaunchAndWait(const atoll_backend_v1* table, void* backend, void* kernel,
                         const atoll_backend_arg_v1* args, uint32_t arg_count,
                         const atoll_backend_geometry_v1& geometry, std::string* message = nullptr,
                         uint32_t compute_unit = 0, uint32_t device = 0) {
  Completion completion;
  char error[1024] = "";
  int status = table->launch(backend, device, compute_unit, kernel, args, arg_count, &geometry,
                             Completion::Done, &completion, error, sizeof(error));
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

}  // namespace atl::backend_testing
