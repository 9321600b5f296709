#include "atoll/atoll.hpp"
#include "client/handles.h"
#include "client/request.h"

// The C++ API goes through the C handle so both APIs share one implementation of argument
// handling.
namespace {

[[noreturn]] void Throw(const atl::Status& status) {
  throw atoll::error(static_cast<atoll_status_code>(status.code()), status.message());
}

// Argument errors are reported with the code the C API gave them.
[[noreturn]] void ThrowLast(atoll_status_code code) {
  throw atoll::error(code, atoll_last_error());
}

atoll_request Create(const std::string& accelerator) {
  atoll_request handle = atoll_request_create(accelerator.c_str());
  if (handle == nullptr) ThrowLast(ATOLL_INVALID_ARGUMENT);
  return handle;
}

}  // namespace

atoll::request::request(const std::string& accelerator)
    : accelerator_(accelerator), handle_(Create(accelerator)) {}

atoll::request::request(const request& other) : accelerator_(other.accelerator_) {
  handle_ = Create(accelerator_);
  handle_->request = other.handle_->request;
}

atoll::request& atoll::request::operator=(const request& other) {
  if (this != &other) {
    request copy(other);
    *this = std::move(copy);
  }
  return *this;
}

atoll::request::request(request&& other) noexcept
    : accelerator_(std::move(other.accelerator_)), handle_(std::exchange(other.handle_, nullptr)) {}

atoll::request& atoll::request::operator=(request&& other) noexcept {
  if (this != &other) {
    atoll_request_release(handle_);
    accelerator_ = std::move(other.accelerator_);
    handle_ = std::exchange(other.handle_, nullptr);
  }
  return *this;
}

atoll::request::~request() { atoll_request_release(handle_); }

atoll::request& atoll::request::arg_scalar(uint32_t index, const void* value,
                                           std::size_t size_bytes) {
  atoll_status_code rc = atoll_request_arg_scalar(handle_, size_bytes, value, index);
  if (rc != ATOLL_OK) ThrowLast(rc);
  return *this;
}

atoll::request& atoll::request::arg_array_bytes(uint32_t index, const void* data,
                                                std::size_t size_bytes) {
  atoll_status_code rc = atoll_request_arg_array(handle_, size_bytes, data, index);
  if (rc != ATOLL_OK) ThrowLast(rc);
  return *this;
}

atoll::request& atoll::request::timeout_ms(uint64_t ms) {
  atoll_status_code rc = atoll_request_set_timeout(handle_, ms);
  if (rc != ATOLL_OK) ThrowLast(rc);
  return *this;
}

atoll::request& atoll::request::priority(int priority) {
  atoll_status_code rc = atoll_request_set_priority(handle_, priority);
  if (rc != ATOLL_OK) ThrowLast(rc);
  return *this;
}

std::string atoll::request::to_string() const { return handle_->request.Describe(); }

std::future<void> atoll::submit(const request& r) {
  std::future<void> future;
  auto state = r.handle()->request.Submit(true, &future);
  if (!state.ok()) Throw(state.status());
  return future;
}

void atoll::call(const request& r) {
  auto state = r.handle()->request.Submit(false, nullptr);
  if (!state.ok()) Throw(state.status());
  (*state)->Wait();
  if (!(*state)->status().ok()) Throw((*state)->status());
}
