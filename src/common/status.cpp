#include "common/status.h"

#include <cerrno>
#include <cstring>

namespace atl {

namespace {
constexpr const char* kNames[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};
}  // namespace

const char* CodeName(Code code) {
  int i = static_cast<int>(code);
  if (i < 0 || i >= static_cast<int>(std::size(kNames))) return "UNKNOWN";
  return kNames[i];
}

Code CodeFromInt(int value) {
  if (value < 0 || value >= static_cast<int>(std::size(kNames))) return Code::kUnknown;
  return static_cast<Code>(value);
}

int CodeToErrno(Code code) {
  switch (code) {
    case Code::kOk:
      return 0;
    case Code::kCancelled:
      return ECANCELED;
    case Code::kInvalidArgument:
      return EINVAL;
    case Code::kDeadlineExceeded:
      return ETIMEDOUT;
    case Code::kNotFound:
      return ENOENT;
    case Code::kAlreadyExists:
      return EEXIST;
    case Code::kPermissionDenied:
      return EACCES;
    case Code::kResourceExhausted:
      return ENOMEM;
    case Code::kFailedPrecondition:
      return EINVAL;
    case Code::kAborted:
      return ECONNABORTED;
    case Code::kOutOfRange:
      return ERANGE;
    case Code::kUnimplemented:
      return ENOSYS;
    case Code::kUnavailable:
      return ECONNREFUSED;
    case Code::kDataLoss:
      return EIO;
    case Code::kUnauthenticated:
      return EACCES;
    default:
      return EIO;
  }
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(CodeName(code_)) + ": " + message_;
}

Status ErrnoError(const std::string& what, int errno_value) {
  Code code = Code::kInternal;
  switch (errno_value) {
    case ENOENT:
      code = Code::kNotFound;
      break;
    case EACCES:
    case EPERM:
      code = Code::kPermissionDenied;
      break;
    case EEXIST:
      code = Code::kAlreadyExists;
      break;
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case ENOSPC:
      code = Code::kResourceExhausted;
      break;
    case EINVAL:
      code = Code::kInvalidArgument;
      break;
    case ECONNREFUSED:
    case ECONNRESET:
    case EPIPE:
    case EAGAIN:
      code = Code::kUnavailable;
      break;
    case ETIMEDOUT:
      code = Code::kDeadlineExceeded;
      break;
    default:
      break;
  }
  return Status(code, what + ": " + std::strerror(errno_value));
}

}  // namespace atl
