// OpenCL error codes as names and as Atoll status codes.
#pragma once

#include <CL/cl.h>

#include <string>

namespace atl::opencl {

// "CL_OUT_OF_RESOURCES", or "OpenCL error -9999" for a code this table does not know.
std::string ErrorName(cl_int code);

// The atoll_status_code a failing OpenCL call maps to: CL_INVALID_KERNEL_NAME is NOT_FOUND, a lost
// or exhausted device UNAVAILABLE, host or device memory RESOURCE_EXHAUSTED, a binary, build
// option, argument or work size that does not fit INVALID_ARGUMENT, anything else INTERNAL.
int StatusOf(cl_int code);

// True for the codes after which a device cannot be trusted with more work.
bool MeansDeviceLost(cl_int code);

}  // namespace atl::opencl
