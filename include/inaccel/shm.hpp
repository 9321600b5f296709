// Coral-compatible shared memory for C++: inaccel::allocator, inaccel::vector and, from C++17,
// inaccel::pmr::resource().
//
//   inaccel::vector<float> a(n);                             // accelerators use it in place
//   std::pmr::vector<float> b(n, inaccel::pmr::resource());  // the same, through std::pmr
//
// Programs written for InAccel's Coral API include this header (usually through <inaccel/coral>)
// and build unchanged against Atoll, from C++11 on. All memory comes from atoll_alloc.
//
// Thread safety: allocators and the memory resource are stateless and may be used from any thread.
#ifndef INACCEL_SHM_HPP  // Coral's guard name, so code that tests for it still sees the header.
#define INACCEL_SHM_HPP

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>
#include <vector>

#if __cplusplus >= 201703L && defined(__has_include)
#if __has_include(<memory_resource>)
#include <memory_resource>
#endif
#endif

#include "inaccel/shm.h"

namespace inaccel {

// Allocates from inaccel_alloc. Stateless: all instances are equal. It derives from std::allocator
// as Coral's does, so code that converts it to std::allocator<T> still compiles; every member a
// container uses is redefined here so none of the base's operator new paths is ever taken.
template <typename T>
class allocator : public std::allocator<T> {
 public:
  typedef T* pointer;
  typedef std::size_t size_type;
  typedef T value_type;
  typedef std::true_type is_always_equal;
  typedef std::true_type propagate_on_container_move_assignment;

  template <typename U>
  struct rebind {
    typedef inaccel::allocator<U> other;
  };

  allocator() noexcept = default;
  allocator(const allocator&) noexcept = default;
  // Converting, as node-based containers need to rebind.
  template <typename U>
  allocator(const allocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  allocator& operator=(const allocator&) noexcept = default;

  // Throws std::bad_alloc when shared memory cannot be allocated. The hint is ignored.
  pointer allocate(size_type n, const void* /*hint*/ = nullptr) {
    if (n > std::numeric_limits<size_type>::max() / sizeof(T)) throw std::bad_array_new_length();
    pointer p = static_cast<pointer>(inaccel_alloc(n * sizeof(T)));
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }

#if defined(__cpp_lib_allocate_at_least)
  // Hides std::allocator's version, which would hand out operator new memory.
  std::allocation_result<T*, std::size_t> allocate_at_least(std::size_t n) {
    return {allocate(n), n};
  }
#endif

  void deallocate(pointer p, size_type /*n*/) noexcept { inaccel_free(p); }

  template <typename U>
  bool operator==(const allocator<U>&) const noexcept {
    return true;
  }
  template <typename U>
  bool operator!=(const allocator<U>&) const noexcept {
    return false;
  }
};

// Coral's C functions under C++ names.
inline void* alloc(std::size_t size) { return inaccel_alloc(size); }
inline void free(void* ptr) { inaccel_free(ptr); }
inline void* realloc(void* ptr, std::size_t size) { return inaccel_realloc(ptr, size); }

// A std::vector in shared memory: request.arg(v) passes it to the accelerator without a copy.
template <typename T>
using vector = std::vector<T, inaccel::allocator<T>>;

#if defined(__cpp_lib_memory_resource)
namespace pmr {

// A std::pmr::memory_resource over inaccel_alloc: one shared-memory block per allocation, at least
// page-aligned.
class memory_resource : public std::pmr::memory_resource {
 private:
  void* do_allocate(std::size_t bytes, std::size_t alignment) override {
    void* p = inaccel_alloc(bytes);
    if (p == nullptr) throw std::bad_alloc();
    // Blocks are page-aligned; an alignment beyond that cannot be honoured.
    if (reinterpret_cast<std::uintptr_t>(p) % alignment != 0) {
      inaccel_free(p);
      throw std::bad_alloc();
    }
    return p;
  }

  void do_deallocate(void* p, std::size_t /*bytes*/, std::size_t /*alignment*/) override {
    inaccel_free(p);
  }

  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override {
    return this == &other || dynamic_cast<const memory_resource*>(&other) != nullptr;
  }
};

// The process-wide resource. It is never destroyed, so containers with static storage duration
// can still release their memory through it during exit.
inline std::pmr::memory_resource* resource() noexcept {
  alignas(memory_resource) static unsigned char storage[sizeof(memory_resource)];
  static memory_resource* const instance = ::new (static_cast<void*>(storage)) memory_resource();
  return instance;
}

}  // namespace pmr
#endif

}  // namespace inaccel

#endif  // INACCEL_SHM_HPP
