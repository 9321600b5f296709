/*
 * Coral-compatible requests for C: describe one call of an accelerator (inaccel_request), submit
 * it (inaccel_submit) and wait for its response (inaccel_response).
 *
 *   inaccel_request request = inaccel_request_create("vector.addition");
 *   inaccel_request_arg_array(request, n * sizeof(float), a, 0);   (a from inaccel_alloc)
 *   ...
 *   inaccel_request_arg_scalar(request, sizeof(int), &n, 3);
 *   inaccel_response response = inaccel_response_create();
 *   inaccel_submit(request, response);
 *   inaccel_response_wait(response);   (0, the request's status, or -1 with errno)
 *
 * Every function is inline over the Atoll C API (atoll/atoll.h): linking libatoll is all a program
 * needs. Status codes are the canonical ones that Coral reports (0 OK, 3 INVALID_ARGUMENT, 5
 * NOT_FOUND, 14 UNAVAILABLE, ...), and they equal atoll_status_code values.
 *
 * Thread safety: different handles may be used from different threads at once. One request or
 * response must not be used by two threads at once; in particular, unlike Coral, two threads must
 * not wait on the same response concurrently.
 *
 * Differences from Coral:
 *  - inaccel_submit reports a request that could not be delivered (the daemon is not running, an
 *    argument it cannot send) through the response, as Coral's asynchronous gRPC call did: it
 *    returns 0, and inaccel_response_wait returns the status (14 for UNAVAILABLE) with the reason
 *    in inaccel_response_fprint. It returns -1 only for invalid handles.
 *  - A scalar larger than Atoll's inline limit (4096 bytes) travels as a private copy in shared
 *    memory, so it reaches the accelerator as an array: Coral programs pass host arrays by value
 *    this way.
 *  - The request printout names an array by its address and size; Coral printed its internal
 *    buffer id, offset and version, which Atoll does not have.
 */
#ifndef INACCEL_RPC_H /* Coral's guard name, so code that tests for it still sees the header. */
#define INACCEL_RPC_H

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atoll/atoll.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The handles, with Coral's struct tags. The structs are defined below only because every function
 * is inline; programs must treat them as opaque. */
typedef struct _inaccel_request* inaccel_request;
typedef struct _inaccel_response* inaccel_response;

/* Sets argument `index` (0 for the leftmost) to `size` bytes of memory from inaccel_alloc starting
 * at `value`; the accelerator reads and writes that memory in place. Setting an index twice
 * replaces the argument. Returns 0, or -1 with errno: EINVAL for a NULL request, a size of 0 or an
 * index past the argument limit; EADDRNOTAVAIL if the range is not inside one block from
 * inaccel_alloc; ENOMEM. */
static inline int inaccel_request_arg_array(inaccel_request request, size_t size, const void* value,
                                            unsigned index);

/* Sets argument `index` to a copy of the `size` bytes at `value`, taken now: later changes to
 * `value` do not reach the request. Returns 0, or -1 with errno (EINVAL, ENOMEM). */
static inline int inaccel_request_arg_scalar(inaccel_request request, size_t size,
                                             const void* value, unsigned index);

/* Creates a request for accelerator `accelerator` ("bitstreamId.kernelId"). Returns NULL with errno
 * set on failure (EINVAL for NULL). Release it with inaccel_request_release. */
static inline inaccel_request inaccel_request_create(const char* accelerator);

/* Writes the request as YAML:
 *   ---
 *   vector.addition:
 *   - array:
 *       address: 0x7F2A5C000000
 *       size: 4096
 *   - scalar:
 *       bytes: 0x00040000
 * ("- {}" for an index never set, " []" after the name when there are no arguments; no final
 * newline). fprint returns the number of characters written, or a negative number with errno;
 * snprint works like snprintf: it returns the length the whole text needs and writes at most
 * `n` - 1 characters and a terminating NUL to `s`. */
static inline int inaccel_request_fprint(FILE* stream, const inaccel_request request);
static inline int inaccel_request_snprint(char* s, size_t n, const inaccel_request request);

/* Releases a request. Responses of requests already submitted are independent of it and still
 * complete. NULL is ignored. */
static inline void inaccel_request_release(inaccel_request request);

