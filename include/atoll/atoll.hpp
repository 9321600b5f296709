// Atoll C++ client API.
//
//   atoll::vector<float> a(n), b(n), c(n);
//   atoll::request r("vector.addition");
//   r.arg(a).arg(b).arg(c).arg(n);
//   atoll::submit(r).get();  // throws atoll::error on failure
//
// Thread safety: many threads may submit at once. A request object is a value: do not modify one
// from two threads at once. Futures may be waited on from any thread.
#ifndef ATOLL_ATOLL_HPP_
#define ATOLL_ATOLL_HPP_

#include <cstddef>
#include <cstdint>
#include <future>
#include <limits>
#include <memory>
#include <new>
#include <ostream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "atoll/atoll.h"

// `atoll` is a struct rather than a namespace because the C library already declares a function
// ::atoll (stdlib.h), and a namespace may not share a name with it. Qualified names like
// atoll::vector still work, since lookup before `::` ignores functions; `using namespace atoll`
// does not, so write the prefix.
struct ATOLL_EXPORT atoll {
  atoll() = delete;

  // A failed call: the status code and the daemon's or library's message.
  class ATOLL_EXPORT error : public std::runtime_error {
   public:
    error(atoll_status_code code, const std::string& message)
        : std::runtime_error(std::string(atoll_status_name(code)) + ": " + message), code_(code) {}
    atoll_status_code code() const noexcept { return code_; }

   private:
    atoll_status_code code_;
  };

  // Allocates from memory shared with the daemon (atoll_alloc). Stateless: all instances are
  // equal.
  template <typename T>
  class allocator {
   public:
    using value_type = T;

    allocator() noexcept = default;
    template <typename U>
    allocator(const allocator<U>&) noexcept {}  // NOLINT: converting, as the standard requires

    T* allocate(std::size_t n) {
      if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) {
        throw std::bad_array_new_length();
      }
      void* p = atoll_alloc(n * sizeof(T));
      if (p == nullptr) throw std::bad_alloc();
      return static_cast<T*>(p);
    }
    void deallocate(T* p, std::size_t) noexcept { atoll_free(p); }

    template <typename U>
    bool operator==(const allocator<U>&) const noexcept {
      return true;
    }
  };

  template <typename T>
  using vector = std::vector<T, allocator<T>>;

  // One call of an accelerator. Arguments are numbered from 0; arg() without an index appends
  // after the highest index set so far. Methods throw atoll::error for arguments that cannot be
  // passed (memory outside Atoll buffers, oversized scalars).
  class ATOLL_EXPORT request {
   public:
    explicit request(const std::string& accelerator);
    request(const request& other);
    request& operator=(const request& other);
    request(request&&) noexcept;
    request& operator=(request&&) noexcept;
    ~request();

    // An Atoll vector: passed as an array of its whole contents.
    template <typename T>
    request& arg(const vector<T>& v) {
      return arg_array(v.data(), v.data() + v.size());
    }
    template <typename T>
    request& arg(uint32_t index, const vector<T>& v) {
      return arg_array(index, v.data(), v.data() + v.size());
    }
    // A trivially copyable value: passed as a scalar.
    template <typename T,
              typename = std::enable_if_t<std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>>>
    request& arg(const T& value) {
      return arg_scalar(&value, sizeof(T));
    }
    template <typename T,
              typename = std::enable_if_t<std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>>>
    request& arg(uint32_t index, const T& value) {
      return arg_scalar(index, &value, sizeof(T));
    }

    // [first, last) of memory inside one Atoll buffer.
    template <typename T>
    request& arg_array(const T* first, const T* last) {
      return arg_array_bytes(ATOLL_ARG_NEXT, first, (last - first) * sizeof(T));
    }
    template <typename T>
    request& arg_array(uint32_t index, const T* first, const T* last) {
      return arg_array_bytes(index, first, (last - first) * sizeof(T));
    }
    request& arg_scalar(const void* value, std::size_t size_bytes) {
      return arg_scalar(ATOLL_ARG_NEXT, value, size_bytes);
    }
    request& arg_scalar(uint32_t index, const void* value, std::size_t size_bytes);
    request& arg_array_bytes(uint32_t index, const void* data, std::size_t size_bytes);

    // Fails the request with DEADLINE_EXCEEDED if it has not completed this long after submit.
    request& timeout_ms(uint64_t ms);
    // Order among this user's queued requests: higher first, ATOLL_PRIORITY_MIN to
    // ATOLL_PRIORITY_MAX (default 0). Throws atoll::error outside that range.
    request& priority(int priority);

    const std::string& accelerator() const { return accelerator_; }
    // One line: "vector.addition(0: array 4096 B, 1: ..., 3: scalar 4 B)".
    std::string to_string() const;
    atoll_request handle() const { return handle_; }

    friend std::ostream& operator<<(std::ostream& os, const request& r) {
      return os << r.to_string();
    }

   private:
    std::string accelerator_;
    atoll_request handle_ = nullptr;
  };

  // Submits `r` to the daemon. The future's get() returns once the outputs are written, or
  // throws atoll::error. Throws atoll::error at once if the request cannot be sent (daemon not
  // running, a buffer freed since the argument was set).
  static std::future<void> submit(const request& r);

  // Submits `r` and waits for it in the calling thread: submit(r).get() without the future. The
  // caller polls for the response for $ATOLL_SPIN_US microseconds (by default 100 on hosts with
  // more than 2 cores) before it sleeps, where a future's get() sleeps at once and pays a thread
  // wake-up: the lowest latency for one request at a time. Throws atoll::error on failure.
  static void call(const request& r);
};

#endif  // ATOLL_ATOLL_HPP_
