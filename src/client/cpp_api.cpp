#include "atoll/atoll.hpp"
#include "client/handles.h"
#include "client/request.h"

namespace atoll {

namespace {

[[noreturn]] void Throw(const Status& status) {
  throw error(static_cast<atoll_status_code>(status.code()), status.message());
}

atoll_request Create(const std::string& accelerator) {
  atoll_request handle = atoll_request_create(accelerator.c_str());
  if (handle == nullptr) Throw(Status(Code::kInvalidArgument, atoll_last_error()));
  return handle;
}

}  // namespace

// The C++ API goes through the C functions so both share one implementation of argument handling.
request::request(const std::string& accelerator)
    : accelerator_(accelerator), handle_(Create(accelerator)) {}

request::request(const request& other) : accelerator_(other.accelerator_) {
  handle_ = Create(accelerator_);
  handle_->request = other.handle_->request;
}

request& request::operator=(const request& other) {
  if (this != &other) {
    request copy(other);
    *this = std::move(copy);
  }
  return *this;
}

request::request(request&& other) noexcept
    : accelerator_(std::move(other.accelerator_)), handle_(std::exchange(other.handle_, nullptr)) {}

request& request::operator=(request&& other) noexcept {
  if (this != &other) {
    atoll_request_release(handle_);
    accelerator_ = std::move(other.accelerator_);
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

request::~request() { atoll_request_release(handle_); }

request& request::arg_scalar(uint32_t index, const void* value, std::size_t size_bytes) {
  if (atoll_request_arg_scalar(handle_, size_bytes, value, index) != ATOLL_OK) {
    Throw(Status(Code::kInvalidArgument, atoll_last_error()));
  }
  return *this;
}

request& request::arg_array_bytes(uint32_t index, const void* data, std::size_t size_bytes) {
  if (atoll_request_arg_array(handle_, size_bytes, data, index) != ATOLL_OK) {
    Throw(Status(Code::kInvalidArgument, atoll_last_error()));
  }
  return *this;
}

request& request::timeout_ms(uint64_t ms) {
  if (atoll_request_set_timeout(handle_, ms) != ATOLL_OK) {
    Throw(Status(Code::kInvalidArgument, atoll_last_error()));
  }
  return *this;
}

std::string request::to_string() const {
  return handle_->request.Describe();
}

std::future<void> submit(const request& r) {
  std::future<void> future;
  auto state = r.handle()->request.Submit(true, &future);
  if (!state.ok()) Throw(state.status());
  return future;
}

}  // namespace atoll