/* Creates a response to pass to one inaccel_submit. Returns NULL with errno ENOMEM on failure. */
static inline inaccel_response inaccel_response_create(void);

/* Writes the status of a completed response in Coral's words, followed by the reason when there is
 * one: "Ok", "Invalid argument: argument 2 ...", "Unavailable: ...". A response that has not
 * completed yet reads "Ok", as in Coral. Return values as for the request functions above. */
static inline int inaccel_response_fprint(FILE* stream, const inaccel_response response);
static inline int inaccel_response_snprint(char* s, size_t n, const inaccel_response response);

/* Releases a response. Releasing one that has not completed does not cancel its request. NULL is
 * ignored. */
static inline void inaccel_response_release(inaccel_response response);

/* Blocks until the request completes. Returns 0 when its outputs are written, the positive status
 * code when it failed, or -1 with errno EINVAL if `response` was never submitted. */
static inline int inaccel_response_wait(inaccel_response response);

/* Like inaccel_response_wait, but gives up after `sec` seconds and `nsec` nanoseconds, returning
 * -1 with errno ETIMEDOUT while the request goes on; wait again to get its status. A zero timeout
 * only polls. EINVAL if `nsec` is outside [0, 999999999]. */
static inline int inaccel_response_wait_for(inaccel_response response, time_t sec, long nsec);

/* Submits `request` to the daemon; `response` tracks it and must not have been submitted before.
 * The request may be changed, resubmitted or released as soon as this returns. Returns 0, or -1
 * with errno EINVAL for a NULL handle or a response already used. */
static inline int inaccel_submit(inaccel_request request, inaccel_response response);

/* ---- Implementation ------------------------------------------------------------------------- */

/* The highest argument index plus one; it bounds the memory a stray index can make us allocate. */
#define INACCEL_SHIM_MAX_ARGUMENTS 65536u
/* The largest scalar atoll_request_arg_scalar takes inline. */
#define INACCEL_SHIM_MAX_INLINE_SCALAR ((unsigned)ATOLL_MAX_SCALAR_BYTES)

/* Casts and null pointers that C++ compilers accept without -Wold-style-cast or
 * -Wzero-as-null-pointer-constant warnings, as the header is both C and C++. */
#ifdef __cplusplus
#define INACCEL_SHIM_CAST(type, value) static_cast<type>(value)
#define INACCEL_SHIM_REINTERPRET_CAST(type, value) reinterpret_cast<type>(value)
#define INACCEL_SHIM_NULL nullptr
#else
#define INACCEL_SHIM_CAST(type, value) ((type)(value))
#define INACCEL_SHIM_REINTERPRET_CAST(type, value) ((type)(value))
#define INACCEL_SHIM_NULL NULL
#endif

#if defined(__GNUC__)
#define INACCEL_SHIM_PRINTF(format_index, first_arg) \
  __attribute__((format(printf, format_index, first_arg)))
#else
#define INACCEL_SHIM_PRINTF(format_index, first_arg)
#endif

enum inaccel_shim_argument_kind {
  INACCEL_SHIM_UNSET = 0,
  INACCEL_SHIM_ARRAY = 1,
  INACCEL_SHIM_SCALAR = 2
};

/* What the request printout shows of one argument; the arguments themselves live in the
 * atoll_request. */
struct inaccel_shim_argument {
  enum inaccel_shim_argument_kind kind;
  size_t size;
  const void* address;  /* ARRAY: the caller's memory. */
  unsigned char* bytes; /* SCALAR: our copy of the value. */
  int bytes_shared;     /* The copy is an Atoll buffer sent as an array (a large scalar). */
};

struct _inaccel_request {
  atoll_request handle;
  char* accelerator;
  struct inaccel_shim_argument* arguments;
  unsigned count; /* The highest index set plus one. */
  unsigned capacity;
};

enum inaccel_shim_response_state {
  INACCEL_SHIM_CREATED = 0,
  INACCEL_SHIM_SUBMITTED = 1,
  INACCEL_SHIM_COMPLETED = 2
};

struct _inaccel_response {
  enum inaccel_shim_response_state state;
  atoll_response handle; /* NULL if the request was never delivered. */
  int status;            /* Valid once COMPLETED. */
  char* reason;          /* Why delivery failed, when handle is NULL. */
};

