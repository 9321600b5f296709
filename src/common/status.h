// Status and StatusOr: how every internal function reports failure. The codes are the canonical
// ones of atoll_status_code, so a Status crosses the socket and the C API unchanged.
// Thread safety: values; safe to copy between threads.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>

#include "atoll/atoll.h"

namespace atl {

enum class Code : int {
  kOk = ATOLL_OK,
  kCancelled = ATOLL_CANCELLED,
  kUnknown = ATOLL_UNKNOWN,
  kInvalidArgument = ATOLL_INVALID_ARGUMENT,
  kDeadlineExceeded = ATOLL_DEADLINE_EXCEEDED,
  kNotFound = ATOLL_NOT_FOUND,
  kAlreadyExists = ATOLL_ALREADY_EXISTS,
  kPermissionDenied = ATOLL_PERMISSION_DENIED,
  kResourceExhausted = ATOLL_RESOURCE_EXHAUSTED,
  kFailedPrecondition = ATOLL_FAILED_PRECONDITION,
  kAborted = ATOLL_ABORTED,
  kOutOfRange = ATOLL_OUT_OF_RANGE,
  kUnimplemented = ATOLL_UNIMPLEMENTED,
  kInternal = ATOLL_INTERNAL,
  kUnavailable = ATOLL_UNAVAILABLE,
  kDataLoss = ATOLL_DATA_LOSS,
  kUnauthenticated = ATOLL_UNAUTHENTICATED,
};

// "INVALID_ARGUMENT" for kInvalidArgument; "UNKNOWN" for values out of range.
const char* CodeName(Code code);
// Maps any integer from the wire or an ABI to a Code; out-of-range values become kUnknown.
Code CodeFromInt(int value);
// The errno value closest to a code, for the C APIs that report through errno.
int CodeToErrno(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "INVALID_ARGUMENT: argument 2 ..."; "OK" when ok.
  std::string ToString() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status OkStatus() { return Status(); }
inline Status InvalidArgumentError(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
inline Status NotFoundError(std::string m) { return {Code::kNotFound, std::move(m)}; }
inline Status InternalError(std::string m) { return {Code::kInternal, std::move(m)}; }
inline Status UnavailableError(std::string m) { return {Code::kUnavailable, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) {
  return {Code::kFailedPrecondition, std::move(m)};
}
inline Status PermissionDeniedError(std::string m) {
  return {Code::kPermissionDenied, std::move(m)};
}
inline Status OutOfRangeError(std::string m) { return {Code::kOutOfRange, std::move(m)}; }
inline Status ResourceExhaustedError(std::string m) {
  return {Code::kResourceExhausted, std::move(m)};
}
inline Status AlreadyExistsError(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
inline Status UnimplementedError(std::string m) { return {Code::kUnimplemented, std::move(m)}; }

// Errno-based failure of a system call: "what: strerror(errno)", with a code chosen from errno.
Status ErrnoError(const std::string& what, int errno_value);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status status) : status_(std::move(status)) { assert(!status_.ok()); }  // NOLINT
  StatusOr(T value) : value_(std::move(value)) {}                                  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace atl

#define ATOLL_RETURN_IF_ERROR(expr)      \
  do {                                   \
    ::atl::Status status__ = (expr);     \
    if (!status__.ok()) return status__; \
  } while (0)

#define ATOLL_CONCAT_INNER_(a, b) a##b
#define ATOLL_CONCAT_(a, b) ATOLL_CONCAT_INNER_(a, b)
#define ATOLL_ASSIGN_OR_RETURN(lhs, expr) \
  ATOLL_ASSIGN_OR_RETURN_IMPL_(ATOLL_CONCAT_(statusor__, __LINE__), lhs, expr)
#define ATOLL_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
