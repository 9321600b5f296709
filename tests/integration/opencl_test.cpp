// The opencl backend inside a real atolld, with the cpu backend disabled so that every request
// runs on OpenCL: the bundled accelerators' OpenCL versions, a Coral (InAccel) bitstream folder
// installed unchanged, and binaries that cannot run, each failing with a clear message while
// everything else goes on working. Skips when the machine has no OpenCL device.
#include <CL/cl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <inaccel/coral>
#include <nlohmann/json.hpp>

#include "atoll/atoll.hpp"
#include "test_daemon.h"

namespace atl::testing {
namespace {

using ::testing::HasSubstr;

bool HaveOpenclDevice() {
  cl_uint platforms = 0;
  if (clGetPlatformIDs(0, nullptr, &platforms) != CL_SUCCESS || platforms == 0) return false;
  std::vector<cl_platform_id> ids(platforms);
  clGetPlatformIDs(platforms, ids.data(), nullptr);
  for (cl_platform_id platform : ids) {
    cl_uint devices = 0;
    if (clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, nullptr, &devices) == CL_SUCCESS &&
        devices > 0) {
      return true;
    }
  }
  return false;
}

class OpenclDaemon : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!HaveOpenclDevice()) return;
    TestDaemon::Options options;
    options.install = {"vector-opencl",
                       "vector_int-opencl",
                       "vision-opencl",
                       "opencl_coral_vector-opencl",
                       "opencl_broken-opencl",
                       "opencl_missing_kernel-opencl",
                       "opencl_wrong_type-opencl",
                       "opencl_other_device-opencl"};
    // Only the opencl backend (not cpu, nor cuda where a GPU is), and no disk cache to leave
    // behind. TestDaemon turns opencl off with a flag unless a later one turns it on.
    options.config_json =
        R"({"backends": {"cpu": {"enabled": false}, "cuda": {"enabled": false}}})";
    options.extra_args = {"--backend", R"(opencl={"cache_dir": ""})"};
    daemon_ = new TestDaemon(options);
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override {
    if (daemon_ == nullptr) {
      GTEST_SKIP() << "no OpenCL device: install an OpenCL platform (scripts/install-deps.sh "
                      "installs PoCL) to run the opencl integration tests";
    }
    ::setenv("ATOLL_SOCKET", daemon_->socket().c_str(), 1);
  }

  static std::pair<atoll_status_code, std::string> Outcome(const atoll::request& r) {
    try {
      atoll::submit(r).get();
      return {ATOLL_OK, ""};
    } catch (const atoll::error& e) {
      return {e.code(), e.what()};
    }
  }

  // vector.addition on `n` floats must be right: what every failure test checks afterwards.
  static void ExpectVectorAdditionWorks(int n = 1000) {
    atoll::vector<float> a(n), b(n), c(n);
    for (int i = 0; i < n; ++i) {
      a[i] = static_cast<float>(i);
      b[i] = 0.5f * static_cast<float>(i);
    }
    atoll::request add("vector.addition");
    add.arg(a).arg(b).arg(c).arg(n);
    auto [code, message] = Outcome(add);
    ASSERT_EQ(code, ATOLL_OK) << message;
    for (int i = 0; i < n; ++i) ASSERT_EQ(c[i], a[i] + b[i]) << i;
  }

  static TestDaemon* daemon_;
};
TestDaemon* OpenclDaemon::daemon_ = nullptr;

TEST_F(OpenclDaemon, ListsTheOpenclDevices) {
  std::string command = TestDaemon::CliPath() + " devices --json";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(command.c_str(), "r"), &::pclose);
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char chunk[4096];
  size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof(chunk), pipe.get())) > 0) out.append(chunk, n);
  nlohmann::json devices = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(devices.is_array()) << out;
  ASSERT_GE(devices.size(), 1u) << out;
  for (const auto& device : devices) {
    EXPECT_EQ(device.value("backend", ""), "opencl") << device.dump();
    EXPECT_FALSE(device["platform"].value("vendor", "").empty()) << device.dump();
    EXPECT_EQ(device.value("compute_units", 0), 2) << device.dump();
  }
}