static inline char* inaccel_shim_strdup(const char* text) {
  size_t size = strlen(text) + 1;
  char* copy = INACCEL_SHIM_CAST(char*, malloc(size));
  if (copy == INACCEL_SHIM_NULL) {
    errno = ENOMEM;
    return INACCEL_SHIM_NULL;
  }
  memcpy(copy, text, size);
  return copy;
}

static inline void inaccel_shim_argument_clear(struct inaccel_shim_argument* argument) {
  if (argument->bytes_shared) {
    /* A request already submitted with this copy keeps it alive on the daemon's side. */
    atoll_free(argument->bytes);
  } else {
    free(argument->bytes);
  }
  memset(argument, 0, sizeof(*argument));
}

/* Makes room for argument `index`, so that recording it after Atoll accepted it cannot fail. */
static inline int inaccel_shim_reserve(inaccel_request request, unsigned index) {
  unsigned capacity;
  struct inaccel_shim_argument* arguments;
  if (index >= INACCEL_SHIM_MAX_ARGUMENTS) {
    errno = EINVAL;
    return -1;
  }
  if (index < request->capacity) return 0;
  capacity = request->capacity < 8 ? 8 : request->capacity;
  while (capacity <= index) capacity *= 2;
  arguments = INACCEL_SHIM_CAST(struct inaccel_shim_argument*,
                                realloc(request->arguments, capacity * sizeof(*arguments)));
  if (arguments == INACCEL_SHIM_NULL) {
    errno = ENOMEM;
    return -1;
  }
  memset(arguments + request->capacity, 0, (capacity - request->capacity) * sizeof(*arguments));
  request->arguments = arguments;
  request->capacity = capacity;
  return 0;
}

static inline void inaccel_shim_record(inaccel_request request, unsigned index,
                                       const struct inaccel_shim_argument* argument) {
  inaccel_shim_argument_clear(&request->arguments[index]);
  request->arguments[index] = *argument;
  if (index >= request->count) request->count = index + 1;
}

/* Sends `size` bytes at `value` by value, as a private shared-memory copy passed as an array: for
 * scalars too large to travel inline, and for the C++ shim's by-value vectors. Same contract as
 * inaccel_request_arg_scalar, except that `size` and `value` are not checked. */
static inline int inaccel_shim_arg_copy(inaccel_request request, size_t size, const void* value,
                                        unsigned index) {
  struct inaccel_shim_argument argument;
  unsigned char* copy;
  if (inaccel_shim_reserve(request, index) != 0) return -1;
  copy = INACCEL_SHIM_CAST(unsigned char*, atoll_alloc(size));
  if (copy == INACCEL_SHIM_NULL) return -1;
  memcpy(copy, value, size);
  if (atoll_request_arg_array(request->handle, size, copy, index) != ATOLL_OK) {
    int saved = errno;
    atoll_free(copy);
    errno = saved;
    return -1;
  }
  memset(&argument, 0, sizeof(argument));
  argument.kind = INACCEL_SHIM_SCALAR;
  argument.size = size;
  argument.bytes = copy;
  argument.bytes_shared = 1;
  inaccel_shim_record(request, index, &argument);
  return 0;
}

static inline int inaccel_request_arg_array(inaccel_request request, size_t size, const void* value,
                                            unsigned index) {
  struct inaccel_shim_argument argument;
  atoll_status_code status;
  if (request == INACCEL_SHIM_NULL || size == 0) {
    errno = EINVAL;
    return -1;
  }
  if (inaccel_shim_reserve(request, index) != 0) return -1;
  status = atoll_request_arg_array(request->handle, size, value, index);
  if (status != ATOLL_OK) {
    /* The handle, size and index are valid by now, so Atoll refused the range itself: Coral's
     * errno for memory outside its blocks. */
    if (status != ATOLL_RESOURCE_EXHAUSTED) errno = EADDRNOTAVAIL;
    return -1;
  }
  memset(&argument, 0, sizeof(argument));
  argument.kind = INACCEL_SHIM_ARRAY;
  argument.size = size;
  argument.address = value;
  inaccel_shim_record(request, index, &argument);
  return 0;
}

