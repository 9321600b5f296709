// The cuda backend plugin loaded as atolld loads it, on any machine, GPU or not: its table, its
// configuration errors, and a machine without a usable driver (a missing library, the toolkit's
// stub library), where it must open with no device and say why.
#include <unistd.h>

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "atoll/backend.h"
#include "cuda_backend_testing.h"

namespace atl::cuda {
namespace {

using ::testing::HasSubstr;
using testing::OpenBackend;
using testing::Plugin;

class CudaBackend : public ::testing::Test {
 protected:
  const atoll_backend_v1* table() const { return plugin_.table(); }
  Plugin plugin_{ATOLL_TEST_CUDA_BACKEND_PATH};
};

TEST_F(CudaBackend, ExportsAVersionedTable) {
  ASSERT_NE(table(), nullptr);
  EXPECT_EQ(table()->abi_version, ATOLL_BACKEND_ABI_VERSION);
  EXPECT_EQ(table()->struct_size, sizeof(atoll_backend_v1));
  EXPECT_STREQ(table()->name, "cuda");
  EXPECT_NE(table()->open, nullptr);
  EXPECT_NE(table()->close, nullptr);
  EXPECT_NE(table()->device_count, nullptr);
  EXPECT_NE(table()->device_info, nullptr);
  EXPECT_NE(table()->program, nullptr);
  EXPECT_NE(table()->release_program, nullptr);
  EXPECT_NE(table()->kernel, nullptr);
  EXPECT_NE(table()->launch, nullptr);
  // Client buffers are pinned once, when the daemon maps them.
  EXPECT_NE(table()->register_memory, nullptr);
  EXPECT_NE(table()->unregister_memory, nullptr);
}

TEST_F(CudaBackend, WithoutADriverOpensWithNoDeviceAndSaysWhy) {
  OpenBackend backend(table(), R"({"driver_library": "/nonexistent/libcuda.so.1"})");
  ASSERT_NE(backend.get(), nullptr);
  EXPECT_EQ(backend.devices(), 0u);
  std::string reason = backend.NoDeviceReason();
  EXPECT_THAT(reason, HasSubstr("device 0 does not exist"));
  EXPECT_THAT(reason, HasSubstr("'/nonexistent/libcuda.so.1' cannot be loaded"));
  // Every call that needs a GPU refuses clearly.
  void* program = nullptr;
  std::string message;
  EXPECT_EQ(backend.Program("/nonexistent.fatbin", &program, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("cannot be loaded"));
  char error[1024] = "";
  int data = 0;
  EXPECT_EQ(table()->register_memory(backend.get(), &data, sizeof(data), error, sizeof(error)),
            ATOLL_FAILED_PRECONDITION);
  EXPECT_THAT(error, HasSubstr("no GPU"));
  table()->unregister_memory(backend.get(), &data);  // harmless
}

TEST_F(CudaBackend, WithTheToolkitsStubDriverOpensWithNoDevice) {
  // Where CMake found it, else where toolkits put it (a GPU machine may have another layout).
  std::string stub;
  for (const char* candidate :
       {ATOLL_TEST_CUDA_STUB_DRIVER, "/usr/local/cuda/lib64/stubs/libcuda.so",
        "/usr/local/cuda/targets/x86_64-linux/lib/stubs/libcuda.so"}) {
    if (stub.empty() && candidate[0] != '\0' && access(candidate, R_OK) == 0) stub = candidate;
  }
  if (stub.empty()) GTEST_SKIP() << "the CUDA toolkit's stub libcuda.so is not on this machine";
  std::string config = R"({"driver_library": ")" + stub + R"("})";
  OpenBackend backend(table(), config.c_str());
  ASSERT_NE(backend.get(), nullptr);
  EXPECT_EQ(backend.devices(), 0u);
  std::string reason = backend.NoDeviceReason();
  EXPECT_THAT(reason, HasSubstr("cuInit failed with CUDA_ERROR_STUB_LIBRARY"));
  EXPECT_THAT(reason, HasSubstr("stub library, not a driver"));
}

TEST_F(CudaBackend, OpensWithTheDefaultDriverWhateverTheMachine) {
  // No GPU (CI) or a GPU: open succeeds either way, and a missing GPU comes with a reason.
  OpenBackend backend(table(), "{}");
  ASSERT_NE(backend.get(), nullptr);
  if (backend.devices() == 0) {
    std::string reason = backend.NoDeviceReason();
    EXPECT_THAT(reason, HasSubstr("(")) << "no reason given: " << reason;
    std::printf("no GPU here: %s\n", reason.c_str());
  }
}

TEST_F(CudaBackend, RefusesAnInvalidConfigurationNamingTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"streams": 0})", "\"streams\""},
      {R"({"pool_bytes": "lots"})", "\"pool_bytes\""},
      {R"({"devices": "all"})", "\"devices\""},
      {R"({"stream": 4})", "unknown field \"stream\""},
      {R"([1, 2])", "JSON object"},
      {R"({"streams": )", "not valid JSON"},
  };
  for (const auto& [config, named] : cases) {
    SCOPED_TRACE(config);
    void* backend = reinterpret_cast<void*>(1);
    char error[1024] = "";
    EXPECT_EQ(table()->open(config, &backend, error, sizeof(error)), ATOLL_INVALID_ARGUMENT);
    EXPECT_EQ(backend, nullptr);
    EXPECT_THAT(error, HasSubstr("cuda backend configuration"));
    EXPECT_THAT(error, HasSubstr(named));
  }
}

TEST_F(CudaBackend, RefusesNullArguments) {
  OpenBackend backend(table(), R"({"driver_library": "/nonexistent/libcuda.so.1"})");
  char error[512] = "";
  EXPECT_EQ(table()->open("{}", nullptr, error, sizeof(error)), ATOLL_INVALID_ARGUMENT);
  EXPECT_EQ(table()->device_info(backend.get(), 0, nullptr, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  void* kernel = nullptr;
  EXPECT_EQ(
      table()->kernel(backend.get(), nullptr, "vadd", nullptr, 0, &kernel, error, sizeof(error)),
      ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("unknown program handle"));
  // Large enough that the backend's magic check reads only this object.
  uint64_t not_a_kernel[8] = {};
  atoll_backend_geometry_v1 geometry{};
  EXPECT_EQ(table()->launch(backend.get(), 0, 0, not_a_kernel, nullptr, 0, &geometry,
                            testing::Completion::Done, nullptr, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("not a handle"));
  // A message longer than the buffer is truncated, still NUL-terminated.
  char tiny[8];
  std::memset(tiny, 'x', sizeof(tiny));
  table()->device_info(backend.get(), 3, nullptr, tiny, sizeof(tiny));
  EXPECT_EQ(tiny[7], '\0');
  table()->release_program(backend.get(), nullptr);
  EXPECT_EQ(table()->device_count(nullptr), 0u);
}

}  // namespace
}  // namespace atl::cuda
