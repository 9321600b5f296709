#include "opencl_bench.h"

#include <CL/cl.h>
#include <dlfcn.h>

#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "atoll/backend.h"

namespace atl::bench {
namespace {

void Check(cl_int status, const char* call) {
  if (status != CL_SUCCESS) {
    throw std::runtime_error(std::string(call) + " failed with OpenCL error " +
                             std::to_string(status));
  }
}

cl_device_id FirstDevice(cl_platform_id* platform_out) {
  cl_uint count = 0;
  if (clGetPlatformIDs(0, nullptr, &count) != CL_SUCCESS || count == 0) return nullptr;
  std::vector<cl_platform_id> platforms(count);
  clGetPlatformIDs(count, platforms.data(), nullptr);
  for (cl_platform_id platform : platforms) {
    cl_device_id device = nullptr;
    if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 1, &device, nullptr) == CL_SUCCESS) {
      *platform_out = platform;
      return device;
    }
  }
  return nullptr;
}

}  // namespace

struct DirectOpencl::State {
  cl_device_id device = nullptr;
  cl_context context = nullptr;
  cl_command_queue queue = nullptr;
  cl_program program = nullptr;
  cl_kernel kernel = nullptr;
};

std::string DirectOpencl::Unavailable() {
  cl_platform_id platform = nullptr;
  return FirstDevice(&platform) != nullptr
             ? ""
             : "no OpenCL device (scripts/install-deps.sh installs PoCL)";
}

DirectOpencl::DirectOpencl(const std::string& source_path, const std::string& kernel)
    : state_(std::make_unique<State>()) {
  cl_platform_id platform = nullptr;
  state_->device = FirstDevice(&platform);
  if (state_->device == nullptr) throw std::runtime_error(Unavailable());
  char name[256] = "";
  clGetDeviceInfo(state_->device, CL_DEVICE_NAME, sizeof(name), name, nullptr);
  device_name_ = name;
  cl_int status = CL_SUCCESS;
  state_->context = clCreateContext(nullptr, 1, &state_->device, nullptr, nullptr, &status);
  Check(status, "clCreateContext");
  state_->queue = clCreateCommandQueue(state_->context, state_->device, 0, &status);
  Check(status, "clCreateCommandQueue");
  std::ifstream in(source_path);
  if (!in) throw std::runtime_error("cannot read " + source_path);
  std::stringstream text;
  text << in.rdbuf();
  std::string source = text.str();
  const char* pointer = source.c_str();
  state_->program = clCreateProgramWithSource(state_->context, 1, &pointer, nullptr, &status);
  Check(status, "clCreateProgramWithSource");
  Check(clBuildProgram(state_->program, 1, &state_->device, "", nullptr, nullptr),
        "clBuildProgram");
  state_->kernel = clCreateKernel(state_->program, kernel.c_str(), &status);
  Check(status, "clCreateKernel");
}

DirectOpencl::~DirectOpencl() {
  if (state_->kernel != nullptr) clReleaseKernel(state_->kernel);
  if (state_->program != nullptr) clReleaseProgram(state_->program);
  if (state_->queue != nullptr) clReleaseCommandQueue(state_->queue);
  if (state_->context != nullptr) clReleaseContext(state_->context);
}

void DirectOpencl::Vadd(const float* a, const float* b, float* c, int n, size_t local) {
  // What a program without Atoll writes for one call.
  size_t bytes = static_cast<size_t>(n) * sizeof(float);
  cl_int status = CL_SUCCESS;
  cl_mem da = clCreateBuffer(state_->context, CL_MEM_READ_ONLY, bytes, nullptr, &status);
  cl_mem db = clCreateBuffer(state_->context, CL_MEM_READ_ONLY, bytes, nullptr, &status);
  cl_mem dc = clCreateBuffer(state_->context, CL_MEM_WRITE_ONLY, bytes, nullptr, &status);
  Check(status, "clCreateBuffer");
  Check(clEnqueueWriteBuffer(state_->queue, da, CL_FALSE, 0, bytes, a, 0, nullptr, nullptr),
        "clEnqueueWriteBuffer");
  Check(clEnqueueWriteBuffer(state_->queue, db, CL_FALSE, 0, bytes, b, 0, nullptr, nullptr),
        "clEnqueueWriteBuffer");
  Check(clSetKernelArg(state_->kernel, 0, sizeof(cl_mem), &da), "clSetKernelArg");
  Check(clSetKernelArg(state_->kernel, 1, sizeof(cl_mem), &db), "clSetKernelArg");
  Check(clSetKernelArg(state_->kernel, 2, sizeof(cl_mem), &dc), "clSetKernelArg");
  Check(clSetKernelArg(state_->kernel, 3, sizeof(n), &n), "clSetKernelArg");
  size_t global = (static_cast<size_t>(n) + local - 1) / local * local;
  Check(clEnqueueNDRangeKernel(state_->queue, state_->kernel, 1, nullptr, &global, &local, 0,
                               nullptr, nullptr),
        "clEnqueueNDRangeKernel");
  Check(clEnqueueReadBuffer(state_->queue, dc, CL_FALSE, 0, bytes, c, 0, nullptr, nullptr),
        "clEnqueueReadBuffer");
  Check(clFinish(state_->queue), "clFinish");
  clReleaseMemObject(da);
  clReleaseMemObject(db);
  clReleaseMemObject(dc);
}