static inline int inaccel_request_arg_scalar(inaccel_request request, size_t size,
                                             const void* value, unsigned index) {
  struct inaccel_shim_argument argument;
  unsigned char* copy;
  if (request == INACCEL_SHIM_NULL || size == 0 || value == INACCEL_SHIM_NULL) {
    errno = EINVAL;
    return -1;
  }
  if (size > INACCEL_SHIM_MAX_INLINE_SCALAR) {
    return inaccel_shim_arg_copy(request, size, value, index);
  }
  if (inaccel_shim_reserve(request, index) != 0) return -1;
  copy = INACCEL_SHIM_CAST(unsigned char*, malloc(size));
  if (copy == INACCEL_SHIM_NULL) {
    errno = ENOMEM;
    return -1;
  }
  memcpy(copy, value, size);
  if (atoll_request_arg_scalar(request->handle, size, copy, index) != ATOLL_OK) {
    int saved = errno;
    free(copy);
    errno = saved;
    return -1;
  }
  memset(&argument, 0, sizeof(argument));
  argument.kind = INACCEL_SHIM_SCALAR;
  argument.size = size;
  argument.bytes = copy;
  inaccel_shim_record(request, index, &argument);
  return 0;
}

static inline inaccel_request inaccel_request_create(const char* accelerator) {
  inaccel_request request;
  if (accelerator == INACCEL_SHIM_NULL) {
    errno = EINVAL;
    return INACCEL_SHIM_NULL;
  }
  request = INACCEL_SHIM_CAST(inaccel_request, calloc(1, sizeof(*request)));
  if (request == INACCEL_SHIM_NULL) {
    errno = ENOMEM;
    return INACCEL_SHIM_NULL;
  }
  request->accelerator = inaccel_shim_strdup(accelerator);
  if (request->accelerator == INACCEL_SHIM_NULL) {
    free(request);
    return INACCEL_SHIM_NULL;
  }
  request->handle = atoll_request_create(accelerator);
  if (request->handle == INACCEL_SHIM_NULL) {
    int saved = errno;
    free(request->accelerator);
    free(request);
    errno = saved;
    return INACCEL_SHIM_NULL;
  }
  return request;
}

static inline void inaccel_request_release(inaccel_request request) {
  unsigned index;
  if (request == INACCEL_SHIM_NULL) return;
  atoll_request_release(request->handle);
  for (index = 0; index < request->count; ++index) {
    inaccel_shim_argument_clear(&request->arguments[index]);
  }
  free(request->arguments);
  free(request->accelerator);
  free(request);
}

/* Formats into a FILE, or like snprintf into a sized buffer, counting the length of the text. */
struct inaccel_shim_writer {
  FILE* stream; /* NULL: write into s. */
  char* s;
  size_t n;
  size_t length;
  int failed;
};

static inline INACCEL_SHIM_PRINTF(2, 3) void inaccel_shim_print(struct inaccel_shim_writer* writer,
                                                                const char* format, ...) {
  va_list args;
  int written;
  va_start(args, format);
  if (writer->stream != INACCEL_SHIM_NULL) {
    written = vfprintf(writer->stream, format, args);
  } else if (writer->length < writer->n) {
    written = vsnprintf(writer->s + writer->length, writer->n - writer->length, format, args);
  } else {
    written = vsnprintf(INACCEL_SHIM_NULL, 0, format, args);
  }
  va_end(args);
  if (written < 0) {
    writer->failed = 1;
  } else {
    writer->length += INACCEL_SHIM_CAST(size_t, written);
  }
}

static inline int inaccel_shim_finish(const struct inaccel_shim_writer* writer) {
  if (writer->failed) {
    if (errno == 0) errno = EIO;
    return -1;
  }
  if (writer->length > INT_MAX) {
    errno = EOVERFLOW;
    return -1;
  }
  return INACCEL_SHIM_CAST(int, writer->length);
}

