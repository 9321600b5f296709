// Drives the opencl backend plugin through dlopen, as atolld does, on whatever OpenCL platform is
// installed (PoCL's CPU device on the project's machines). Tests that need a device skip, saying
// so, when there is none.
#include <CL/cl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "atoll/backend.h"
#include "backend_testing.h"
#include "fault_injection.h"

namespace atl::opencl {
namespace {

namespace fs = std::filesystem;
using backend_testing::Array;
using backend_testing::Completion;
using backend_testing::Geometry;
using backend_testing::LaunchAndWait;
using backend_testing::OpenBackend;
using backend_testing::Plugin;
using backend_testing::Scalar;
using backend_testing::TypesOf;
using ::testing::HasSubstr;

// PoCL shows two CPU devices, so tests can check that one device's failure leaves the other
// working. Only PoCL reads this; set before the ICD loader starts it, and never over a choice the
// caller made.
const bool kTwoPoclDevices = [] { return ::setenv("POCL_DEVICES", "pthread pthread", 0) == 0; }();

const std::string kData = ATOLL_TEST_DATA_DIR;
const std::string kKernels = kData + "/test_kernels.cl";

// Memory aligned for CL_MEM_USE_HOST_PTR, as the daemon's page-aligned client mappings are.
template <typename T>
class Aligned {
 public:
  explicit Aligned(size_t count, T fill = T{}) : count_(count) {
    void* memory = nullptr;
    if (posix_memalign(&memory, 4096, std::max<size_t>(count, 1) * sizeof(T) + 64) != 0) {
      throw std::bad_alloc();
    }
    data_ = static_cast<T*>(memory);
    for (size_t i = 0; i < count; ++i) data_[i] = fill;
  }
  ~Aligned() { std::free(data_); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  T* data() { return data_; }
  T& operator[](size_t i) { return data_[i]; }
  size_t size() const { return count_; }
  uint64_t bytes() const { return count_ * sizeof(T); }

 private:
  T* data_ = nullptr;
  size_t count_;
};

// A temporary folder, removed with its contents.
class TempDir {
 public:
  TempDir() {
    char path[] = "/tmp/atoll-opencl-test-XXXXXX";
    if (::mkdtemp(path) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = path;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& content) const {
    std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << content;
    return file;
  }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The OpenCL devices in the order the backend numbers them with no configuration.
std::vector<cl_device_id> AllDevices() {
  std::vector<cl_device_id> devices;
  cl_uint count = 0;
  if (clGetPlatformIDs(0, nullptr, &count) != CL_SUCCESS || count == 0) return devices;
  std::vector<cl_platform_id> platforms(count);
  clGetPlatformIDs(count, platforms.data(), nullptr);
  for (cl_platform_id platform : platforms) {
    cl_uint n = 0;
    if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, nullptr, &n) != CL_SUCCESS) continue;
    std::vector<cl_device_id> ids(n);
    clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, n, ids.data(), nullptr);
    devices.insert(devices.end(), ids.begin(), ids.end());
  }
  return devices;
}

class OpenclBackend : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(table(), nullptr);
    cache_ = std::make_unique<TempDir>();
    config_ = R"({"cache_dir": ")" + cache_->path() + R"("})";
    backend_ = std::make_unique<OpenBackend>(table(), config_.c_str());
    ASSERT_NE(backend_->get(), nullptr);
    if (table()->device_count(backend_->get()) == 0) {
      GTEST_SKIP() << "no OpenCL device: install an OpenCL platform (scripts/install-deps.sh "
                      "installs PoCL) to run the opencl backend's tests";
    }
  }

  const atoll_backend_v1* table() const { return plugin_.table(); }
  void* backend() const { return backend_->get(); }
  uint32_t devices() const { return table()->device_count(backend()); }

  atoll_backend_device_info_v1 Info(void* opened, uint32_t device) {
    atoll_backend_device_info_v1 info{};
    info.struct_size = sizeof(info);
    char error[512] = "";
    EXPECT_EQ(table()->device_info(opened, device, &info, error, sizeof(error)), ATOLL_OK) << error;
    return info;
  }

  void* Kernel(const char* name, const std::vector<const char*>& types, uint32_t device = 0,
               const char* options = "") {
    return backend_->Kernel(kKernels.c_str(), name, types, device, options);
  }

  // vadd on `n` floats through a, b and c; checks c = a + b.
  void RunVadd(void* vadd, float* a, float* b, float* c, int32_t n, uint32_t device = 0,
               uint32_t compute_unit = 0) {
    for (int32_t i = 0; i < n; ++i) {
      a[i] = static_cast<float>(i) * 0.5f;
      b[i] = static_cast<float>(n - i);
    }
    uint64_t bytes = static_cast<uint64_t>(n) * sizeof(float);
    atoll_backend_arg_v1 args[] = {Array(a, bytes, "float*", ATOLL_BACKEND_ACCESS_READ),
                                   Array(b, bytes, "float*", ATOLL_BACKEND_ACCESS_READ),
                                   Array(c, bytes, "float*", ATOLL_BACKEND_ACCESS_WRITE),
                                   Scalar(n, "int")};
    std::string message;
    ASSERT_EQ(
        LaunchAndWait(table(), backend(), vadd, args, 4, Geometry({static_cast<uint64_t>(n)}, {64}),
                      &message, compute_unit, device),
        ATOLL_OK)
        << message;
    for (int32_t i = 0; i < n; ++i) ASSERT_EQ(c[i], static_cast<float>(i) * 0.5f + (n - i)) << i;
  }

  const std::vector<const char*> kVaddTypes = {"float*", "float*", "float*", "int"};
  Plugin plugin_{ATOLL_TEST_BACKEND_PATH};
  std::unique_ptr<TempDir> cache_;
  std::string config_;
  std::unique_ptr<OpenBackend> backend_;
};

TEST_F(OpenclBackend, ExportsAVersionedTable) {
  EXPECT_EQ(table()->abi_version, ATOLL_BACKEND_ABI_VERSION);
  EXPECT_EQ(table()->struct_size, sizeof(atoll_backend_v1));
  EXPECT_STREQ(table()->name, "opencl");
  for (const void* function :
       {reinterpret_cast<const void*>(table()->open), reinterpret_cast<const void*>(table()->close),
        reinterpret_cast<const void*>(table()->device_count),
        reinterpret_cast<const void*>(table()->device_info),
        reinterpret_cast<const void*>(table()->program),
        reinterpret_cast<const void*>(table()->release_program),
        reinterpret_cast<const void*>(table()->kernel),
        reinterpret_cast<const void*>(table()->launch)}) {
    EXPECT_NE(function, nullptr);
  }
}

