// A request being built: the accelerator id and its arguments by index. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "client/connection.h"
#include "common/status.h"

namespace atl::client {

// Scalars larger than this must travel in a buffer.
inline constexpr size_t kMaxScalarBytes = ATOLL_MAX_SCALAR_BYTES;

class Request {
 public:
  explicit Request(std::string accelerator) : accelerator_(std::move(accelerator)) {}

  // INVALID_ARGUMENT when the range is not inside one Atoll buffer.
  Status SetArray(uint32_t index, const void* data, size_t size_bytes);
  // INVALID_ARGUMENT for a null value with a non-zero size or more than kMaxScalarBytes.
  Status SetScalar(uint32_t index, const void* value, size_t size_bytes);
  void set_timeout_us(uint64_t us) { timeout_us_ = us; }
  void set_priority(int32_t priority) { priority_ = priority; }

  // Resolves the arguments again (a buffer may have been freed since) and sends the request.
  StatusOr<std::shared_ptr<ResponseState>> Submit(bool with_future,
                                                  std::future<void>* future) const;

  // "vector.addition(0: array 4096 B, 1: array 4096 B, 2: array 4096 B, 3: scalar 4 B)".
  std::string Describe() const;
  const std::string& accelerator() const { return accelerator_; }

 private:
  struct Arg {
    bool is_array = false;
    const void* data = nullptr;
    size_t size_bytes = 0;
    std::string scalar;
  };
  uint32_t NextIndex() const;

  std::string accelerator_;
  std::map<uint32_t, Arg> args_;
  uint64_t timeout_us_ = 0;
  int32_t priority_ = 0;
};

}  // namespace atl::client
