#include "client/request.h"

namespace atl::client {

uint32_t Request::NextIndex() const { return args_.empty() ? 0 : args_.rbegin()->first + 1; }

Status Request::SetArray(uint32_t index, const void* data, size_t size_bytes) {
  if (index == ATOLL_ARG_NEXT) index = NextIndex();
  auto range = FindRange(data, size_bytes);
  if (!range.ok()) {
    return InvalidArgumentError(accelerator_ + ": argument " + std::to_string(index) + ": " +
                                range.status().message());
  }
  Arg arg;
  arg.is_array = true;
  arg.data = data;
  arg.size_bytes = size_bytes;
  args_[index] = std::move(arg);
  return OkStatus();
}

Status Request::SetScalar(uint32_t index, const void* value, size_t size_bytes) {
  if (index == ATOLL_ARG_NEXT) index = NextIndex();
  if (value == nullptr && size_bytes != 0) {
    return InvalidArgumentError(accelerator_ + ": argument " + std::to_string(index) +
                                ": scalar value is a null pointer");
  }
  if (size_bytes > kMaxScalarBytes) {
    return InvalidArgumentError(accelerator_ + ": argument " + std::to_string(index) +
                                ": scalar of " + std::to_string(size_bytes) +
                                " bytes is larger than the " + std::to_string(kMaxScalarBytes) +
                                "-byte limit; pass it in an Atoll buffer as an array");
  }
  Arg arg;
  arg.scalar.assign(static_cast<const char*>(value), size_bytes);
  arg.size_bytes = size_bytes;
  args_[index] = std::move(arg);
  return OkStatus();
}

StatusOr<std::shared_ptr<ResponseState>> Request::Submit(bool with_future,
                                                         std::future<void>* future) const {
  std::vector<ArgumentValue> values;
  values.reserve(args_.size());
  uint32_t expected = 0;
  for (const auto& [index, arg] : args_) {
    if (index != expected) {
      return InvalidArgumentError(accelerator_ + ": argument " + std::to_string(expected) +
                                  " is missing (arguments must be numbered 0, 1, 2, ... without "
                                  "gaps; the next one set is " +
                                  std::to_string(index) + ")");
    }
    ++expected;
    ArgumentValue value;
    value.index = index;
    value.is_array = arg.is_array;
    value.size_bytes = arg.size_bytes;
    if (arg.is_array) {
      auto range = FindRange(arg.data, arg.size_bytes);
      if (!range.ok()) {
        return InvalidArgumentError(accelerator_ + ": argument " + std::to_string(index) + ": " +
                                    range.status().message());
      }
      value.range = std::move(range).value();
    } else {
      value.scalar = arg.scalar;
    }
    values.push_back(std::move(value));
  }
  auto state = std::make_shared<ResponseState>();
  if (with_future) *future = state->MakeFuture();
  ATOLL_RETURN_IF_ERROR(
      Connection::Default().Submit(accelerator_, values, timeout_us_, state, priority_));
  return state;
}

std::string Request::Describe() const {
  std::string out = accelerator_ + "(";
  bool first = true;
  for (const auto& [index, arg] : args_) {
    if (!first) out += ", ";
    first = false;
    out += std::to_string(index) + ": ";
    if (arg.is_array) {
      out += "array " + std::to_string(arg.size_bytes) + " B";
    } else {
      out += "scalar " + std::to_string(arg.size_bytes) + " B";
    }
  }
  return out + ")";
}

}  // namespace atl::client
