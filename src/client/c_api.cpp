// The C API: a thin layer over client::Request and client::Connection that turns Status into
// return codes, errno and a thread-local message. No exception escapes.
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "atoll/atoll.h"
#include "client/buffer_table.h"
#include "client/connection.h"
#include "client/handles.h"
#include "client/request.h"

using atl::Code;
using atl::Status;

namespace {

thread_local std::string last_error;

atoll_status_code Fail(const Status& status) {
  last_error = status.message();
  errno = atl::CodeToErrno(status.code());
  return static_cast<atoll_status_code>(status.code());
}

atoll_status_code Succeed() {
  last_error.clear();
  return ATOLL_OK;
}

template <typename F>
atoll_status_code Guard(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Fail(atl::ResourceExhaustedError("out of memory"));
  } catch (const std::exception& e) {
    return Fail(atl::InternalError(e.what()));
  }
}

}  // namespace

extern "C" {

const char* atoll_status_name(atoll_status_code code) {
  return atl::CodeName(static_cast<Code>(code));
}

const char* atoll_last_error(void) { return last_error.c_str(); }

void* atoll_alloc(size_t size_bytes) {
  try {
    auto buffer = atl::client::AllocateBuffer(size_bytes);
    if (!buffer.ok()) {
      Fail(buffer.status());
      return nullptr;
    }
    Succeed();
    return (*buffer)->base;
  } catch (const std::bad_alloc&) {
    Fail(atl::ResourceExhaustedError("out of memory"));
    return nullptr;
  }
}

void atoll_free(void* ptr) {
  if (ptr == nullptr) return;
  int saved = errno;
  auto buffer = atl::client::ReleaseBuffer(ptr);
  if (buffer.ok()) atl::client::Connection::Default().ForgetBuffer((*buffer)->id);
  errno = saved;
}

void* atoll_realloc(void* ptr, size_t size_bytes) {
  if (ptr == nullptr) return atoll_alloc(size_bytes);
  if (size_bytes == 0) {
    atoll_free(ptr);
    return nullptr;
  }
  auto old = atl::client::FindBufferAt(ptr);
  if (!old.ok()) {
    Fail(atl::InvalidArgumentError("atoll_realloc: " + old.status().message()));
    return nullptr;
  }
  // The daemon may hold the old mapping for requests in flight, so the memory is never moved in
  // place: a new buffer keeps both sides consistent.
  void* fresh = atoll_alloc(size_bytes);
  if (fresh == nullptr) return nullptr;
  std::memcpy(fresh, ptr, std::min(size_bytes, (*old)->size_bytes));
  atoll_free(ptr);
  return fresh;
}

atoll_request atoll_request_create(const char* accelerator) {
  if (accelerator == nullptr || accelerator[0] == '\0') {
    Fail(atl::InvalidArgumentError("accelerator id is empty: name one, e.g. \"vector.addition\""));
    return nullptr;
  }
  try {
    Succeed();
    return new atoll_request_s{atl::client::Request(accelerator)};
  } catch (const std::bad_alloc&) {
    Fail(atl::ResourceExhaustedError("out of memory"));
    return nullptr;
  }
}

atoll_status_code atoll_request_arg_array(atoll_request request, size_t size_bytes,
                                          const void* value, uint32_t index) {
  if (request == nullptr) return Fail(atl::InvalidArgumentError("request is NULL"));
  return Guard([&] {
    Status s = request->request.SetArray(index, value, size_bytes);
    return s.ok() ? Succeed() : Fail(s);
  });
}

atoll_status_code atoll_request_arg_scalar(atoll_request request, size_t size_bytes,
                                           const void* value, uint32_t index) {
  if (request == nullptr) return Fail(atl::InvalidArgumentError("request is NULL"));
  return Guard([&] {
    Status s = request->request.SetScalar(index, value, size_bytes);
    return s.ok() ? Succeed() : Fail(s);
  });
}

atoll_status_code atoll_request_set_timeout(atoll_request request, uint64_t timeout_ms) {
  if (request == nullptr) return Fail(atl::InvalidArgumentError("request is NULL"));
  if (timeout_ms > UINT64_MAX / 1000) {
    return Fail(
        atl::InvalidArgumentError("timeout of " + std::to_string(timeout_ms) + " ms is too large"));
  }
  request->request.set_timeout_us(timeout_ms * 1000);
  return Succeed();
}

atoll_status_code atoll_request_set_priority(atoll_request request, int priority) {
  if (request == nullptr) return Fail(atl::InvalidArgumentError("request is NULL"));
  if (priority < ATOLL_PRIORITY_MIN || priority > ATOLL_PRIORITY_MAX) {
    return Fail(atl::InvalidArgumentError(
        "priority " + std::to_string(priority) + " is out of range: use " +
        std::to_string(ATOLL_PRIORITY_MIN) + " to " + std::to_string(ATOLL_PRIORITY_MAX)));
  }
  request->request.set_priority(priority);
  return Succeed();
}

int atoll_request_snprint(char* str, size_t size, atoll_request request) {
  if (request == nullptr) {
    Fail(atl::InvalidArgumentError("request is NULL"));
    return -1;
  }
  try {
    std::string text = request->request.Describe();
    if (str != nullptr && size > 0) {
      size_t n = std::min(size - 1, text.size());
      std::memcpy(str, text.data(), n);
      str[n] = '\0';
    }
    Succeed();
    return static_cast<int>(text.size());
  } catch (const std::bad_alloc&) {
    Fail(atl::ResourceExhaustedError("out of memory"));
    return -1;
  }
}

void atoll_request_release(atoll_request request) { delete request; }

atoll_status_code atoll_submit(atoll_request request, atoll_response* response) {
  if (request == nullptr || response == nullptr) {
    return Fail(atl::InvalidArgumentError("request or response pointer is NULL"));
  }
  return Guard([&] {
    auto state = request->request.Submit(false, nullptr);
    if (!state.ok()) return Fail(state.status());
    *response = new atoll_response_s{std::move(state).value()};
    return Succeed();
  });
}

static atoll_status_code Finished(atoll_response response) {
  const Status& s = response->state->status();
  if (s.ok()) return Succeed();
  last_error = s.message();
  errno = atl::CodeToErrno(s.code());
  return static_cast<atoll_status_code>(s.code());
}

atoll_status_code atoll_response_wait(atoll_response response) {
  if (response == nullptr) return Fail(atl::InvalidArgumentError("response is NULL"));
  response->state->Wait();
  return Finished(response);
}

atoll_status_code atoll_response_wait_for(atoll_response response, uint64_t timeout_ms) {
  if (response == nullptr) return Fail(atl::InvalidArgumentError("response is NULL"));
  if (!response->state->WaitFor(timeout_ms)) {
    last_error = "the request did not complete within " + std::to_string(timeout_ms) + " ms";
    errno = ETIMEDOUT;
    return ATOLL_DEADLINE_EXCEEDED;
  }
  return Finished(response);
}

atoll_status_code atoll_response_cancel(atoll_response response) {
  if (response == nullptr) return Fail(atl::InvalidArgumentError("response is NULL"));
  atl::client::Connection::Default().Cancel(response->state->request_id);
  return Succeed();
}

int atoll_response_done(atoll_response response) {
  return response != nullptr && response->state->done() ? 1 : 0;
}

atoll_status_code atoll_response_status(atoll_response response) {
  if (response == nullptr || !response->state->done()) return ATOLL_UNKNOWN;
  return static_cast<atoll_status_code>(response->state->status().code());
}

const char* atoll_response_message(atoll_response response) {
  if (response == nullptr || !response->state->done()) return "";
  return response->state->status().message().c_str();
}

void atoll_response_release(atoll_response response) { delete response; }

}  // extern "C"
