#include "fault_injection.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace atl::opencl::testing {
namespace {

std::atomic<cl_device_id> armed_device{nullptr};
std::atomic<Fault> armed_fault{Fault::kNone};
std::atomic<cl_int> armed_error{CL_SUCCESS};

}  // namespace

void ArmFault(cl_device_id device, Fault fault, cl_int error) {
  armed_error.store(error);
  armed_fault.store(fault);
  armed_device.store(device);
}

void DisarmFault() {
  armed_device.store(nullptr);
  armed_fault.store(Fault::kNone);
}

}  // namespace atl::opencl::testing

extern "C" CL_API_ENTRY cl_int CL_API_CALL clEnqueueNDRangeKernel(
    cl_command_queue queue, cl_kernel kernel, cl_uint work_dim, const size_t* global_work_offset,
    const size_t* global_work_size, const size_t* local_work_size, cl_uint num_events_in_wait_list,
    const cl_event* event_wait_list, cl_event* event) {
  using Enqueue =
      cl_int(CL_API_CALL*)(cl_command_queue, cl_kernel, cl_uint, const size_t*, const size_t*,
                           const size_t*, cl_uint, const cl_event*, cl_event*);
  static const auto real = reinterpret_cast<Enqueue>(dlsym(RTLD_NEXT, "clEnqueueNDRangeKernel"));
  if (real == nullptr) {
    std::fprintf(stderr, "fault injection: the ICD loader's clEnqueueNDRangeKernel is missing\n");
    std::abort();
  }
  using atl::opencl::testing::armed_device;
  using atl::opencl::testing::armed_error;
  using atl::opencl::testing::armed_fault;
  using atl::opencl::testing::Fault;
  cl_device_id target = armed_device.load();
  cl_device_id device = nullptr;
  if (target != nullptr &&
      clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof(device), &device, nullptr) ==
          CL_SUCCESS &&
      device == target) {
    if (armed_fault.load() == Fault::kWhenEnqueued) return armed_error.load();
    if (armed_fault.load() == Fault::kWhenRun) {
      cl_context context = nullptr;
      clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof(context), &context, nullptr);
      cl_int status = CL_SUCCESS;
      cl_event failed = clCreateUserEvent(context, &status);
      if (status != CL_SUCCESS) return status;
      clSetUserEventStatus(failed, armed_error.load());
      if (event != nullptr) {
        *event = failed;
      } else {
        clReleaseEvent(failed);
      }
      return CL_SUCCESS;
    }
  }
  return real(queue, kernel, work_dim, global_work_offset, global_work_size, local_work_size,
              num_events_in_wait_list, event_wait_list, event);
}
