/*
 * Atoll's canonical status codes: the same numbers on the wire, in the C and C++ client APIs, in
 * the backend ABI and in cpu kernels. Plain C; no functions, so backends and kernels can include
 * it without linking anything.
 */
#ifndef ATOLL_STATUS_H_
#define ATOLL_STATUS_H_

typedef enum atoll_status_code {
  ATOLL_OK = 0,
  ATOLL_CANCELLED = 1,
  ATOLL_UNKNOWN = 2,
  ATOLL_INVALID_ARGUMENT = 3,
  ATOLL_DEADLINE_EXCEEDED = 4,
  ATOLL_NOT_FOUND = 5,
  ATOLL_ALREADY_EXISTS = 6,
  ATOLL_PERMISSION_DENIED = 7,
  ATOLL_RESOURCE_EXHAUSTED = 8,
  ATOLL_FAILED_PRECONDITION = 9,
  ATOLL_ABORTED = 10,
  ATOLL_OUT_OF_RANGE = 11,
  ATOLL_UNIMPLEMENTED = 12,
  ATOLL_INTERNAL = 13,
  ATOLL_UNAVAILABLE = 14,
  ATOLL_DATA_LOSS = 15,
  ATOLL_UNAUTHENTICATED = 16
} atoll_status_code;

#endif /* ATOLL_STATUS_H_ */
