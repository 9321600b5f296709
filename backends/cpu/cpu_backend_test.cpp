#include <sys/utsname.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "atoll/atoll.h"
#include "atoll/backend.h"
#include "cpu_backend_testing.h"

namespace atl::cpu {
namespace {

using testing::Array;
using testing::Completion;
using ::testing::HasSubstr;
using testing::LaunchAndWait;
using testing::OpenBackend;
using testing::Plugin;
using testing::Scalar;

class CpuBackend : public ::testing::Test {
 protected:
  const atoll_backend_v1* table() const { return plugin_.table(); }

  atoll_backend_device_info_v1 Info(void* backend, uint32_t device) {
    atoll_backend_device_info_v1 info{};
    info.struct_size = sizeof(info);
    char error[256] = "";
    EXPECT_EQ(table()->device_info(backend, device, &info, error, sizeof(error)), ATOLL_OK)
        << error;
    return info;
  }

  // Programs device 0 and returns the status, with the program or the message.
  int Program(void* backend, const char* path, void** program, std::string* message) {
    char error[512] = "";
    int status = table()->program(backend, 0, path, "", program, error, sizeof(error));
    *message = error;
    return status;
  }

  Plugin plugin_{ATOLL_TEST_BACKEND_PATH};
};

TEST_F(CpuBackend, ExportsAVersionedTable) {
  ASSERT_NE(table(), nullptr);
  EXPECT_EQ(table()->abi_version, ATOLL_BACKEND_ABI_VERSION);
  EXPECT_EQ(table()->struct_size, sizeof(atoll_backend_v1));
  EXPECT_STREQ(table()->name, "cpu");
  EXPECT_NE(table()->open, nullptr);
  EXPECT_NE(table()->close, nullptr);
  EXPECT_NE(table()->device_count, nullptr);
  EXPECT_NE(table()->device_info, nullptr);
  EXPECT_NE(table()->program, nullptr);
  EXPECT_NE(table()->release_program, nullptr);
  EXPECT_NE(table()->kernel, nullptr);
  EXPECT_NE(table()->launch, nullptr);
  EXPECT_EQ(table()->register_memory, nullptr);
  EXPECT_EQ(table()->unregister_memory, nullptr);
}

TEST_F(CpuBackend, OpensWithDefaults) {
  OpenBackend backend(table(), "{}");
  ASSERT_EQ(table()->device_count(backend.get()), 1u);
  atoll_backend_device_info_v1 info = Info(backend.get(), 0);
  struct utsname name;
  ASSERT_EQ(uname(&name), 0);
  EXPECT_EQ(info.struct_size, sizeof(info));
  EXPECT_STREQ(info.vendor, "atoll");
  EXPECT_GT(std::strlen(info.name), 0u);
  EXPECT_STREQ(info.platform_vendor, "atoll");
  EXPECT_STREQ(info.platform_name, name.machine);
  EXPECT_STREQ(info.platform_version, "1");
  EXPECT_STREQ(info.pci_id, "");
  EXPECT_STREQ(info.serial, "");
  EXPECT_GT(info.global_memory_bytes, 0);
  EXPECT_EQ(info.temperature_c, -1);
  EXPECT_EQ(info.power_mw, -1);
  EXPECT_EQ(info.compute_units, 2u);
  EXPECT_EQ(info.binaries_at_once, 0u);
  EXPECT_EQ(info.compute_units_by_binary, 0u);
}

TEST_F(CpuBackend, OpensTheConfiguredDevicesAndComputeUnits) {
  OpenBackend backend(table(), R"({"devices": 3, "compute_units": 4})");
  ASSERT_EQ(table()->device_count(backend.get()), 3u);
  for (uint32_t device = 0; device < 3; ++device) {
    EXPECT_EQ(Info(backend.get(), device).compute_units, 4u);
  }
  OpenBackend by_manifest(table(), R"({"compute_units": 4, "compute_units_by_manifest": true})");
  EXPECT_EQ(Info(by_manifest.get(), 0).compute_units_by_binary, 1u);
}

TEST_F(CpuBackend, RejectsAnInvalidConfigurationNamingTheField) {
  struct Case {
    const char* config;
    const char* named;
  };
  const Case cases[] = {
      {R"({"devices": 0})", "\"devices\""},
      {R"({"devices": 65})", "\"devices\""},
      {R"({"devices": -1})", "\"devices\""},
      {R"({"devices": "two"})", "\"devices\""},
      {R"({"devices": 1.5})", "\"devices\""},
      {R"({"compute_units": 0})", "\"compute_units\""},
      {R"({"compute_units": 257})", "\"compute_units\""},
      {R"({"compute_units": 18446744073709551615})", "\"compute_units\""},
      {R"({"spin_us": 1001})", "\"spin_us\""},
      {R"({"binaries_at_once": 65})", "\"binaries_at_once\""},
      {R"({"program_delay_ms": -5})", "\"program_delay_ms\""},
      {R"({"compute_units_by_manifest": "yes"})", "\"compute_units_by_manifest\""},
      {R"({"platform_name": ""})", "\"platform_name\""},
      {R"({"platform_name": []})", "\"platform_name\""},
      {R"({"platform_name": ["a", 3]})", "\"platform_name\""},
      {R"({"devices": 3, "platform_name": ["a", "b"]})", "lists 2 names but there are 3"},
      {R"({"device": 2})", "unknown field \"device\""},
      {R"([1, 2])", "JSON object"},
      {R"({"devices": )", "not valid JSON"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.config);
    void* backend = reinterpret_cast<void*>(1);
    char error[512] = "";
    EXPECT_EQ(table()->open(c.config, &backend, error, sizeof(error)), ATOLL_INVALID_ARGUMENT);
    EXPECT_EQ(backend, nullptr);
    EXPECT_THAT(error, HasSubstr(c.named));
  }
}

TEST_F(CpuBackend, SimulatesDevicesOfOtherPlatformsThatHoldFewBinaries) {
  OpenBackend backend(table(), R"({"devices": 3, "compute_units": 2, "binaries_at_once": 1,
                                   "platform_name": ["alpha", "beta", "alpha"]})");
  ASSERT_EQ(table()->device_count(backend.get()), 3u);
  EXPECT_STREQ(Info(backend.get(), 0).platform_name, "alpha");
  EXPECT_STREQ(Info(backend.get(), 1).platform_name, "beta");
  EXPECT_STREQ(Info(backend.get(), 2).platform_name, "alpha");
  EXPECT_EQ(Info(backend.get(), 1).binaries_at_once, 1u);

