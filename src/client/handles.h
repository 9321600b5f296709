// The C API's opaque handles, shared by the C and C++ API implementations.
#pragma once

#include <memory>

#include "atoll/atoll.h"
#include "client/connection.h"
#include "client/request.h"

struct atoll_request_s {
  atl::client::Request request;
};

struct atoll_response_s {
  std::shared_ptr<atl::client::ResponseState> state;
};
