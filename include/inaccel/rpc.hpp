// Coral-compatible requests for C++: inaccel::request, inaccel::submit and inaccel::exception.
//
//   inaccel::vector<float> a(n), b(n), c(n);
//   inaccel::request vadd("vector.addition");
//   vadd.arg(a).arg(b).arg(c).arg(n);
//   inaccel::submit(vadd).get();  // throws inaccel::exception if the request failed
//
// Programs written for InAccel's Coral API include this header (usually through <inaccel/coral>)
// and build unchanged against Atoll, from C++11 on. It is a layer over the Coral C API of
// inaccel/rpc.h, with Coral's conventions:
//  - arg(value) sets the next argument: a counter that starts at 0 and only arg()/arg_array()/
//    arg_scalar() without an index advance; the overloads with an index take it as their LAST
//    parameter and leave the counter alone.
//  - An inaccel::vector (or a range of one, or arg_array(first, last) over inaccel memory) is
//    passed in place; anything else is passed by value, copied when arg() is called: a
//    std::vector as its elements, any other value as its sizeof(T) bytes (so it should be
//    trivially copyable; like Coral, the shim does not check).
//  - Setting an argument that cannot be set throws std::runtime_error(strerror(errno)): for memory
//    that is not from inaccel_alloc, "Cannot assign requested address" (EADDRNOTAVAIL).
//  - submit() returns a deferred std::future, as Coral's does: get() and wait() block until the
//    request completes; wait_for() and wait_until() return std::future_status::deferred at once.
//    get() throws inaccel::exception with the response's text ("Not found: ...",
//    "Unavailable: ...") when the request failed, including when it could not be delivered.
//
// Beyond Coral: requests can be moved, and arg() also passes in place a std::vector whose allocator
// is neither std::allocator nor inaccel::allocator (a std::pmr::vector over
// inaccel::pmr::resource()), where Coral sent the vector object's own bytes.
//
// Thread safety: a request must not be used from two threads at once; different requests may be
// built and submitted concurrently. A future may be waited on from any one thread.
#ifndef INACCEL_RPC_HPP  // Coral's guard name, so code that tests for it still sees the header.
#define INACCEL_RPC_HPP

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <exception>
#include <future>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "inaccel/rpc.h"
#include "inaccel/shm.hpp"

