/*
 * Coral-compatible shared memory for C: inaccel_alloc, inaccel_realloc and inaccel_free.
 *
 * Programs written for InAccel's Coral API include this header (usually through
 * <inaccel/coral.h>) and build unchanged against Atoll. Each function is a thin inline layer over
 * the Atoll C API (atoll/atoll.h), so linking libatoll is all a program needs.
 *
 * Thread safety: every function may be called from any thread.
 *
 * Differences from Coral, all within what Coral documents:
 *  - inaccel_alloc(0) returns a minimal buffer instead of NULL; as in Coral, it must not be
 *    dereferenced.
 *  - Buffers are never write-protected while a request runs. Coral made the host block on writes
 *    to a buffer in flight; with Atoll, writing to an argument before the response completes
 *    races with the accelerator, so wait for the response first.
 */
#ifndef INACCEL_SHM_H /* Coral's guard name, so code that tests for it still sees the header. */
#define INACCEL_SHM_H

#include <stddef.h>

#include "atoll/atoll.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Allocates `size` zero-filled bytes that accelerators can read and write without a copy. Returns
 * NULL with errno set on failure. Only memory from here (or inaccel_realloc) can be passed to
 * inaccel_request_arg_array. */
static inline void* inaccel_alloc(size_t size) { return atoll_alloc(size); }

/* Frees a block from inaccel_alloc or inaccel_realloc; NULL is ignored. A request already submitted
 * with the block still completes. */
static inline void inaccel_free(void* ptr) { atoll_free(ptr); }

/* Resizes a block, keeping its contents up to the smaller size; the block may move. `ptr` NULL
 * behaves as inaccel_alloc; `size` 0 frees the block and returns NULL. On failure returns NULL with
 * errno set and leaves the block as it was. */
static inline void* inaccel_realloc(void* ptr, size_t size) { return atoll_realloc(ptr, size); }

#ifdef __cplusplus
}
#endif

#endif /* INACCEL_SHM_H */
