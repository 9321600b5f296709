// InAccel Coral's C++ API on Atoll: shared memory (inaccel/shm.hpp) and requests
// (inaccel/rpc.hpp).
//
// Programs written for Coral include <inaccel/coral> (or this header) and build unchanged from
// C++11 on; they link libatoll instead of libcoral-api and reach the local atolld ($ATOLL_SOCKET,
// else /run/atoll/atolld.sock).
#ifndef INACCEL_CORAL_HPP  // Coral's guard name, so code that tests for it still sees the header.
#define INACCEL_CORAL_HPP

#include "inaccel/rpc.hpp"
#include "inaccel/shm.hpp"

#endif  // INACCEL_CORAL_HPP