TEST_F(OpenclBackend, DescribesEveryOpenclDevice) {
  std::vector<cl_device_id> all = AllDevices();
  ASSERT_EQ(devices(), all.size());
  for (uint32_t d = 0; d < devices(); ++d) {
    SCOPED_TRACE(d);
    atoll_backend_device_info_v1 info = Info(backend(), d);
    char name[256] = "";
    clGetDeviceInfo(all[d], CL_DEVICE_NAME, sizeof(name), name, nullptr);
    cl_ulong memory = 0;
    clGetDeviceInfo(all[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(memory), &memory, nullptr);
    cl_device_type type = 0;
    clGetDeviceInfo(all[d], CL_DEVICE_TYPE, sizeof(type), &type, nullptr);
    EXPECT_EQ(std::string(info.name), std::string(name).substr(0, sizeof(info.name) - 1));
    EXPECT_GT(std::strlen(info.vendor), 0u);
    EXPECT_GT(std::strlen(info.platform_vendor), 0u);
    EXPECT_GT(std::strlen(info.platform_name), 0u);
    EXPECT_GT(std::strlen(info.platform_version), 0u);
    EXPECT_EQ(info.global_memory_bytes, static_cast<int64_t>(memory));
    EXPECT_EQ(info.temperature_c, -1);
    EXPECT_EQ(info.power_mw, -1);
    EXPECT_EQ(info.compute_units, 2u);
    EXPECT_EQ(info.binaries_at_once, (type & CL_DEVICE_TYPE_ACCELERATOR) != 0 ? 1u : 0u);
    // FPGAs' binaries decide their compute units by default; other devices' do not.
    EXPECT_EQ(info.compute_units_by_binary, (type & CL_DEVICE_TYPE_ACCELERATOR) != 0 ? 1u : 0u);
    cl_platform_id platform = nullptr;
    clGetDeviceInfo(all[d], CL_DEVICE_PLATFORM, sizeof(platform), &platform, nullptr);
    char platform_name[256] = "";
    clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof(platform_name), platform_name, nullptr);
    if (std::string(platform_name) == "Portable Computing Language") {
      EXPECT_STREQ(info.platform_vendor, "pocl");
      char driver[128] = "";
      clGetDeviceInfo(all[d], CL_DRIVER_VERSION, sizeof(driver), driver, nullptr);
      EXPECT_STREQ(info.platform_version, driver);
    }
  }
}

TEST_F(OpenclBackend, ConfigurationChoosesPlatformsDevicesAndComputeUnits) {
  atoll_backend_device_info_v1 first = Info(backend(), 0);
  std::string by_vendor = std::string(R"({"platforms": [")") + first.platform_vendor +
                          R"("], "compute_units": 3, "cache_dir": ""})";
  OpenBackend vendor(table(), by_vendor.c_str());
  ASSERT_GE(table()->device_count(vendor.get()), 1u);
  EXPECT_EQ(Info(vendor.get(), 0).compute_units, 3u);
  EXPECT_STREQ(Info(vendor.get(), 0).name, first.name);

  OpenBackend one(table(),
                  R"({"platforms": [0], "devices": [0], "compute_units": 1, "cache_dir": ""})");
  ASSERT_EQ(table()->device_count(one.get()), 1u);
  EXPECT_EQ(Info(one.get(), 0).compute_units, 1u);

  OpenBackend by_manifest(table(), R"({"compute_units": 4, "compute_units_by_manifest": true,
                                       "cache_dir": ""})");
  ASSERT_GE(table()->device_count(by_manifest.get()), 1u);
  EXPECT_EQ(Info(by_manifest.get(), 0).compute_units, 4u);
  EXPECT_EQ(Info(by_manifest.get(), 0).compute_units_by_binary, 1u);
  OpenBackend every_queue(table(), R"({"compute_units_by_manifest": false, "cache_dir": ""})");
  ASSERT_GE(table()->device_count(every_queue.get()), 1u);
  EXPECT_EQ(Info(every_queue.get(), 0).compute_units_by_binary, 0u);

  // A substring of the device name selects it.
  std::string by_name = std::string(R"({"devices": [")") + std::string(first.name).substr(0, 5) +
                        R"("], "cache_dir": ""})";
  OpenBackend named(table(), by_name.c_str());
  EXPECT_GE(table()->device_count(named.get()), 1u);

  if (std::string(first.platform_vendor) == "pocl") {
    // PoCL has CPU devices only: asking for GPUs opens a backend with none.
    OpenBackend gpus(table(), R"({"device_types": ["gpu"], "cache_dir": ""})");
    ASSERT_NE(gpus.get(), nullptr);
    EXPECT_EQ(table()->device_count(gpus.get()), 0u);
    OpenBackend cpus(table(), R"({"device_types": ["cpu", "accelerator"], "cache_dir": ""})");
    EXPECT_EQ(table()->device_count(cpus.get()), devices());
  }
}

TEST_F(OpenclBackend, RejectsAnInvalidConfigurationNamingTheField) {
  struct Case {
    const char* config;
    const char* named;
  };
  const Case cases[] = {
      {R"({"compute_units": 0})", "\"compute_units\""},
      {R"({"compute_units": 65})", "\"compute_units\""},
      {R"({"compute_units": "two"})", "\"compute_units\""},
      {R"({"compute_units_by_manifest": 1})",
       "\"compute_units_by_manifest\" must be true or false"},
      {R"({"platforms": "pocl"})", "\"platforms\" must be a list"},
      {R"({"platforms": [1.5]})", "\"platforms\" must be a list"},
      {R"({"platforms": ["no such platform"]})", "matches no OpenCL platform; the platforms are"},
      {R"({"platforms": [99]})", "\"platforms\": 99 matches no OpenCL platform"},
      {R"({"devices": [99]})", "\"devices\": 99 matches no device"},
      {R"({"devices": ["no such device"]})", "matches no device of the selected platforms"},
      {R"({"device_types": ["fpga"]})", "\"device_types\""},
      {R"({"device_types": []})", "\"device_types\""},
      {R"({"cache_dir": 3})", "\"cache_dir\""},
      {R"({"compute_unit": 2})", "unknown field \"compute_unit\""},
      {R"([1, 2])", "JSON object"},
      {R"({"devices": )", "not valid JSON"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.config);
    void* opened = reinterpret_cast<void*>(1);
    char error[1024] = "";
    EXPECT_EQ(table()->open(c.config, &opened, error, sizeof(error)), ATOLL_INVALID_ARGUMENT);
    EXPECT_EQ(opened, nullptr);
    EXPECT_THAT(error, HasSubstr(c.named));
    EXPECT_THAT(error, HasSubstr("opencl backend configuration"));
  }
}