namespace inaccel {

// A request that completed with a status other than OK. what() is the response's text, e.g.
// "Invalid argument: argument 3 ...".
class exception : public std::exception {
 public:
  explicit exception(const std::string& message) : message_(message) {}
  ~exception() noexcept override {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

class request;

// Submits `req`; it may be changed or destroyed as soon as this returns. Throws
// std::runtime_error only for a request that was moved from or when memory runs out; every other
// failure surfaces from the future's get().
std::future<void> submit(const inaccel::request& req);

// Writes the request as inaccel_request_fprint does. Throws std::runtime_error on failure.
std::ostream& operator<<(std::ostream& os, const inaccel::request& req);

class request {
 public:
  // Throws std::runtime_error if the request cannot be created.
  request(const std::string& accelerator)  // NOLINT(google-explicit-constructor): as in Coral.
      : handle_(inaccel_request_create(accelerator.c_str())) {
    if (handle_ == nullptr) throw_errno();
  }
  request(const request&) = delete;
  request& operator=(const request&) = delete;
  request(request&& other) noexcept : handle_(other.handle_), index_(other.index_) {
    other.handle_ = nullptr;
    other.index_ = 0;
  }
  request& operator=(request&& other) noexcept {
    if (this != &other) {
      inaccel_request_release(handle_);
      handle_ = other.handle_;
      index_ = other.index_;
      other.handle_ = nullptr;
      other.index_ = 0;
    }
    return *this;
  }
  ~request() { inaccel_request_release(handle_); }

  // A value passed by its bytes (an int, a float, a struct).
  template <typename T>
  request& arg(const T& value) {
    arg(value, index_);
    ++index_;
    return *this;
  }
  template <typename T>
  request& arg(const T& value, unsigned index) {
    return set_scalar(sizeof(T), &value, index);
  }

  // A std::vector: a copy of its elements, which the accelerator may read but not write back.
  template <typename T>
  request& arg(const std::vector<T>& value) {
    arg(value, index_);
    ++index_;
    return *this;
  }
  template <typename T>
  request& arg(const std::vector<T>& value, unsigned index) {
    return set_copy(value.size() * sizeof(T), value.data(), index);
  }
  // [first, last) of a std::vector, by copy. T cannot be deduced: call arg<float>(first, last).
  template <typename T>
  request& arg(const typename std::vector<T>::iterator& first,
               const typename std::vector<T>::iterator& last) {
    arg<T>(first, last, index_);
    ++index_;
    return *this;
  }
  template <typename T>
  request& arg(const typename std::vector<T>::iterator& first,
               const typename std::vector<T>::iterator& last, unsigned index) {
    return set_copy(static_cast<std::size_t>(last - first) * sizeof(T), &*first, index);
  }
  // [first, last) by value.
  template <typename T>
  request& arg_scalar(const T* first, const T* last) {
    arg_scalar(first, last, index_);
    ++index_;
    return *this;
  }
  template <typename T>
  request& arg_scalar(const T* first, const T* last, unsigned index) {
    return set_scalar(static_cast<std::size_t>(last - first) * sizeof(T), first, index);
  }

  // An inaccel::vector: in place, so the accelerator's writes land in it.
  template <typename T>
  request& arg(const inaccel::vector<T>& value) {
    arg(value, index_);
    ++index_;
    return *this;
  }
  template <typename T>
  request& arg(const inaccel::vector<T>& value, unsigned index) {
    return set_array(value.size() * sizeof(T), value.data(), index);
  }
  // [first, last) of an inaccel::vector, in place. T cannot be deduced: call arg<float>(...).
  template <typename T>
  request& arg(const typename inaccel::vector<T>::iterator& first,
               const typename inaccel::vector<T>::iterator& last) {
    arg<T>(first, last, index_);
    ++index_;
    return *this;
  }
  template <typename T>
  request& arg(const typename inaccel::vector<T>::iterator& first,
               const typename inaccel::vector<T>::iterator& last, unsigned index) {
    return set_array(static_cast<std::size_t>(last - first) * sizeof(T), &*first, index);
  }
  // [first, last) of memory from inaccel_alloc (or inaccel::pmr::resource()), in place.
  template <typename T>
  request& arg_array(const T* first, const T* last) {
    arg_array(first, last, index_);
    ++index_;
    return *this;
  }
  template <typename T>
  request& arg_array(const T* first, const T* last, unsigned index) {
    return set_array(static_cast<std::size_t>(last - first) * sizeof(T), first, index);
  }

  // A std::vector with any other allocator, in place: its memory must come from inaccel_alloc.
  template <typename T, typename Allocator>
  request& arg(const std::vector<T, Allocator>& value) {
    arg(value, index_);
    ++index_;
    return *this;
  }
  template <typename T, typename Allocator>
  request& arg(const std::vector<T, Allocator>& value, unsigned index) {
    return set_array(value.size() * sizeof(T), value.data(), index);
  }

 private:
  friend std::future<void> submit(const inaccel::request& req);
  friend std::ostream& operator<<(std::ostream& os, const inaccel::request& req);

  [[noreturn]] static void throw_errno() { throw std::runtime_error(std::strerror(errno)); }

  request& set_array(std::size_t size, const void* value, unsigned index) {
    if (inaccel_request_arg_array(handle_, size, value, index) != 0) throw_errno();
    return *this;
  }
  request& set_scalar(std::size_t size, const void* value, unsigned index) {
    if (inaccel_request_arg_scalar(handle_, size, value, index) != 0) throw_errno();
    return *this;
  }
  // By value, but always as a shared-memory copy: Atoll takes an array argument only as memory.
  request& set_copy(std::size_t size, const void* value, unsigned index) {
    if (handle_ == nullptr || size == 0 || value == nullptr) {
      errno = EINVAL;
      throw_errno();
    }
    if (inaccel_shim_arg_copy(handle_, size, value, index) != 0) throw_errno();
    return *this;
  }

  inaccel_request handle_;
  unsigned index_ = 0;
};

namespace detail {

struct response_release {
  void operator()(inaccel_response response) const noexcept { inaccel_response_release(response); }
};
typedef std::unique_ptr<std::remove_pointer<inaccel_response>::type, response_release> response_ptr;

// What get() runs: owns the response, so it is released whether or not anyone waits.
inline void wait(response_ptr response) {
  int status = inaccel_response_wait(response.get());
  if (status == -1) throw std::runtime_error(std::strerror(errno));
  if (status != 0) {
    int n = inaccel_response_snprint(nullptr, 0, response.get());
    if (n < 0) throw std::runtime_error(std::strerror(errno));
    std::string text(static_cast<std::size_t>(n) + 1, '\0');
    inaccel_response_snprint(&text[0], text.size(), response.get());
    text.resize(static_cast<std::size_t>(n));
    throw inaccel::exception(text);
  }
}

}  // namespace detail

inline std::future<void> submit(const inaccel::request& req) {
  detail::response_ptr response(inaccel_response_create());
  if (response == nullptr || inaccel_submit(req.handle_, response.get()) != 0) {
    throw std::runtime_error(std::strerror(errno));
  }
  return std::async(std::launch::deferred, &detail::wait, std::move(response));
}

inline std::ostream& operator<<(std::ostream& os, const inaccel::request& req) {
  int n = inaccel_request_snprint(nullptr, 0, req.handle_);
  if (n < 0) throw std::runtime_error(std::strerror(errno));
  std::string text(static_cast<std::size_t>(n) + 1, '\0');
  inaccel_request_snprint(&text[0], text.size(), req.handle_);
  text.resize(static_cast<std::size_t>(n));
  return os << text;
}

}  // namespace inaccel

#endif  // INACCEL_RPC_HPP
