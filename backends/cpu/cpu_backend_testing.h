// Test helpers that drive the cpu backend plugin exactly as atolld does: dlopen, the
// atoll_backend_get_v1 entry point, then the table's functions. Header-only; used by the backend's
// and the bundled accelerators' tests.
#pragma once

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>

#include "atoll/atoll.h"
#include "atoll/backend.h"

namespace atl::cpu::testing {

// The plugin's table, loaded with dlopen as the daemon loads it. Unloaded on destruction.
class Plugin {
 public:
  explicit Plugin(const char* path) {
    handle_ = dlopen(path, RTLD_NOW | RTLD_LOCAL);
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

// An opened backend, closed on destruction unless Close was called.
class OpenBackend {
 public:
  OpenBackend(const atoll_backend_v1* table, const char* config) : table_(table) {
    char error[512] = "";
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

  // Programs device 0 with `path` and looks up `name`; fails the test on error.
  void* Kernel(const char* path, const char* name) {
    char error[512] = "";
    void* program = nullptr;
    EXPECT_EQ(table_->program(backend_, 0, path, "", &program, error, sizeof(error)), ATOLL_OK)
        << error;
    if (program == nullptr) return nullptr;
    void* kernel = nullptr;
    EXPECT_EQ(table_->kernel(backend_, program, name, nullptr, 0, &kernel, error, sizeof(error)),
              ATOLL_OK)
        << error;
    return kernel;
  }

 private:
  const atoll_backend_v1* table_;
  void* backend_ = nullptr;
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
  bool Wait(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
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

// Launches on device 0 and waits; returns the status given to `done` (or launch's own error),
// with the message in `message`.
inline int LaunchAndWait(const atoll_backend_v1* table, void* backend, void* kernel,
                         const atoll_backend_arg_v1* args, uint32_t arg_count,
                         std::string* message = nullptr, uint32_t compute_unit = 0) {
  Completion completion;
  char error[512] = "";
  int status = table->launch(backend, 0, compute_unit, kernel, args, arg_count, nullptr,
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

}  // namespace atl::cpu::testing