  // A device holding its one binary refuses another until the first is released; other devices
  // are independent.
  void* first = nullptr;
  std::string message;
  ASSERT_EQ(Program(backend.get(), ATOLL_TEST_KERNELS_PATH, &first, &message), ATOLL_OK) << message;
  void* second = nullptr;
  EXPECT_EQ(Program(backend.get(), ATOLL_TEST_KERNELS_PATH, &second, &message),
            ATOLL_FAILED_PRECONDITION);
  EXPECT_THAT(message, HasSubstr("device 0 already holds 1 binaries"));
  char error[256] = "";
  void* other = nullptr;
  EXPECT_EQ(
      table()->program(backend.get(), 1, ATOLL_TEST_KERNELS_PATH, "", &other, error, sizeof(error)),
      ATOLL_OK)
      << error;
  table()->release_program(backend.get(), first);
  EXPECT_EQ(Program(backend.get(), ATOLL_TEST_KERNELS_PATH, &second, &message), ATOLL_OK)
      << message;

  OpenBackend one_name(table(), R"({"devices": 2, "platform_name": "gamma"})");
  EXPECT_STREQ(Info(one_name.get(), 1).platform_name, "gamma");
  EXPECT_EQ(Info(one_name.get(), 1).binaries_at_once, 0u);
}

TEST_F(CpuBackend, ProgrammingTakesTheConfiguredDelay) {
  OpenBackend backend(table(), R"({"program_delay_ms": 60})");
  void* program = nullptr;
  std::string message;
  auto begin = std::chrono::steady_clock::now();
  ASSERT_EQ(Program(backend.get(), ATOLL_TEST_KERNELS_PATH, &program, &message), ATOLL_OK)
      << message;
  EXPECT_GE(std::chrono::steady_clock::now() - begin, std::chrono::milliseconds(60));
}

TEST_F(CpuBackend, TruncatesErrorMessagesToTheBuffer) {
  void* backend = nullptr;
  char error[8];
  std::memset(error, 'x', sizeof(error));
  EXPECT_EQ(table()->open(R"({"devices": 0})", &backend, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_EQ(std::strlen(error), sizeof(error) - 1);
  EXPECT_EQ(table()->open(R"({"devices": 0})", &backend, nullptr, 0), ATOLL_INVALID_ARGUMENT);
}

TEST_F(CpuBackend, DeviceInfoRejectsAMissingDeviceAndASmallStruct) {
  OpenBackend backend(table(), "{}");
  atoll_backend_device_info_v1 info{};
  info.struct_size = sizeof(info);
  char error[256] = "";
  EXPECT_EQ(table()->device_info(backend.get(), 1, &info, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("device 1 does not exist"));
  info.struct_size = 16;
  EXPECT_EQ(table()->device_info(backend.get(), 0, &info, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("struct_size"));
}

TEST_F(CpuBackend, ProgramReportsAMissingFileAsNotFound) {
  OpenBackend backend(table(), "{}");
  void* program = nullptr;
  std::string message;
  EXPECT_EQ(Program(backend.get(), "/nonexistent/vector.so", &program, &message), ATOLL_NOT_FOUND);
  EXPECT_EQ(program, nullptr);
  EXPECT_THAT(message, HasSubstr("/nonexistent/vector.so"));
  // A bare file name is looked up in the working folder, never in the library search path.
  EXPECT_EQ(Program(backend.get(), "libc.so.6", &program, &message), ATOLL_NOT_FOUND);
  EXPECT_THAT(message, HasSubstr("'libc.so.6'"));
}

TEST_F(CpuBackend, ProgramRejectsAFileThatIsNotASharedLibrary) {
  OpenBackend backend(table(), "{}");
  void* program = nullptr;
  std::string message;
  EXPECT_EQ(Program(backend.get(), ATOLL_TEST_NOT_A_BINARY_PATH, &program, &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr(ATOLL_TEST_NOT_A_BINARY_PATH));
  EXPECT_THAT(message, HasSubstr("cannot be loaded as a shared library"));
}

TEST_F(CpuBackend, ProgramRejectsALibraryWithoutAbiVersion) {
  OpenBackend backend(table(), "{}");
  void* program = nullptr;
  std::string message;
  EXPECT_EQ(Program(backend.get(), ATOLL_TEST_NO_ABI_VERSION_PATH, &program, &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("atoll_cpu_abi_version"));
  EXPECT_THAT(message, HasSubstr("ATOLL_CPU_BINARY()"));
}

TEST_F(CpuBackend, ProgramRejectsAnotherAbiVersion) {
  OpenBackend backend(table(), "{}");
  void* program = nullptr;
  std::string message;
  EXPECT_EQ(Program(backend.get(), ATOLL_TEST_WRONG_ABI_VERSION_PATH, &program, &message),
            ATOLL_FAILED_PRECONDITION);
  EXPECT_THAT(message, HasSubstr("ABI version 2"));
}

TEST_F(CpuBackend, ProgramRejectsAMissingDevice) {
  OpenBackend backend(table(), "{}");
  void* program = nullptr;
  char error[256] = "";
  EXPECT_EQ(table()->program(backend.get(), 1, ATOLL_TEST_KERNELS_PATH, "", &program, error,
                             sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("device 1 does not exist"));
}

TEST_F(CpuBackend, KernelNamesTheMissingSymbol) {
  OpenBackend backend(table(), "{}");
  void* program = nullptr;
  std::string message;
  ASSERT_EQ(Program(backend.get(), ATOLL_TEST_KERNELS_PATH, &program, &message), ATOLL_OK)
      << message;
  void* kernel = nullptr;
  char error[512] = "";
  EXPECT_EQ(
      table()->kernel(backend.get(), program, "vmul", nullptr, 0, &kernel, error, sizeof(error)),
      ATOLL_NOT_FOUND);
  EXPECT_EQ(kernel, nullptr);
  EXPECT_EQ(std::string(error), std::string("binary ") + ATOLL_TEST_KERNELS_PATH +
                                    " has no kernel 'vmul' (expected exported symbol "
                                    "atoll_kernel_vmul)");
}

TEST_F(CpuBackend, KernelHandlesLastAsLongAsTheProgram) {
  OpenBackend backend(table(), "{}");
  void* program = nullptr;
  std::string message;
  ASSERT_EQ(Program(backend.get(), ATOLL_TEST_KERNELS_PATH, &program, &message), ATOLL_OK);
  void* first = nullptr;
  void* second = nullptr;
  char error[256] = "";
  ASSERT_EQ(
      table()->kernel(backend.get(), program, "count", nullptr, 0, &first, error, sizeof(error)),
      ATOLL_OK);
  ASSERT_EQ(
      table()->kernel(backend.get(), program, "count", nullptr, 0, &second, error, sizeof(error)),
      ATOLL_OK);
  EXPECT_EQ(first, second);
  table()->release_program(backend.get(), program);
  EXPECT_EQ(
      table()->kernel(backend.get(), program, "count", nullptr, 0, &first, error, sizeof(error)),
      ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("unknown program handle"));
  // Programming again after a release loads the binary afresh.
  void* kernel = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "count");
  uint32_t counter = 0;
  uint32_t index = 0;
  atoll_backend_arg_v1 args[] = {Array(&counter, sizeof(counter), "unsigned int*"),
                                 Scalar(index, "unsigned int")};
  EXPECT_EQ(LaunchAndWait(table(), backend.get(), kernel, args, 2), ATOLL_OK);
  EXPECT_EQ(counter, 1u);
}

TEST_F(CpuBackend, LaunchCopiesScalarsAndTypesBeforeReturning) {
  OpenBackend backend(table(), "{}");
  void* wait_flag = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "wait_flag");
  void* echo_scalars = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "echo_scalars");
  void* echo_types = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "echo_types");

  // Hold compute unit 0, so the echoes run only after their arguments were overwritten.
  int flag = 0;
  atoll_backend_arg_v1 flag_args[] = {Array(&flag, sizeof(flag), "int*")};
  Completion waited, scalars_done, types_done;
  char error[256] = "";
  ASSERT_EQ(table()->launch(backend.get(), 0, 0, wait_flag, flag_args, 1, nullptr, Completion::Done,
                            &waited, error, sizeof(error)),
            ATOLL_OK)
      << error;

  // Many arguments, and one scalar of 4096 bytes, go past any small inline storage.
  constexpr int kSmall = 40;
  std::vector<unsigned char> out(kSmall * 8 + 4096 + 1);
  std::vector<uint64_t> small(kSmall);
  std::vector<unsigned char> large(4096);
  char one_byte = 'z';
  for (int i = 0; i < kSmall; ++i) small[i] = 0x0101010101010101ull * (i + 1);
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<unsigned char>(i * 7);
  std::vector<atoll_backend_arg_v1> args;
  args.push_back(Array(out.data(), out.size(), "unsigned char*"));
  for (int i = 0; i < kSmall; ++i) args.push_back(Scalar(small[i], "unsigned long"));
  args.push_back({ATOLL_BACKEND_ARG_SCALAR, 0, "struct", large.data(), large.size()});
  args.push_back(Scalar(one_byte, "char"));
  ASSERT_EQ(table()->launch(backend.get(), 0, 0, echo_scalars, args.data(),
                            static_cast<uint32_t>(args.size()), nullptr, Completion::Done,
                            &scalars_done, error, sizeof(error)),
            ATOLL_OK)
      << error;

  char types_out[64] = "";
  std::string type_a = "float*";
  std::string type_b = "int";
  int scalar = 7;
  atoll_backend_arg_v1 type_args[] = {Array(types_out, sizeof(types_out), type_a.c_str()),
                                      Scalar(scalar, type_b.c_str())};
  ASSERT_EQ(table()->launch(backend.get(), 0, 0, echo_types, type_args, 2, nullptr,
                            Completion::Done, &types_done, error, sizeof(error)),
            ATOLL_OK)
      << error;

  std::vector<uint64_t> expected_small = small;
  std::vector<unsigned char> expected_large = large;
  std::fill(small.begin(), small.end(), 0);
  std::fill(large.begin(), large.end(), 0);
  one_byte = 0;
  type_a.assign("XXXXXX");
  type_b.assign("YYY");
  __atomic_store_n(&flag, 1, __ATOMIC_RELEASE);

  ASSERT_TRUE(waited.Wait());
  ASSERT_TRUE(scalars_done.Wait());
  ASSERT_TRUE(types_done.Wait());
  EXPECT_EQ(scalars_done.status, ATOLL_OK) << scalars_done.message;
  EXPECT_EQ(types_done.status, ATOLL_OK) << types_done.message;
  EXPECT_EQ(std::memcmp(out.data(), expected_small.data(), kSmall * 8), 0);
  EXPECT_EQ(std::memcmp(out.data() + kSmall * 8, expected_large.data(), 4096), 0);
  EXPECT_EQ(out[kSmall * 8 + 4096], 'z');
  EXPECT_STREQ(types_out, "float*,int");
}

TEST_F(CpuBackend, ManyConcurrentLaunchesCompleteExactlyOnce) {
  constexpr uint32_t kDevices = 3;
  constexpr uint32_t kComputeUnits = 4;
  constexpr uint32_t kThreads = 4;
  constexpr uint32_t kPerThread = 1500;
  constexpr uint32_t kLaunches = kThreads * kPerThread;
  OpenBackend backend(table(), R"({"devices": 3, "compute_units": 4})");
  // Programs are process-wide for the cpu backend, so one kernel handle serves every device.
  void* count = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "count");
  ASSERT_NE(count, nullptr);

  struct Tracker {
    std::atomic<int> calls{0};
    std::atomic<int> status{-1};
    std::atomic<uint32_t>* finished = nullptr;
  };
  std::vector<uint32_t> counters(kLaunches, 0);
  std::vector<uint32_t> indexes(kLaunches);
  std::vector<Tracker> trackers(kLaunches);
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
      for (uint32_t n = 0; n < kPerThread; ++n) {
        uint32_t i = t * kPerThread + n;
        atoll_backend_arg_v1 args[] = {
            Array(counters.data(), counters.size() * sizeof(uint32_t), "unsigned int*"),
            Scalar(indexes[i], "unsigned int")};
        uint32_t slot = i % (kDevices * kComputeUnits);
        if (table()->launch(backend.get(), slot / kComputeUnits, slot % kComputeUnits, count, args,
                            2, nullptr, done, &trackers[i], error, sizeof(error)) != ATOLL_OK) {
          launch_errors.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(launch_errors.load(), 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (finished.load(std::memory_order_acquire) < kLaunches &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(finished.load(std::memory_order_acquire), kLaunches);
  for (uint32_t i = 0; i < kLaunches; ++i) {
    ASSERT_EQ(trackers[i].calls.load(), 1) << "launch " << i;
    ASSERT_EQ(trackers[i].status.load(), ATOLL_OK) << "launch " << i;
    ASSERT_EQ(__atomic_load_n(&counters[i], __ATOMIC_RELAXED), 1u) << "launch " << i;
  }
}

TEST_F(CpuBackend, KernelErrorsReachDone) {
  OpenBackend backend(table(), "{}");
  void* fail = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "fail");
  std::string message;

  int code = ATOLL_OUT_OF_RANGE;
  atoll_backend_arg_v1 args[] = {Scalar(code, "int")};
  EXPECT_EQ(LaunchAndWait(table(), backend.get(), fail, args, 1, &message), ATOLL_OUT_OF_RANGE);
  EXPECT_EQ(message, "failing on purpose with code 11");

  // A kernel's message is dropped on success: done's message is "" then.
  code = ATOLL_OK;
  EXPECT_EQ(LaunchAndWait(table(), backend.get(), fail, args, 1, &message), ATOLL_OK);
  EXPECT_EQ(message, "");

  code = 99;
  EXPECT_EQ(LaunchAndWait(table(), backend.get(), fail, args, 1, &message), ATOLL_UNKNOWN);
  EXPECT_THAT(message, HasSubstr("returned 99, which is not an atoll_status_code"));
  EXPECT_THAT(message, HasSubstr("failing on purpose with code 99"));

  void* silent = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "fail_silently");
  EXPECT_EQ(LaunchAndWait(table(), backend.get(), silent, nullptr, 0, &message),
            ATOLL_FAILED_PRECONDITION);
  EXPECT_THAT(message, HasSubstr("kernel 'fail_silently'"));
  EXPECT_THAT(message, HasSubstr("no message"));

  void* throws = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "throw_exception");
  EXPECT_EQ(LaunchAndWait(table(), backend.get(), throws, nullptr, 0, &message), ATOLL_INTERNAL);
  EXPECT_THAT(message, HasSubstr("thrown on purpose"));
}

TEST_F(CpuBackend, LaunchRejectsBadArgumentsWithoutCallingDone) {
  OpenBackend backend(table(), "{}");
  void* count = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "count");
  uint32_t counter = 0;
  uint32_t index = 0;
  atoll_backend_arg_v1 args[] = {Array(&counter, sizeof(counter), "unsigned int*"),
                                 Scalar(index, "unsigned int")};
  Completion completion;
  char error[256] = "";
  EXPECT_EQ(table()->launch(backend.get(), 1, 0, count, args, 2, nullptr, Completion::Done,
                            &completion, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("device 1 does not exist"));
  EXPECT_EQ(table()->launch(backend.get(), 0, 2, count, args, 2, nullptr, Completion::Done,
                            &completion, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("compute unit 2 does not exist"));
  EXPECT_EQ(table()->launch(backend.get(), 0, 0, nullptr, args, 2, nullptr, Completion::Done,
                            &completion, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  uint64_t not_a_kernel[16] = {};
  EXPECT_EQ(table()->launch(backend.get(), 0, 0, not_a_kernel, args, 2, nullptr, Completion::Done,
                            &completion, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("not a handle"));
  EXPECT_EQ(table()->launch(backend.get(), 0, 0, count, args, 2, nullptr, nullptr, &completion,
                            error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  atoll_backend_arg_v1 bad_kind[] = {args[0], args[1]};
  bad_kind[1].kind = 7;
  EXPECT_EQ(table()->launch(backend.get(), 0, 0, count, bad_kind, 2, nullptr, Completion::Done,
                            &completion, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("argument 1 has kind 7"));
  atoll_backend_arg_v1 null_data[] = {args[0], args[1]};
  null_data[0].data = nullptr;
  EXPECT_EQ(table()->launch(backend.get(), 0, 0, count, null_data, 2, nullptr, Completion::Done,
                            &completion, error, sizeof(error)),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(error, HasSubstr("argument 0 has 4 bytes at NULL"));
  backend.Close();
  EXPECT_EQ(completion.calls, 0);
  EXPECT_EQ(counter, 0u);
}

TEST_F(CpuBackend, CloseRunsQueuedLaunchesAndCallsTheirDone) {
  constexpr uint32_t kQueued = 20;
  OpenBackend backend(table(), R"({"devices": 2, "compute_units": 2})");
  void* sleep_us = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "sleep_us");
  void* count = backend.Kernel(ATOLL_TEST_KERNELS_PATH, "count");
  std::vector<uint32_t> counters(4 * kQueued, 0);
  std::vector<uint32_t> indexes(4 * kQueued);
  std::atomic<int> done_calls{0};
  auto done = [](void* user, int status, const char* message) {
    EXPECT_EQ(status, ATOLL_OK) << message;
    static_cast<std::atomic<int>*>(user)->fetch_add(1);
  };
  uint32_t sleep_time_us = 20000;
  char error[256] = "";
  for (uint32_t device = 0; device < 2; ++device) {
    for (uint32_t unit = 0; unit < 2; ++unit) {
      atoll_backend_arg_v1 sleep_args[] = {Scalar(sleep_time_us, "unsigned int")};
      ASSERT_EQ(table()->launch(backend.get(), device, unit, sleep_us, sleep_args, 1, nullptr, done,
                                &done_calls, error, sizeof(error)),
                ATOLL_OK)
          << error;
      for (uint32_t n = 0; n < kQueued; ++n) {
        uint32_t i = (device * 2 + unit) * kQueued + n;
        indexes[i] = i;
        atoll_backend_arg_v1 args[] = {
            Array(counters.data(), counters.size() * sizeof(uint32_t), "unsigned int*"),
            Scalar(indexes[i], "unsigned int")};
        ASSERT_EQ(table()->launch(backend.get(), device, unit, count, args, 2, nullptr, done,
                                  &done_calls, error, sizeof(error)),
                  ATOLL_OK)
            << error;
      }
    }
  }
  EXPECT_LT(done_calls.load(), static_cast<int>(4 * (kQueued + 1)));
  backend.Close();
  EXPECT_EQ(done_calls.load(), static_cast<int>(4 * (kQueued + 1)));
  for (uint32_t i = 0; i < counters.size(); ++i) EXPECT_EQ(counters[i], 1u) << i;
}

}  // namespace
}  // namespace atl::cpu