TEST_F(OpenclBackend, DeviceInfoRejectsAMissingDeviceAndASmallStruct) {
  atoll_backend_device_info_v1 info{};
  info.struct_size = sizeof(info);
  char error[512] = "";
  EXPECT_EQ(table()->device_info(backend(), devices(), &info, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("does not exist"));
  info.struct_size = 16;
  EXPECT_EQ(table()->device_info(backend(), 0, &info, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("struct_size"));
}

TEST_F(OpenclBackend, BuildsSourceAndRunsAnNDRange) {
  void* vadd = Kernel("vadd", kVaddTypes);
  ASSERT_NE(vadd, nullptr);
  for (int32_t n : {1, 63, 64, 1000, 4097}) {
    SCOPED_TRACE(n);
    Aligned<float> a(n), b(n), c(n, -1.0f);
    RunVadd(vadd, a.data(), b.data(), c.data(), n, 0, static_cast<uint32_t>(n % 2));
  }
}

TEST_F(OpenclBackend, ATextFileIsBuiltAsSourceWhateverItsName) {
  TempDir dir;
  std::string path = dir.Write("kernels.txt", ReadFile(kKernels));
  void* vadd = backend_->Kernel(path.c_str(), "vadd", kVaddTypes);
  ASSERT_NE(vadd, nullptr);
  Aligned<float> a(10), b(10), c(10);
  RunVadd(vadd, a.data(), b.data(), c.data(), 10);
}

TEST_F(OpenclBackend, AFailedBuildReportsTheBuildLog) {
  void* program = nullptr;
  std::string message;
  std::string broken = kData + "/broken.cl";
  EXPECT_EQ(backend_->Program(broken.c_str(), &program, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_EQ(program, nullptr);
  EXPECT_THAT(message, HasSubstr("'" + broken + "' does not build for device 0"));
  EXPECT_THAT(message, HasSubstr("CL_BUILD_PROGRAM_FAILURE"));
  EXPECT_THAT(message, HasSubstr("atoll_undeclared_identifier"));
  // The device still builds and runs other programs.
  void* vadd = Kernel("vadd", kVaddTypes);
  Aligned<float> a(5), b(5), c(5);
  RunVadd(vadd, a.data(), b.data(), c.data(), 5);
}

TEST_F(OpenclBackend, BuildOptionsReachTheCompiler) {
  void* program = nullptr;
  std::string message;
  ASSERT_EQ(backend_->Program(kKernels.c_str(), &program, &message, 0, "-DATOLL_TEST_VALUE=42"),
            ATOLL_OK)
      << message;
  void* kernel = nullptr;
  ASSERT_EQ(backend_->FindKernel(program, "option_value", {"int*"}, &kernel, &message), ATOLL_OK)
      << message;
  Aligned<int32_t> out(1, 0);
  atoll_backend_arg_v1 args[] = {Array(out.data(), 4, "int*", ATOLL_BACKEND_ACCESS_WRITE)};
  ASSERT_EQ(LaunchAndWait(table(), backend(), kernel, args, 1, Geometry(), &message), ATOLL_OK)
      << message;
  EXPECT_EQ(out[0], 42);

  // Without the option the kernel is not there, and the message lists the ones that are.
  ASSERT_EQ(backend_->Program(kKernels.c_str(), &program, &message), ATOLL_OK) << message;
  EXPECT_EQ(backend_->FindKernel(program, "option_value", {"int*"}, &kernel, &message),
            ATOLL_NOT_FOUND);
  EXPECT_THAT(message, HasSubstr("has no kernel 'option_value'; it has "));
  EXPECT_THAT(message, HasSubstr("vadd"));

  EXPECT_EQ(backend_->Program(kKernels.c_str(), &program, &message, 0, "-atoll-no-such-option"),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("-atoll-no-such-option"));
  EXPECT_THAT(message, HasSubstr("buildOptions"));
}

TEST_F(OpenclBackend, ProgramReportsFilesThatAreMissingEmptyOrNotFiles) {
  void* program = nullptr;
  std::string message;
  EXPECT_EQ(backend_->Program("/nonexistent/vector.cl", &program, &message), ATOLL_NOT_FOUND);
  EXPECT_THAT(message, HasSubstr("'/nonexistent/vector.cl' cannot be opened"));
  EXPECT_EQ(backend_->Program(kData.c_str(), &program, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("not a regular file"));
  TempDir dir;
  std::string empty = dir.Write("empty.cl", "");
  EXPECT_EQ(backend_->Program(empty.c_str(), &program, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("is empty"));
  char error[256] = "";
  EXPECT_EQ(
      table()->program(backend(), devices(), kKernels.c_str(), "", &program, error, sizeof(error)),
      ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("does not exist"));
}

TEST_F(OpenclBackend, ABinaryForAnotherDeviceIsRefusedClearly) {
  TempDir dir;
  // The header of a Xilinx FPGA image: no CPU or GPU runtime loads it.
  std::string xclbin = dir.Write(
      "vector.xclbin", std::string("xclbin2\0\0\0\0\0\0\0\0\0", 16) + std::string(512, '\x5a'));
  void* program = nullptr;
  std::string message;
  EXPECT_EQ(backend_->Program(xclbin.c_str(), &program, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("(a Xilinx .xclbin) does not load on device 0"));
  EXPECT_THAT(message, HasSubstr("CL_INVALID_BINARY"));
  EXPECT_THAT(message, HasSubstr("built for another device or platform"));

  std::string garbage =
      dir.Write("vector.bin", std::string("\x01\x00\xff\xfe", 4) + std::string(256, '\0'));
  EXPECT_EQ(backend_->Program(garbage.c_str(), &program, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("(a device binary) does not load"));

  std::string spirv =
      dir.Write("vector.spv", std::string("\x03\x02\x23\x07", 4) + std::string(64, '\0'));
  EXPECT_EQ(backend_->Program(spirv.c_str(), &program, &message), ATOLL_UNIMPLEMENTED);
  EXPECT_THAT(message, HasSubstr("SPIR-V"));
}

// Builds test_kernels.cl for `device` with OpenCL directly, as a vendor tool would, and returns
// the device binary.
std::string BuildBinaryDirectly(cl_device_id device) {
  cl_int status = CL_SUCCESS;
  cl_context context = clCreateContext(nullptr, 1, &device, nullptr, nullptr, &status);
  EXPECT_EQ(status, CL_SUCCESS);
  std::string source = ReadFile(kKernels);
  const char* text = source.c_str();
  cl_program program = clCreateProgramWithSource(context, 1, &text, nullptr, &status);
  EXPECT_EQ(clBuildProgram(program, 1, &device, "", nullptr, nullptr), CL_SUCCESS);
  size_t size = 0;
  clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, sizeof(size), &size, nullptr);
  std::string binary(size, '\0');
  auto* pointer = reinterpret_cast<unsigned char*>(binary.data());
  clGetProgramInfo(program, CL_PROGRAM_BINARIES, sizeof(pointer), &pointer, nullptr);
  clReleaseProgram(program);
  clReleaseContext(context);
  return binary;
}

TEST_F(OpenclBackend, LoadsADeviceBinary) {
  std::vector<cl_device_id> all = AllDevices();
  TempDir dir;
  std::string path = dir.Write("test_kernels.bin", BuildBinaryDirectly(all[0]));
  void* program = nullptr;
  std::string message;
  ASSERT_EQ(backend_->Program(path.c_str(), &program, &message), ATOLL_OK) << message;
  void* kernel = nullptr;
  // A binary built without -cl-kernel-arg-info describes no argument types; the count is still
  // checked.
  EXPECT_EQ(
      backend_->FindKernel(program, "vadd", {"float*", "float*", "float*"}, &kernel, &message),
      ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("takes 4 arguments, but the manifest lists 3"));
  ASSERT_EQ(backend_->FindKernel(program, "vadd", kVaddTypes, &kernel, &message), ATOLL_OK)
      << message;
  Aligned<float> a(100), b(100), c(100);
  RunVadd(kernel, a.data(), b.data(), c.data(), 100);
}

TEST_F(OpenclBackend, KernelNamesWhatIsMissing) {
  void* program = nullptr;
  std::string message;
  ASSERT_EQ(backend_->Program(kKernels.c_str(), &program, &message), ATOLL_OK) << message;
  void* kernel = nullptr;
  EXPECT_EQ(backend_->FindKernel(program, "vmul", kVaddTypes, &kernel, &message), ATOLL_NOT_FOUND);
  EXPECT_EQ(kernel, nullptr);
  EXPECT_THAT(message, HasSubstr("'" + kKernels + "' has no kernel 'vmul'; it has "));
  EXPECT_THAT(message, HasSubstr("vadd, "));
  table()->release_program(backend(), program);
  char error[256] = "";
  EXPECT_EQ(table()->kernel(backend(), program, "vadd", kVaddTypes.data(), 4, &kernel, error,
                            sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("unknown program handle"));
}

TEST_F(OpenclBackend, KernelChecksTheManifestsTypesAgainstTheKernels) {
  void* program = nullptr;
  std::string message;
  ASSERT_EQ(backend_->Program(kKernels.c_str(), &program, &message), ATOLL_OK) << message;
  struct Case {
    const char* kernel;
    std::vector<const char*> types;
    const char* problem;  // nullptr: accepted
  };
  const Case cases[] = {
      {"vadd", {"float*", "float*", "float*", "int"}, nullptr},
      {"vadd", {"const float *", "float  *", "float*", "int32_t"}, nullptr},
      {"count", {"unsigned int*", "uint32_t"}, nullptr},
      {"count", {"uint*", "unsigned"}, nullptr},
      {"echo_scalars",
       {"long*", "char", "short int", "int", "long long", "float", "unsigned char", "uint16_t",
        "unsigned int", "float4"},
       nullptr},
      {"sum_constant", {"int*", "int", "int*"}, nullptr},
      {"vadd",
       {"int*", "float*", "float*", "int"},
       "argument 0 'a' is 'float*' in the kernel but 'int*' in the manifest"},
      {"vadd",
       {"float*", "float*", "float*", "long"},
       "argument 3 'n' is 'int' in the kernel but 'long' in the manifest"},
      {"vadd",
       {"float*", "float*", "float", "int"},
       "argument 2 'c' is 'float*' in the kernel but 'float' in the manifest"},
      {"count", {"unsigned int*", "int"}, "argument 1 'index' is 'uint'"},
      {"vadd",
       {"float*", "float*", "float*"},
       "takes 4 arguments (float* a, float* b, float* c, int n), but the manifest lists 3"},
      {"with_local", {"float*", "float*"}, "argument 1 'scratch' is a __local pointer"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.kernel << " " << ::testing::PrintToString(c.types));
    void* kernel = nullptr;
    int status = backend_->FindKernel(program, c.kernel, c.types, &kernel, &message);
    if (c.problem == nullptr) {
      EXPECT_EQ(status, ATOLL_OK) << message;
      EXPECT_NE(kernel, nullptr);
    } else {
      EXPECT_EQ(status, ATOLL_INVALID_ARGUMENT);
      EXPECT_EQ(kernel, nullptr);
      EXPECT_THAT(message, HasSubstr(c.problem));
      EXPECT_THAT(message, HasSubstr("kernel '" + std::string(c.kernel) + "' of '" + kKernels));
    }
  }
}

TEST_F(OpenclBackend, ScalarsAreCopiedAtLaunch) {
  void* echo = Kernel("echo_scalars", {"long*", "char", "short", "int", "long", "float", "uchar",
                                       "ushort", "uint", "float4"});
  Aligned<int64_t> out(12, 0);
  int8_t c = -5;
  int16_t s = -30000;
  int32_t i = -2000000000;
  int64_t l = -9000000000000000000;
  float f = 1.5f;
  uint8_t uc = 250;
  uint16_t us = 65000;
  uint32_t ui = 4000000000u;
  float v[4] = {1.0f, -2.0f, 3.5f, 1e30f};
  std::vector<atoll_backend_arg_v1> args = {
      Array(out.data(), out.bytes(), "long*", ATOLL_BACKEND_ACCESS_WRITE),
      Scalar(c, "char"),
      Scalar(s, "short"),
      Scalar(i, "int"),
      Scalar(l, "long"),
      Scalar(f, "float"),
      Scalar(uc, "uchar"),
      Scalar(us, "ushort"),
      Scalar(ui, "uint"),
      {ATOLL_BACKEND_ARG_SCALAR, 0, "float4", v, sizeof(v)}};
  Completion done;
  char error[512] = "";
  atoll_backend_geometry_v1 one = Geometry();
  ASSERT_EQ(table()->launch(backend(), 0, 0, echo, args.data(), 10, &one, Completion::Done, &done,
                            error, sizeof(error)),
            ATOLL_OK)
      << error;
  // The scalars belong to the caller again as soon as launch returns.
  c = 0, s = 0, i = 0, l = 0, f = 0, uc = 0, us = 0, ui = 0;
  std::memset(v, 0, sizeof(v));
  ASSERT_TRUE(done.Wait());
  ASSERT_EQ(done.status, ATOLL_OK) << done.message;
  auto bits = [](float x) {
    int32_t b;
    std::memcpy(&b, &x, 4);
    return int64_t{b};
  };
  EXPECT_EQ(out[0], -5);
  EXPECT_EQ(out[1], -30000);
  EXPECT_EQ(out[2], -2000000000);
  EXPECT_EQ(out[3], -9000000000000000000);
  EXPECT_EQ(out[4], bits(1.5f));
  EXPECT_EQ(out[5], 250);
  EXPECT_EQ(out[6], 65000);
  EXPECT_EQ(out[7], 4000000000);
  EXPECT_EQ(out[8], bits(1.0f));
  EXPECT_EQ(out[9], bits(-2.0f));
  EXPECT_EQ(out[10], bits(3.5f));
  EXPECT_EQ(out[11], bits(1e30f));
}

TEST_F(OpenclBackend, RunsTasksAndNDRangesOfUpToThreeDimensions) {
  std::string message;
  void* fill = Kernel("fill_task", {"int*", "int", "int"});
  Aligned<int32_t> out(50, -1);
  int32_t n = 40, first = 7;
  atoll_backend_arg_v1 fill_args[] = {
      Array(out.data(), out.bytes(), "int*", ATOLL_BACKEND_ACCESS_READ_WRITE), Scalar(n, "int"),
      Scalar(first, "int")};
  ASSERT_EQ(LaunchAndWait(table(), backend(), fill, fill_args, 3, Geometry(), &message), ATOLL_OK)
      << message;
  for (int32_t i = 0; i < 50; ++i) ASSERT_EQ(out[i], i < 40 ? 7 + i : -1) << i;

  void* coords = Kernel("coords", {"int*", "int", "int"});
  int32_t width = 37, height = 11;
  Aligned<int32_t> grid(static_cast<size_t>(width) * height, -1);
  atoll_backend_arg_v1 coords_args[] = {
      Array(grid.data(), grid.bytes(), "int*", ATOLL_BACKEND_ACCESS_WRITE), Scalar(width, "int"),
      Scalar(height, "int")};
  for (auto geometry : {Geometry({37, 11}, {8, 4}), Geometry({37, 11})}) {
    ASSERT_EQ(LaunchAndWait(table(), backend(), coords, coords_args, 3, geometry, &message),
              ATOLL_OK)
        << message;
    for (int32_t y = 0; y < height; ++y) {
      for (int32_t x = 0; x < width; ++x) ASSERT_EQ(grid[y * width + x], 1000 * y + x);
    }
  }

  // Global sizes are rounded up to a multiple of the work-group size.
  void* shape = Kernel("shape", {"uint*"});
  Aligned<uint32_t> dims(5, 0);
  atoll_backend_arg_v1 shape_args[] = {
      Array(dims.data(), dims.bytes(), "uint*", ATOLL_BACKEND_ACCESS_WRITE)};
  ASSERT_EQ(LaunchAndWait(table(), backend(), shape, shape_args, 1, Geometry({100, 3}, {16, 2}),
                          &message),
            ATOLL_OK);
  EXPECT_THAT(std::vector<uint32_t>(dims.data(), dims.data() + 5),
              ::testing::ElementsAre(2, 112, 16, 4, 2));
  ASSERT_EQ(LaunchAndWait(table(), backend(), shape, shape_args, 1, Geometry(), &message),
            ATOLL_OK);
  EXPECT_THAT(std::vector<uint32_t>(dims.data(), dims.data() + 3), ::testing::ElementsAre(1, 1, 1));
  ASSERT_EQ(LaunchAndWait(table(), backend(), shape, shape_args, 1, Geometry({5, 1, 2}), &message),
            ATOLL_OK);
  EXPECT_EQ(dims[0], 3u);

  // Nothing to run: done is called with OK and the kernel does not run.
  dims[0] = 77;
  ASSERT_EQ(LaunchAndWait(table(), backend(), shape, shape_args, 1, Geometry({0}, {64}), &message),
            ATOLL_OK);
  ASSERT_EQ(LaunchAndWait(table(), backend(), shape, shape_args, 1, Geometry({8, 0}), &message),
            ATOLL_OK);
  EXPECT_EQ(dims[0], 77u);
}

TEST_F(OpenclBackend, AccessDecidesWhatMovesWithOrWithoutCopies) {
  std::string message;
  void* add = Kernel("add_in_place", {"int*", "int", "int"});
  void* vadd = Kernel("vadd", kVaddTypes);
  // Page-aligned arrays are used in place; one 4 bytes off is copied to the device and back.
  for (size_t offset : {0, 1}) {
    SCOPED_TRACE(offset == 0 ? "in place" : "copied");
    Aligned<int32_t> x(101, 0);
    for (int32_t i = 0; i < 101; ++i) x[i] = i;
    int32_t* data = x.data() + offset;
    int32_t delta = 1000, n = 90;
    atoll_backend_arg_v1 args[] = {
        Array(data, 100 * sizeof(int32_t), "int*", ATOLL_BACKEND_ACCESS_READ_WRITE),
        Scalar(delta, "int"), Scalar(n, "int")};
    ASSERT_EQ(LaunchAndWait(table(), backend(), add, args, 3, Geometry({100}, {10}), &message),
              ATOLL_OK)
        << message;
    for (int32_t i = 0; i < 100; ++i) {
      int32_t original = i + static_cast<int32_t>(offset);
      ASSERT_EQ(data[i], i < 90 ? original + 1000 : original) << i;
    }

    // "r" is never written back, even if the kernel could write it.
    args[0].access = ATOLL_BACKEND_ACCESS_READ;
    if (offset == 1) {
      ASSERT_EQ(LaunchAndWait(table(), backend(), add, args, 3, Geometry({100}), &message),
                ATOLL_OK);
      EXPECT_EQ(data[0], 1001);
    }

    // "w" is not uploaded: on a copying path the elements the kernel leaves alone come back as 0,
    // never as whatever the device memory held before.
    Aligned<float> a(64, 1.0f), b(64, 2.0f), c(65, -1.0f);
    float* out = c.data() + offset;
    int32_t half = 32;
    atoll_backend_arg_v1 vadd_args[] = {
        Array(a.data(), 64 * 4, "float*", ATOLL_BACKEND_ACCESS_READ),
        Array(b.data(), 64 * 4, "float*", ATOLL_BACKEND_ACCESS_READ),
        Array(out, 64 * 4, "float*", ATOLL_BACKEND_ACCESS_WRITE), Scalar(half, "int")};
    ASSERT_EQ(LaunchAndWait(table(), backend(), vadd, vadd_args, 4, Geometry({64}), &message),
              ATOLL_OK);
    for (int32_t i = 0; i < 32; ++i) ASSERT_EQ(out[i], 3.0f) << i;
    for (int32_t i = 32; i < 64; ++i) ASSERT_TRUE(out[i] == -1.0f || out[i] == 0.0f) << i;
    if (offset == 1) {
      for (int32_t i = 32; i < 64; ++i) ASSERT_EQ(out[i], 0.0f) << i;
      // The device buffer kept from a launch that wrote every element is reused by the next
      // array of its size, and cleared first: a launch that writes half of it never returns the
      // other half of the last one's results.
      int32_t all = 64;
      vadd_args[3] = Scalar(all, "int");
      ASSERT_EQ(LaunchAndWait(table(), backend(), vadd, vadd_args, 4, Geometry({64}), &message),
                ATOLL_OK);
      for (int32_t i = 0; i < 64; ++i) ASSERT_EQ(out[i], 3.0f) << i;
      std::fill(out, out + 64, -1.0f);
      vadd_args[3] = Scalar(half, "int");
      for (int round = 0; round < 3; ++round) {
        ASSERT_EQ(LaunchAndWait(table(), backend(), vadd, vadd_args, 4, Geometry({64}), &message),
                  ATOLL_OK);
        for (int32_t i = 0; i < 32; ++i) ASSERT_EQ(out[i], 3.0f) << i;
        for (int32_t i = 32; i < 64; ++i) ASSERT_EQ(out[i], 0.0f) << i;
      }
    }
  }

  // An array passed twice (in place: c is a) works too.
  Aligned<float> a(300), b(300);
  for (int32_t i = 0; i < 300; ++i) {
    a[i] = static_cast<float>(i);
    b[i] = 0.25f;
  }
  int32_t n = 300;
  atoll_backend_arg_v1 args[] = {Array(a.data(), a.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
                                 Array(b.data(), b.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
                                 Array(a.data(), a.bytes(), "float*", ATOLL_BACKEND_ACCESS_WRITE),
                                 Scalar(n, "int")};
  ASSERT_EQ(LaunchAndWait(table(), backend(), vadd, args, 4, Geometry({300}, {64}), &message),
            ATOLL_OK)
      << message;
  for (int32_t i = 0; i < 300; ++i) ASSERT_EQ(a[i], static_cast<float>(i) + 0.25f) << i;

  // An empty array is passed as a null pointer.
  int32_t zero = 0;
  atoll_backend_arg_v1 empty[] = {Array(nullptr, 0, "float*", ATOLL_BACKEND_ACCESS_READ),
                                  Array(nullptr, 0, "float*", ATOLL_BACKEND_ACCESS_READ),
                                  Array(nullptr, 0, "float*", ATOLL_BACKEND_ACCESS_WRITE),
                                  Scalar(zero, "int")};
  EXPECT_EQ(LaunchAndWait(table(), backend(), vadd, empty, 4, Geometry({1}), &message), ATOLL_OK)
      << message;
}

TEST_F(OpenclBackend, LaunchRefusesWhatItCannotRunWithoutCallingDone) {
  void* vadd = Kernel("vadd", kVaddTypes);
  Aligned<float> a(64), b(64), c(64);
  int32_t n = 64;
  int64_t wide = 64;
  std::vector<atoll_backend_arg_v1> args = {
      Array(a.data(), a.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
      Array(b.data(), b.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
      Array(c.data(), c.bytes(), "float*", ATOLL_BACKEND_ACCESS_WRITE), Scalar(n, "int")};
  Completion completion;
  auto launch = [&](uint32_t device, uint32_t unit, void* kernel,
                    const std::vector<atoll_backend_arg_v1>& launch_args,
                    atoll_backend_geometry_v1 geometry, std::string* message) {
    char error[1024] = "";
    int status = table()->launch(backend(), device, unit, kernel, launch_args.data(),
                                 static_cast<uint32_t>(launch_args.size()), &geometry,
                                 Completion::Done, &completion, error, sizeof(error));
    *message = error;
    return status;
  };
  std::string message;
  EXPECT_EQ(launch(devices(), 0, vadd, args, Geometry({64}), &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("does not exist"));
  EXPECT_EQ(launch(0, 2, vadd, args, Geometry({64}), &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("compute unit 2 does not exist"));
  uint64_t not_a_kernel[16] = {};
  EXPECT_EQ(launch(0, 0, not_a_kernel, args, Geometry({64}), &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("not a handle"));
  EXPECT_EQ(launch(0, 0, vadd, {args[0], args[1], args[2]}, Geometry({64}), &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("it takes 4 arguments, got 3"));
  EXPECT_EQ(launch(0, 0, vadd, {args[0], args[1], args[2], Scalar(wide, "long")}, Geometry({64}),
                   &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("argument 3 'n' is 'int' (4 bytes) in the kernel, but the "
                                 "launch passes 8 bytes"));
  EXPECT_EQ(launch(0, 0, vadd, {args[0], args[3], args[2], args[3]}, Geometry({64}), &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("argument 1 'b' is 'float*' in the kernel, but the launch "
                                 "passes a scalar"));
  std::vector<atoll_backend_arg_v1> null_data = args;
  null_data[0].data = nullptr;
  EXPECT_EQ(launch(0, 0, vadd, null_data, Geometry({64}), &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("argument 0 has 256 bytes at NULL"));
  atoll_backend_geometry_v1 four = Geometry({1, 1, 1});
  four.dims = 4;
  EXPECT_EQ(launch(0, 0, vadd, args, four, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("4 dimensions"));
  EXPECT_EQ(launch(0, 0, vadd, args, Geometry({1u << 20}, {1u << 20}), &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("work-group size 1048576"));
  // A kernel of device 0's program does not run on device 1.
  if (devices() > 1) {
    EXPECT_EQ(launch(1, 0, vadd, args, Geometry({64}), &message), ATOLL_INVALID_ARGUMENT);
    EXPECT_THAT(message, HasSubstr("belongs to a program of device 0"));
  }
  backend_->Close();
  EXPECT_EQ(completion.calls, 0);
}

TEST_F(OpenclBackend, ManyConcurrentLaunchesCompleteExactlyOnce) {
  // The daemon launches at most one kernel per compute unit at a time: each thread owns one.
  const uint32_t units = devices() * 2;
  const uint32_t kThreads = std::min(4u, units);
  constexpr uint32_t kPerThread = 300;
  const uint32_t kLaunches = kThreads * kPerThread;
  std::vector<void*> count(devices());
  for (uint32_t d = 0; d < devices(); ++d) count[d] = Kernel("count", {"uint*", "uint"}, d);
  // One counter array per compute unit: launches of one unit run in order, those of different
  // units at once, and a kernel's += on another unit's element would race.
  std::vector<std::unique_ptr<Aligned<uint32_t>>> counters;
  for (uint32_t u = 0; u < units; ++u)
    counters.push_back(std::make_unique<Aligned<uint32_t>>(kLaunches, 0));
  struct Tracker {
    std::atomic<int> calls{0};
    std::atomic<int> status{-1};
    std::atomic<uint32_t>* finished = nullptr;
  };
  std::vector<Tracker> trackers(kLaunches);
  std::vector<uint32_t> indexes(kLaunches);
  std::atomic<uint32_t> finished{0};
  for (uint32_t i = 0; i < kLaunches; ++i) {
    indexes[i] = i;
    trackers[i].finished = &finished;
  }
  auto done = [](void* user, int status, const char*) {
    auto* tracker = static_cast<Tracker*>(user);
    tracker->status.store(status);
    tracker->calls.fetch_add(1);
    tracker->finished->fetch_add(1, std::memory_order_release);
  };
  std::atomic<int> launch_errors{0};
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      char error[256];
      for (uint32_t k = 0; k < kPerThread; ++k) {
        uint32_t i = t * kPerThread + k;
        uint32_t unit = t % units;
        uint32_t device = unit / 2;
        atoll_backend_arg_v1 args[] = {
            Array(counters[unit]->data(), counters[unit]->bytes(), "uint*"),
            Scalar(indexes[i], "uint")};
        atoll_backend_geometry_v1 one = Geometry();
        if (table()->launch(backend(), device, unit % 2, count[device], args, 2, &one, done,
                            &trackers[i], error, sizeof(error)) != ATOLL_OK) {
          launch_errors.fetch_add(1);
        }
        // Wait for this launch before the next on the same unit, as the daemon does.
        while (trackers[i].calls.load() == 0) std::this_thread::yield();
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(launch_errors.load(), 0);
  ASSERT_EQ(finished.load(std::memory_order_acquire), kLaunches);
  for (uint32_t i = 0; i < kLaunches; ++i) {
    ASSERT_EQ(trackers[i].calls.load(), 1) << "launch " << i;
    ASSERT_EQ(trackers[i].status.load(), ATOLL_OK) << "launch " << i;
    uint32_t t = i / kPerThread;
    ASSERT_EQ((*counters[t % units])[i], 1u) << "launch " << i;
  }
}

// The daemon starts the next request of a compute unit from inside `done`.
TEST_F(OpenclBackend, DoneMayLaunchTheNextRequest) {
  struct Chain {
    const atoll_backend_v1* table = nullptr;
    void* backend = nullptr;
    void* kernel = nullptr;
    Aligned<int32_t>* x = nullptr;
    int32_t delta = 1;
    int32_t n = 256;
    int remaining = 200;
    int failures = 0;
    std::mutex mutex;
    std::condition_variable finished;
    bool over = false;

    bool Next() {
      atoll_backend_arg_v1 args[] = {Array(x->data(), x->bytes(), "int*"), Scalar(delta, "int"),
                                     Scalar(n, "int")};
      atoll_backend_geometry_v1 geometry = Geometry({256}, {64});
      char error[256];
      return table->launch(backend, 0, 1, kernel, args, 3, &geometry, Done, this, error,
                           sizeof(error)) == ATOLL_OK;
    }
    static void Done(void* user, int status, const char*) {
      auto* chain = static_cast<Chain*>(user);
      if (status != ATOLL_OK) ++chain->failures;
      if (--chain->remaining > 0 && chain->Next()) return;
      std::lock_guard<std::mutex> lock(chain->mutex);
      chain->over = true;
      chain->finished.notify_all();
    }
  };
  Aligned<int32_t> x(256, 0);
  Chain chain;
  chain.table = table();
  chain.backend = backend();
  chain.kernel = Kernel("add_in_place", {"int*", "int", "int"});
  chain.x = &x;
  ASSERT_TRUE(chain.Next());
  std::unique_lock<std::mutex> lock(chain.mutex);
  ASSERT_TRUE(chain.finished.wait_for(lock, std::chrono::seconds(30), [&] { return chain.over; }));
  EXPECT_EQ(chain.remaining, 0);
  EXPECT_EQ(chain.failures, 0);
  for (int32_t i = 0; i < 256; ++i) ASSERT_EQ(x[i], 200) << i;
}

TEST_F(OpenclBackend, CloseWaitsForLaunchesAndCallsTheirDone) {
  void* spin = Kernel("spin", {"int*", "int"});
  std::atomic<int> done_calls{0};
  auto done = [](void* user, int status, const char* message) {
    EXPECT_EQ(status, ATOLL_OK) << message;
    static_cast<std::atomic<int>*>(user)->fetch_add(1);
  };
  Aligned<int32_t> sinks(4, 0);
  int32_t iterations = 20000000;
  char error[256] = "";
  for (uint32_t unit = 0; unit < 2; ++unit) {
    atoll_backend_arg_v1 args[] = {Array(sinks.data() + unit, 4, "int*"),
                                   Scalar(iterations, "int")};
    atoll_backend_geometry_v1 one = Geometry();
    ASSERT_EQ(table()->launch(backend(), 0, unit, spin, args, 2, &one, done, &done_calls, error,
                              sizeof(error)),
              ATOLL_OK)
        << error;
  }
  EXPECT_LT(done_calls.load(), 2);
  backend_->Close();
  EXPECT_EQ(done_calls.load(), 2);
  EXPECT_NE(sinks[0], 0);
}

// Runs `vadd` of `opened` on a = 5, b = 3 and returns c[0].
float VaddOnce(const atoll_backend_v1* table, void* opened, void* vadd) {
  Aligned<float> a(8, 5.0f), b(8, 3.0f), c(8, 0.0f);
  int32_t n = 8;
  atoll_backend_arg_v1 args[] = {Array(a.data(), 32, "float*"), Array(b.data(), 32, "float*"),
                                 Array(c.data(), 32, "float*"), Scalar(n, "int")};
  std::string message;
  EXPECT_EQ(LaunchAndWait(table, opened, vadd, args, 4, Geometry({8}), &message), ATOLL_OK)
      << message;
  return c[0];
}

std::set<std::string> Entries(const std::string& folder) {
  std::set<std::string> entries;
  for (const auto& entry : fs::directory_iterator(folder)) entries.insert(entry.path().string());
  return entries;
}

TEST_F(OpenclBackend, BuildsAreCachedPerDeviceAndContent) {
  TempDir cache;
  std::string folder = cache.path() + "/nested/folder";
  std::string config = R"({"cache_dir": ")" + folder + R"("})";
  // The same kernels, but vadd subtracts.
  TempDir sources;
  std::string source = ReadFile(kKernels);
  size_t at = source.find("a[i] + b[i]");
  ASSERT_NE(at, std::string::npos);
  std::string subtracting = sources.Write("subtracting.cl", source.replace(at, 11, "a[i] - b[i]"));

  std::set<std::string> first_entry, second_entry;
  {
    OpenBackend first(table(), config.c_str());
    EXPECT_EQ(VaddOnce(table(), first.get(), first.Kernel(kKernels.c_str(), "vadd", kVaddTypes)),
              8.0f);
    first_entry = Entries(folder);
    EXPECT_EQ(VaddOnce(table(), first.get(), first.Kernel(subtracting.c_str(), "vadd", kVaddTypes)),
              2.0f);
    for (const std::string& entry : Entries(folder)) {
      if (first_entry.count(entry) == 0) second_entry.insert(entry);
    }
  }
  // One binary and one record of the kernels' arguments per build, named by a SHA-256.
  ASSERT_EQ(first_entry.size(), 2u);
  ASSERT_EQ(second_entry.size(), 2u);
  std::vector<fs::path> one(first_entry.begin(), first_entry.end());
  std::vector<fs::path> two(second_entry.begin(), second_entry.end());
  EXPECT_EQ(one[0].extension(), ".bin");
  EXPECT_EQ(one[1].extension(), ".json");
  EXPECT_EQ(one[0].stem(), one[1].stem());
  EXPECT_EQ(one[0].stem().string().size(), 64u);

  // A hit loads the stored binary instead of compiling: with the subtracting build stored under
  // the adding source's key, the adding source subtracts.
  fs::copy_file(two[0], one[0], fs::copy_options::overwrite_existing);
  fs::copy_file(two[1], one[1], fs::copy_options::overwrite_existing);
  {
    OpenBackend second(table(), config.c_str());
    EXPECT_EQ(VaddOnce(table(), second.get(), second.Kernel(kKernels.c_str(), "vadd", kVaddTypes)),
              2.0f);
    // Other build options are another entry.
    void* program = nullptr;
    std::string message;
    ASSERT_EQ(second.Program(kKernels.c_str(), &program, &message, 0, "-DATOLL_TEST_VALUE=1"),
              ATOLL_OK)
        << message;
  }
  EXPECT_EQ(Entries(folder).size(), 6u);

  // A damaged entry is rebuilt from the source, and stored again.
  std::ofstream(one[0], std::ios::binary | std::ios::trunc) << "not a binary";
  {
    OpenBackend third(table(), config.c_str());
    EXPECT_EQ(VaddOnce(table(), third.get(), third.Kernel(kKernels.c_str(), "vadd", kVaddTypes)),
              8.0f);
  }
  EXPECT_GT(fs::file_size(one[0]), 100u);
}

TEST_F(OpenclBackend, TheDefaultCacheFollowsXdgCacheHome) {
  TempDir home;
  const char* saved = std::getenv("XDG_CACHE_HOME");
  std::string previous = saved != nullptr ? saved : "";
  ::setenv("XDG_CACHE_HOME", home.path().c_str(), 1);
  {
    OpenBackend defaults(table(), "{}");
    EXPECT_NE(defaults.Kernel(kKernels.c_str(), "vadd", kVaddTypes), nullptr);
  }
  if (saved != nullptr) {
    ::setenv("XDG_CACHE_HOME", previous.c_str(), 1);
  } else {
    ::unsetenv("XDG_CACHE_HOME");
  }
  EXPECT_EQ(Entries(home.path() + "/atoll/opencl").size(), 2u);
}

TEST_F(OpenclBackend, AnUnwritableCacheOnlyCostsRebuilds) {
  // /proc refuses new folders even to root.
  OpenBackend uncached(table(), R"({"cache_dir": "/proc/atoll-opencl-cache"})");
  ASSERT_NE(uncached.get(), nullptr);
  EXPECT_NE(uncached.Kernel(kKernels.c_str(), "vadd", kVaddTypes), nullptr);
  OpenBackend disabled(table(), R"({"cache_dir": null})");
  EXPECT_NE(disabled.Kernel(kKernels.c_str(), "vadd", kVaddTypes), nullptr);
}

TEST_F(OpenclBackend, ALostDeviceFailsItsWorkAndLeavesTheOthersWorking) {
  if (devices() < 2) {
    GTEST_SKIP() << "needs two OpenCL devices (PoCL gives two with POCL_DEVICES=\"pthread "
                    "pthread\", which this test sets unless POCL_DEVICES is set already)";
  }
  std::vector<cl_device_id> all = AllDevices();
  void* lost_vadd = Kernel("vadd", kVaddTypes, 0);
  void* other_vadd = Kernel("vadd", kVaddTypes, 1);
  Aligned<float> a(128), b(128), c(128);
  RunVadd(lost_vadd, a.data(), b.data(), c.data(), 128, 0);

  // The device fails a kernel while it runs, as a GPU does after a fault.
  testing::ArmFault(all[0], testing::Fault::kWhenRun, CL_DEVICE_NOT_AVAILABLE);
  int32_t n = 128;
  atoll_backend_arg_v1 args[] = {Array(a.data(), a.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
                                 Array(b.data(), b.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
                                 Array(c.data(), c.bytes(), "float*", ATOLL_BACKEND_ACCESS_WRITE),
                                 Scalar(n, "int")};
  std::string message;
  EXPECT_EQ(LaunchAndWait(table(), backend(), lost_vadd, args, 4, Geometry({128}), &message, 0, 0),
            ATOLL_UNAVAILABLE);
  EXPECT_THAT(message, HasSubstr("device 0 ("));
  EXPECT_THAT(message, HasSubstr("the run of kernel 'vadd' failed on the device with "
                                 "CL_DEVICE_NOT_AVAILABLE (-2)"));
  testing::DisarmFault();

  // From then on the device refuses work at once, naming why, even once the fault is gone.
  EXPECT_EQ(LaunchAndWait(table(), backend(), lost_vadd, args, 4, Geometry({128}), &message, 1, 0),
            ATOLL_UNAVAILABLE);
  EXPECT_THAT(message, HasSubstr("was lost (the run of kernel 'vadd' failed"));
  void* program = nullptr;
  EXPECT_EQ(backend_->Program(kKernels.c_str(), &program, &message, 0), ATOLL_UNAVAILABLE);
  EXPECT_THAT(message, HasSubstr("was lost"));
  atoll_backend_device_info_v1 info = Info(backend(), 0);
  EXPECT_GT(std::strlen(info.name), 0u);

  // The other device and its compute units go on.
  for (uint32_t unit = 0; unit < 2; ++unit) {
    RunVadd(other_vadd, a.data(), b.data(), c.data(), 128, 1, unit);
  }
}

TEST_F(OpenclBackend, ADeviceThatRefusesAnEnqueueIsTakenOutOfService) {
  if (devices() < 2) GTEST_SKIP() << "needs two OpenCL devices";
  std::vector<cl_device_id> all = AllDevices();
  void* other_vadd = Kernel("vadd", kVaddTypes, 0);
  void* lost_vadd = Kernel("vadd", kVaddTypes, 1);
  testing::ArmFault(all[1], testing::Fault::kWhenEnqueued, CL_DEVICE_NOT_AVAILABLE);
  Aligned<float> a(16), b(16), c(16);
  int32_t n = 16;
  atoll_backend_arg_v1 args[] = {Array(a.data(), a.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
                                 Array(b.data(), b.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
                                 Array(c.data(), c.bytes(), "float*", ATOLL_BACKEND_ACCESS_WRITE),
                                 Scalar(n, "int")};
  std::string message;
  EXPECT_EQ(LaunchAndWait(table(), backend(), lost_vadd, args, 4, Geometry({16}), &message, 0, 1),
            ATOLL_UNAVAILABLE);
  EXPECT_THAT(message, HasSubstr("enqueueing the kernel failed with CL_DEVICE_NOT_AVAILABLE"));
  testing::DisarmFault();
  EXPECT_EQ(LaunchAndWait(table(), backend(), lost_vadd, args, 4, Geometry({16}), &message, 0, 1),
            ATOLL_UNAVAILABLE);
  EXPECT_THAT(message, HasSubstr("device 1 ("));
  EXPECT_THAT(message, HasSubstr("was lost"));
  RunVadd(other_vadd, a.data(), b.data(), c.data(), 16, 0);
}

TEST_F(OpenclBackend, AFailedEnqueueThatIsNotALostDeviceLeavesTheComputeUnitWorking) {
  std::vector<cl_device_id> all = AllDevices();
  void* vadd = Kernel("vadd", kVaddTypes);
  testing::ArmFault(all[0], testing::Fault::kWhenEnqueued, CL_OUT_OF_RESOURCES);
  Aligned<float> a(16), b(16), c(16);
  int32_t n = 16;
  atoll_backend_arg_v1 args[] = {Array(a.data(), a.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
                                 Array(b.data(), b.bytes(), "float*", ATOLL_BACKEND_ACCESS_READ),
                                 Array(c.data(), c.bytes(), "float*", ATOLL_BACKEND_ACCESS_WRITE),
                                 Scalar(n, "int")};
  std::string message;
  EXPECT_EQ(LaunchAndWait(table(), backend(), vadd, args, 4, Geometry({16}), &message),
            ATOLL_UNAVAILABLE);
  EXPECT_THAT(message, HasSubstr("CL_OUT_OF_RESOURCES"));
  testing::DisarmFault();
  RunVadd(vadd, a.data(), b.data(), c.data(), 16);
}

}  // namespace
}  // namespace atl::opencl
