// Fault injection for opencl_backend_test: the test executable defines clEnqueueNDRangeKernel, so
// the plugin (loaded later with dlopen) calls this wrapper, which forwards to the ICD loader
// unless a device is armed. Armed, it fails kernels on that device the way a driver does when its
// device falls off the bus: at once (the enqueue returns the error) or later (the kernel's event
// completes with the error). OpenCL offers no way to make a real device fail on demand.
#pragma once

#include <CL/cl.h>

namespace atl::opencl::testing {

enum class Fault {
  kNone,
  kWhenEnqueued,  // clEnqueueNDRangeKernel returns the error
  kWhenRun,       // the kernel's event completes with the error; the kernel does not run
};

// Fails kernels enqueued on `device` (nullptr: none) with `error` from now on.
void ArmFault(cl_device_id device, Fault fault, cl_int error);
void DisarmFault();

}  // namespace atl::opencl::testing