static inline void inaccel_shim_print_request(struct inaccel_shim_writer* writer,
                                              inaccel_request request) {
  static const char kHex[] = "0123456789ABCDEF";
  char hex[129];
  unsigned index;
  size_t at, chunk, i;
  inaccel_shim_print(writer, "---\n%s:", request->accelerator);
  if (request->count == 0) inaccel_shim_print(writer, " []");
  for (index = 0; index < request->count && !writer->failed; ++index) {
    const struct inaccel_shim_argument* argument = &request->arguments[index];
    switch (argument->kind) {
      case INACCEL_SHIM_ARRAY:
        inaccel_shim_print(writer, "\n- array:\n    address: 0x%" PRIXPTR "\n    size: %zu",
                           INACCEL_SHIM_REINTERPRET_CAST(uintptr_t, argument->address),
                           argument->size);
        break;
      case INACCEL_SHIM_SCALAR:
        inaccel_shim_print(writer, "\n- scalar:\n    bytes: 0x");
        /* In chunks, so a large by-value array costs few formatted writes. */
        for (at = 0; at < argument->size && !writer->failed; at += chunk) {
          chunk = argument->size - at < 64 ? argument->size - at : 64;
          for (i = 0; i < chunk; ++i) {
            hex[2 * i] = kHex[argument->bytes[at + i] >> 4];
            hex[2 * i + 1] = kHex[argument->bytes[at + i] & 0xF];
          }
          hex[2 * chunk] = '\0';
          inaccel_shim_print(writer, "%s", hex);
        }
        break;
      case INACCEL_SHIM_UNSET:
      default:
        inaccel_shim_print(writer, "\n- {}");
        break;
    }
  }
}

static inline int inaccel_request_fprint(FILE* stream, const inaccel_request request) {
  struct inaccel_shim_writer writer;
  if (stream == INACCEL_SHIM_NULL || request == INACCEL_SHIM_NULL) {
    errno = EINVAL;
    return -1;
  }
  memset(&writer, 0, sizeof(writer));
  writer.stream = stream;
  inaccel_shim_print_request(&writer, request);
  return inaccel_shim_finish(&writer);
}

static inline int inaccel_request_snprint(char* s, size_t n, const inaccel_request request) {
  struct inaccel_shim_writer writer;
  if (request == INACCEL_SHIM_NULL || (s == INACCEL_SHIM_NULL && n != 0)) {
    errno = EINVAL;
    return -1;
  }
  memset(&writer, 0, sizeof(writer));
  writer.s = s;
  writer.n = n;
  inaccel_shim_print_request(&writer, request);
  return inaccel_shim_finish(&writer);
}

static inline inaccel_response inaccel_response_create(void) {
  inaccel_response response = INACCEL_SHIM_CAST(inaccel_response, calloc(1, sizeof(*response)));
  if (response == INACCEL_SHIM_NULL) errno = ENOMEM;
  return response;
}

static inline void inaccel_response_release(inaccel_response response) {
  if (response == INACCEL_SHIM_NULL) return;
  if (response->handle != INACCEL_SHIM_NULL) atoll_response_release(response->handle);
  free(response->reason);
  free(response);
}

static inline int inaccel_shim_complete(inaccel_response response, atoll_status_code status) {
  response->state = INACCEL_SHIM_COMPLETED;
  response->status = INACCEL_SHIM_CAST(int, status);
  return response->status;
}

static inline int inaccel_response_wait(inaccel_response response) {
  if (response == INACCEL_SHIM_NULL || response->state == INACCEL_SHIM_CREATED) {
    errno = EINVAL;
    return -1;
  }
  if (response->state == INACCEL_SHIM_SUBMITTED) {
    return inaccel_shim_complete(response, atoll_response_wait(response->handle));
  }
  return response->status;
}

static inline int inaccel_response_wait_for(inaccel_response response, time_t sec, long nsec) {
  /* Beyond this many seconds a deadline would overflow Atoll's clock arithmetic; it is forever. */
  const time_t kForever = INACCEL_SHIM_CAST(time_t, 1) << 30;
  atoll_status_code status;
  uint64_t timeout_ms;
  if (response == INACCEL_SHIM_NULL || response->state == INACCEL_SHIM_CREATED || nsec < 0 ||
      nsec > 999999999L) {
    errno = EINVAL;
    return -1;
  }
  if (response->state == INACCEL_SHIM_COMPLETED) return response->status;
  if (sec >= kForever) return inaccel_response_wait(response);
  /* Rounded up, so the wait never ends before the time asked for. */
  timeout_ms = sec <= 0 ? 0 : INACCEL_SHIM_CAST(uint64_t, sec) * 1000u;
  timeout_ms += (INACCEL_SHIM_CAST(uint64_t, nsec) + 999999u) / 1000000u;
  if (timeout_ms == 0) {
    if (!atoll_response_done(response->handle)) {
      errno = ETIMEDOUT;
      return -1;
    }
    return inaccel_shim_complete(response, atoll_response_wait(response->handle));
  }
  status = atoll_response_wait_for(response->handle, timeout_ms);
  if (status == ATOLL_DEADLINE_EXCEEDED) {
    /* Either the wait gave up or the request itself ran out of time: only done() tells. */
    if (!atoll_response_done(response->handle)) {
      errno = ETIMEDOUT;
      return -1;
    }
    status = atoll_response_wait(response->handle);
  }
  return inaccel_shim_complete(response, status);
}