TEST_F(OpenclDaemon, RunsTheBundledAccelerators) {
  for (int size : {1, 7, 1024, 100000}) {
    SCOPED_TRACE(size);
    atoll::vector<float> a(size), b(size), c(size), d(size);
    std::mt19937 rng(size);
    std::uniform_real_distribution<float> dist(-100, 100);
    for (int i = 0; i < size; ++i) {
      a[i] = dist(rng);
      b[i] = dist(rng);
    }
    atoll::request add("vector.addition");
    add.arg(a).arg(b).arg(c).arg(size);
    atoll::request sub("vector.subtraction");
    sub.arg(a).arg(b).arg(d).arg(size);
    auto f1 = atoll::submit(add);
    auto f2 = atoll::submit(sub);
    f1.get();
    f2.get();
    for (int i = 0; i < size; ++i) {
      ASSERT_EQ(c[i], a[i] + b[i]) << i;
      ASSERT_EQ(d[i], a[i] - b[i]) << i;
    }
  }

  const int n = 5000;
  atoll::vector<int> x(n), y(n), z(n);
  for (int i = 0; i < n; ++i) {
    x[i] = i * 7919 - 2000000000;
    y[i] = 2000000000 - i;
  }
  atoll::request wrap("vector.int.addition");
  wrap.arg(x).arg(y).arg(z).arg(n);
  atoll::submit(wrap).get();
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(z[i], static_cast<int>(static_cast<unsigned>(x[i]) + static_cast<unsigned>(y[i])));
  }

  const int w = 67, h = 45;
  atoll::vector<short> coef = {1, 2, 1, 2, 4, 2, 1, 2, 1};
  atoll::vector<unsigned char> src(w * h), dst(w * h);
  for (int i = 0; i < w * h; ++i) src[i] = static_cast<unsigned char>((i * 37) % 251);
  float factor = 1.0f / 16;
  short bias = 3;
  int size = 3;
  atoll::request filter("vision.filter2d");
  filter.arg(coef).arg(size).arg(factor).arg(bias).arg(w).arg(h).arg(src).arg(dst);
  atoll::submit(filter).get();
  for (int yy = 0; yy < h; ++yy) {
    for (int xx = 0; xx < w; ++xx) {
      int sum = 0;
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          int r = yy + dy, col = xx + dx;
          int v = (r < 0 || r >= h || col < 0 || col >= w) ? 0 : src[r * w + col];
          sum += coef[(dy + 1) * 3 + (dx + 1)] * v;
        }
      }
      double value = std::round(sum * static_cast<double>(factor) + bias);
      ASSERT_EQ(dst[yy * w + xx], static_cast<int>(std::clamp(value, 0.0, 255.0)))
          << xx << "," << yy;
    }
  }
}

TEST_F(OpenclDaemon, ManyRequestsInFlightCompleteWithTheirOwnResults) {
  constexpr int kRequests = 200;
  constexpr int kSize = 4096;
  std::vector<std::unique_ptr<atoll::vector<float>>> outputs;
  atoll::vector<float> a(kSize), b(kSize);
  for (int i = 0; i < kSize; ++i) {
    a[i] = static_cast<float>(i);
    b[i] = 1.0f;
  }
  std::vector<std::unique_ptr<atoll::request>> requests;
  std::vector<std::future<void>> futures;
  std::vector<int> sizes;
  for (int r = 0; r < kRequests; ++r) {
    outputs.push_back(std::make_unique<atoll::vector<float>>(kSize));
    int size = kSize - r;
    sizes.push_back(size);
    auto request =
        std::make_unique<atoll::request>(r % 2 == 0 ? "vector.addition" : "vector.subtraction");
    request->arg(a).arg(b).arg(*outputs.back()).arg(sizes.back());
    futures.push_back(atoll::submit(*request));
    requests.push_back(std::move(request));
  }
  for (int r = 0; r < kRequests; ++r) {
    ASSERT_NO_THROW(futures[r].get()) << r;
    const atoll::vector<float>& c = *outputs[r];
    for (int i = 0; i < sizes[r]; ++i) {
      ASSERT_EQ(c[i], r % 2 == 0 ? a[i] + 1.0f : a[i] - 1.0f) << r << " " << i;
    }
  }
}

