/*
 * Atoll C client API.
 *
 * A program allocates buffers that the daemon can read and write without copying (atoll_alloc),
 * describes one call of an accelerator as a request (atoll_request_*), submits it to the local
 * `atolld` (atoll_submit) and waits for its response (atoll_response_*).
 *
 * Thread safety: every function may be called from any thread. One request or response handle
 * must not be used by two threads at once, except atoll_response_cancel, which may race with a
 * wait.
 *
 * Errors: functions that return atoll_status_code return ATOLL_OK (0) on success; on failure they
 * also set errno to the closest POSIX value and record a message for atoll_last_error(). Functions
 * that return a pointer return NULL on failure and do the same.
 */
#ifndef ATOLL_ATOLL_H_
#define ATOLL_ATOLL_H_

#include <stddef.h>
#include <stdint.h>

#include "atoll/status.h"

#if defined(ATOLL_BUILDING_LIBRARY)
#define ATOLL_EXPORT __attribute__((visibility("default")))
#else
#define ATOLL_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* atoll_status_code: canonical status codes, shared with backends and kernels. */

/* The name of a status code ("INVALID_ARGUMENT"); never NULL. */
ATOLL_EXPORT const char* atoll_status_name(atoll_status_code code);

/* The message of the last failed call on this thread; "" if none. Valid until the next call. */
ATOLL_EXPORT const char* atoll_last_error(void);

/* ---- Buffers ---------------------------------------------------------------------------------
 * Memory shared with the daemon. Only ranges inside such buffers can be passed as array arguments.
 * Contents are zero-filled on allocation. */

/* Allocates `size_bytes` (a size of 0 allocates a minimal buffer). NULL with errno ENOMEM or the
 * error of memfd_create/mmap on failure. */
ATOLL_EXPORT void* atoll_alloc(size_t size_bytes);

/* Like realloc(3): keeps the contents up to the smaller size; the old pointer becomes invalid on
 * success. `ptr` NULL allocates. A size of 0 frees and returns NULL. On failure returns NULL with
 * errno set, and `ptr` stays valid. */
ATOLL_EXPORT void* atoll_realloc(void* ptr, size_t size_bytes);

/* Frees a buffer from atoll_alloc/atoll_realloc. NULL is ignored. Requests already submitted that
 * use the buffer still complete: the daemon keeps its own mapping until they end. */
ATOLL_EXPORT void atoll_free(void* ptr);

/* ---- Requests -------------------------------------------------------------------------------- */

typedef struct atoll_request_s* atoll_request;
typedef struct atoll_response_s* atoll_response;

/* Argument index meaning "after the highest index set so far". */
#define ATOLL_ARG_NEXT 0xFFFFFFFFu

/* Creates a request for accelerator id `accelerator` (e.g. "vector.addition"). */
ATOLL_EXPORT atoll_request atoll_request_create(const char* accelerator);

/* Sets argument `index` to `size_bytes` bytes of an Atoll buffer starting at `value`. The range
 * must lie inside one buffer from atoll_alloc. Setting an index twice replaces the argument. */
ATOLL_EXPORT atoll_status_code atoll_request_arg_array(atoll_request request, size_t size_bytes,
                                                       const void* value, uint32_t index);

/* Largest scalar argument; larger data travels in a buffer. */
#define ATOLL_MAX_SCALAR_BYTES 4096

/* Sets argument `index` to a copy of `size_bytes` bytes at `value` (at most
 * ATOLL_MAX_SCALAR_BYTES). */
ATOLL_EXPORT atoll_status_code atoll_request_arg_scalar(atoll_request request, size_t size_bytes,
                                                        const void* value, uint32_t index);

/* The request fails with ATOLL_DEADLINE_EXCEEDED if it has not completed `timeout_ms` after
 * submission; 0 (the default) means no deadline. */
ATOLL_EXPORT atoll_status_code atoll_request_set_timeout(atoll_request request,
                                                         uint64_t timeout_ms);

/* Priorities order the queued requests of one tenant (a user, see docs/scheduling.md): higher
 * first, first come first served within a priority; they never take device time from other
 * tenants. A request waiting long enough rises in priority, so none waits forever. */
#define ATOLL_PRIORITY_MIN (-1000)
#define ATOLL_PRIORITY_MAX 1000

/* Sets the request's priority, from ATOLL_PRIORITY_MIN to ATOLL_PRIORITY_MAX; 0 (the default) is
 * normal. ATOLL_INVALID_ARGUMENT outside that range. */
ATOLL_EXPORT atoll_status_code atoll_request_set_priority(atoll_request request, int priority);

/* Writes a one-line description ("vector.addition(a: array 4096 B, ...)") into `str`, like
 * snprintf: returns the length it needed, or -1 with errno on error. */
ATOLL_EXPORT int atoll_request_snprint(char* str, size_t size, atoll_request request);

/* Releases a request; responses of submitted requests are independent of it. NULL is ignored. */
ATOLL_EXPORT void atoll_request_release(atoll_request request);

/* Submits a request to the daemon. On success `*response` receives a handle the caller releases.
 * Connects on first use to $ATOLL_SOCKET, else ATOLL_DEFAULT_SOCKET. The request may be reused or
 * released right after this returns. Returns ATOLL_UNAVAILABLE if the daemon is not running,
 * ATOLL_INVALID_ARGUMENT for arguments that cannot be sent (a freed buffer, a gap in indices). */
ATOLL_EXPORT atoll_status_code atoll_submit(atoll_request request, atoll_response* response);

/* Blocks until the request completes; returns its status (ATOLL_OK when outputs are written). */
ATOLL_EXPORT atoll_status_code atoll_response_wait(atoll_response response);

/* Like atoll_response_wait but gives up after `timeout_ms`, returning ATOLL_DEADLINE_EXCEEDED with
 * errno ETIMEDOUT while the request goes on; wait again to get its status. */
ATOLL_EXPORT atoll_status_code atoll_response_wait_for(atoll_response response,
                                                       uint64_t timeout_ms);

/* Asks the daemon to cancel the request. A queued request never runs and completes with
 * ATOLL_CANCELLED; a running one completes as it ends. Returns at once. */
ATOLL_EXPORT atoll_status_code atoll_response_cancel(atoll_response response);

/* Non-zero once the request has completed. */
ATOLL_EXPORT int atoll_response_done(atoll_response response);

/* The completed request's status and message ("" on success). Call after a wait succeeded in
 * completing; the message stays valid until the response is released. */
ATOLL_EXPORT atoll_status_code atoll_response_status(atoll_response response);
ATOLL_EXPORT const char* atoll_response_message(atoll_response response);

/* Releases a response. Releasing one that has not completed does not cancel the request. */
ATOLL_EXPORT void atoll_response_release(atoll_response response);

/* The socket the daemon listens on when ATOLL_SOCKET is unset. */
#define ATOLL_DEFAULT_SOCKET "/run/atoll/atolld.sock"

#ifdef __cplusplus
}
#endif

#endif /* ATOLL_ATOLL_H_ */