static inline int inaccel_submit(inaccel_request request, inaccel_response response) {
  atoll_status_code status;
  if (request == INACCEL_SHIM_NULL || response == INACCEL_SHIM_NULL ||
      response->state != INACCEL_SHIM_CREATED) {
    errno = EINVAL;
    return -1;
  }
  status = atoll_submit(request->handle, &response->handle);
  if (status == ATOLL_OK) {
    response->state = INACCEL_SHIM_SUBMITTED;
    return 0;
  }
  /* Coral learnt of an undeliverable request only from its response; keep that contract. */
  response->handle = INACCEL_SHIM_NULL;
  response->reason = inaccel_shim_strdup(atoll_last_error());
  inaccel_shim_complete(response, status);
  return 0;
}

/* Coral's words for each status code, indexed by the code. */
static inline const char* inaccel_shim_status_text(int status) {
  static const char* const kText[] = {"Ok",
                                      "Cancelled",
                                      "Unknown",
                                      "Invalid argument",
                                      "Deadline exceeded",
                                      "Not found",
                                      "Already exists",
                                      "Permission denied",
                                      "Resource exhausted",
                                      "Failed precondition",
                                      "Aborted",
                                      "Out of range",
                                      "Unimplemented",
                                      "Internal",
                                      "Unavailable",
                                      "Data loss",
                                      "Unauthenticated"};
  if (status < 0 || INACCEL_SHIM_CAST(size_t, status) >= sizeof(kText) / sizeof(kText[0])) {
    return "Unknown";
  }
  return kText[status];
}

static inline void inaccel_shim_print_response(struct inaccel_shim_writer* writer,
                                               inaccel_response response) {
  const char* reason = INACCEL_SHIM_NULL;
  int status = 0;
  /* A request that finished without anyone waiting still shows its real status. */
  if (response->state == INACCEL_SHIM_SUBMITTED && atoll_response_done(response->handle)) {
    inaccel_shim_complete(response, atoll_response_wait(response->handle));
  }
  if (response->state == INACCEL_SHIM_COMPLETED) {
    status = response->status;
    reason = response->handle != INACCEL_SHIM_NULL ? atoll_response_message(response->handle)
                                                   : response->reason;
  }
  inaccel_shim_print(writer, "%s", inaccel_shim_status_text(status));
  if (reason != INACCEL_SHIM_NULL && reason[0] != '\0') inaccel_shim_print(writer, ": %s", reason);
}

static inline int inaccel_response_fprint(FILE* stream, const inaccel_response response) {
  struct inaccel_shim_writer writer;
  if (stream == INACCEL_SHIM_NULL || response == INACCEL_SHIM_NULL) {
    errno = EINVAL;
    return -1;
  }
  memset(&writer, 0, sizeof(writer));
  writer.stream = stream;
  inaccel_shim_print_response(&writer, response);
  return inaccel_shim_finish(&writer);
}

static inline int inaccel_response_snprint(char* s, size_t n, const inaccel_response response) {
  struct inaccel_shim_writer writer;
  if (response == INACCEL_SHIM_NULL || (s == INACCEL_SHIM_NULL && n != 0)) {
    errno = EINVAL;
    return -1;
  }
  memset(&writer, 0, sizeof(writer));
  writer.s = s;
  writer.n = n;
  inaccel_shim_print_response(&writer, response);
  return inaccel_shim_finish(&writer);
}

#ifdef __cplusplus
}
#endif

#endif /* INACCEL_RPC_H */