// A Coral program calls an InAccel bitstream folder (no platform block, no binary name, one kernel
// entry per compute unit, single work-item kernels), installed as it is.
TEST_F(OpenclDaemon, RunsACoralBitstreamFolderUnchanged) {
  int size = 1024;
  inaccel::vector<float> a(size), b(size), c(size);
  for (int i = 0; i < size; i++) {
    a[i] = static_cast<float>(i);
    b[i] = static_cast<float>(3 * i);
  }
  inaccel::request request("coral.vector.addition");
  request.arg(a).arg(b).arg(c).arg(size);
  std::future<void> response = inaccel::submit(request);
  ASSERT_NO_THROW(response.get());
  for (int i = 0; i < size; i++) ASSERT_EQ(c[i], a[i] + b[i]) << i;
}

// The bundled vector manifest marks its arrays "single_pass". The opencl backend does not take
// ATOLL_BACKEND_ACCESS_SINGLE_PASS and refuses an access it does not know, so this passes only if
// the daemon leaves the manifest's hint out for it.
TEST_F(OpenclDaemon, SinglePassArraysRunOnABackendThatIgnoresTheHint) {
  int size = 777;
  atoll::vector<float> a(size), b(size), c(size);
  for (int i = 0; i < size; i++) {
    a[i] = static_cast<float>(i);
    b[i] = static_cast<float>(2 * i + 1);
  }
  atoll::request request("vector.addition");
  request.arg(a).arg(b).arg(c).arg(size);
  auto [code, message] = Outcome(request);
  ASSERT_EQ(code, ATOLL_OK) << message;
  for (int i = 0; i < size; i++) ASSERT_EQ(c[i], a[i] + b[i]) << i;
}

TEST_F(OpenclDaemon, SourceThatDoesNotCompileFailsWithTheBuildLog) {
  atoll::vector<int> x(4);
  atoll::request r("opencl.broken.run");
  r.arg(x);
  auto [code, message] = Outcome(r);
  EXPECT_EQ(code, ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("broken.cl' does not build for device 0"));
  EXPECT_THAT(message, HasSubstr("atoll_undeclared_identifier"));
  ExpectVectorAdditionWorks();
}

TEST_F(OpenclDaemon, AKernelTheBinaryLacksIsNotFound) {
  int n = 16;
  atoll::vector<float> a(n), b(n), c(n);
  atoll::request r("opencl.missing.multiplication");
  r.arg(a).arg(b).arg(c).arg(n);
  auto [code, message] = Outcome(r);
  EXPECT_EQ(code, ATOLL_NOT_FOUND);
  EXPECT_THAT(message, HasSubstr("has no kernel 'vmul'; it has "));
  EXPECT_THAT(message, HasSubstr("vsub"));
  ExpectVectorAdditionWorks();
}

TEST_F(OpenclDaemon, AnArgumentTypeTheKernelDoesNotTakeIsRefused) {
  int n = 16;
  atoll::vector<int> a(n), b(n), c(n);
  atoll::request r("opencl.wrong.addition");
  r.arg(a).arg(b).arg(c).arg(n);
  auto [code, message] = Outcome(r);
  EXPECT_EQ(code, ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("argument 0 'a' is 'float*' in the kernel but 'int*' in the "
                                 "manifest"));
  ExpectVectorAdditionWorks();
}

TEST_F(OpenclDaemon, ABinaryBuiltForAnotherDeviceIsRefused) {
  int n = 16;
  atoll::vector<float> a(n), b(n), c(n);
  atoll::request r("opencl.fpga.addition");
  r.arg(a).arg(b).arg(c).arg(n);
  auto [code, message] = Outcome(r);
  EXPECT_EQ(code, ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("(a Xilinx .xclbin) does not load on device 0"));
  EXPECT_THAT(message, HasSubstr("CL_INVALID_BINARY"));
  ExpectVectorAdditionWorks();
}

}  // namespace
}  // namespace atl::testing