struct PluginOpencl::State {
  void* library = nullptr;
  const atoll_backend_v1* table = nullptr;
  void* backend = nullptr;
  void* program = nullptr;
  void* kernel = nullptr;
  std::mutex mutex;
  std::condition_variable done;
  bool finished = false;
  int status = 0;
  std::string message;

  static void Done(void* user, int status, const char* message) {
    auto* self = static_cast<State*>(user);
    std::lock_guard<std::mutex> lock(self->mutex);
    self->finished = true;
    self->status = status;
    self->message = message;
    self->done.notify_one();
  }
};

PluginOpencl::PluginOpencl(const std::string& plugin_path, const std::string& binary_path,
                           const std::string& kernel)
    : state_(std::make_unique<State>()) {
  state_->library = dlopen(plugin_path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (state_->library == nullptr) throw std::runtime_error(std::string("dlopen: ") + dlerror());
  auto get =
      reinterpret_cast<atoll_backend_get_v1_fn>(dlsym(state_->library, ATOLL_BACKEND_ENTRY_V1));
  if (get == nullptr) throw std::runtime_error(plugin_path + " has no " ATOLL_BACKEND_ENTRY_V1);
  state_->table = get();
  char error[1024] = "";
  if (state_->table->open(R"({"devices": [0], "cache_dir": ""})", &state_->backend, error,
                          sizeof(error)) != ATOLL_OK ||
      state_->table->program(state_->backend, 0, binary_path.c_str(), "", &state_->program, error,
                             sizeof(error)) != ATOLL_OK) {
    throw std::runtime_error(std::string("opencl backend: ") + error);
  }
  const char* types[] = {"float*", "float*", "float*", "int"};
  if (state_->table->kernel(state_->backend, state_->program, kernel.c_str(), types, 4,
                            &state_->kernel, error, sizeof(error)) != ATOLL_OK) {
    throw std::runtime_error(std::string("opencl backend: ") + error);
  }
}

PluginOpencl::~PluginOpencl() {
  if (state_->backend != nullptr) state_->table->close(state_->backend);
  if (state_->library != nullptr) dlclose(state_->library);
}

void PluginOpencl::Vadd(float* a, float* b, float* c, int n, uint32_t local) {
  uint64_t bytes = static_cast<uint64_t>(n) * sizeof(float);
  atoll_backend_arg_v1 args[] = {
      {ATOLL_BACKEND_ARG_ARRAY, ATOLL_BACKEND_ACCESS_READ, "float*", a, bytes},
      {ATOLL_BACKEND_ARG_ARRAY, ATOLL_BACKEND_ACCESS_READ, "float*", b, bytes},
      {ATOLL_BACKEND_ARG_ARRAY, ATOLL_BACKEND_ACCESS_WRITE, "float*", c, bytes},
      {ATOLL_BACKEND_ARG_SCALAR, 0, "int", &n, sizeof(n)}};
  atoll_backend_geometry_v1 geometry{};
  geometry.dims = 1;
  geometry.global[0] = static_cast<uint64_t>(n);
  geometry.local[0] = local;
  state_->finished = false;
  char error[1024] = "";
  if (state_->table->launch(state_->backend, 0, 0, state_->kernel, args, 4, &geometry, &State::Done,
                            state_.get(), error, sizeof(error)) != ATOLL_OK) {
    throw std::runtime_error(std::string("opencl backend launch: ") + error);
  }
  std::unique_lock<std::mutex> lock(state_->mutex);
  state_->done.wait(lock, [this] { return state_->finished; });
  if (state_->status != ATOLL_OK) {
    throw std::runtime_error("opencl backend run: " + state_->message);
  }
}

}  // namespace atl::bench
