/*
 * InAccel Coral's C API on Atoll: shared memory (inaccel/shm.h) and requests (inaccel/rpc.h).
 *
 * Programs written for Coral include this header and build unchanged; they link libatoll instead
 * of libcoral-api and reach the local atolld ($ATOLL_SOCKET, else /run/atoll/atolld.sock). Every
 * function is inline over the Atoll C API, so no other library is needed. Compiles as C11 and C++.
 */
#ifndef INACCEL_CORAL_H /* Coral's guard name, so code that tests for it still sees the header. */
#define INACCEL_CORAL_H

#include "inaccel/rpc.h"
#include "inaccel/shm.h"

#endif /* INACCEL_CORAL_H */
