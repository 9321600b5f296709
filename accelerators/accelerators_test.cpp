// Runs the bundled accelerators through the cpu backend, loaded as atolld loads it, and checks
// their manifests and results against references written here.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "atoll/atoll.h"
#include "atoll/backend.h"
#include "cpu_backend_testing.h"

namespace {

using ::atl::cpu::testing::Array;
using ::atl::cpu::testing::LaunchAndWait;
using ::atl::cpu::testing::OpenBackend;
using ::atl::cpu::testing::Plugin;
using ::atl::cpu::testing::Scalar;
using ::testing::HasSubstr;

const std::filesystem::path kAcceleratorDir = ATOLL_TEST_ACCELERATOR_DIR;

nlohmann::json ReadManifest(const std::string& folder) {
  std::ifstream file(kAcceleratorDir / folder / "bitstream.json");
  EXPECT_TRUE(file.good()) << "no bitstream.json in " << (kAcceleratorDir / folder);
  std::stringstream text;
  text << file.rdbuf();
  return nlohmann::json::parse(text.str());
}

std::string BinaryPath(const std::string& folder) {
  return (kAcceleratorDir / folder / ReadManifest(folder)["name"].get<std::string>()).string();
}

class Accelerators : public ::testing::Test {
 protected:
  const atoll_backend_v1* table() const { return plugin_.table(); }

  Plugin plugin_{ATOLL_TEST_BACKEND_PATH};
  OpenBackend backend_{plugin_.table(), "{}"};
};

TEST_F(Accelerators, ManifestsNameTheirBinaryAndKernels) {
  for (const char* folder : {"vector", "vector_int", "vision"}) {
    SCOPED_TRACE(folder);
    nlohmann::json manifest = ReadManifest(folder);
    EXPECT_EQ(manifest["platform"]["backend"], "cpu");
    EXPECT_EQ(manifest["platform"]["vendor"], "atoll");
    char error[512] = "";
    void* program = nullptr;
    std::string binary = BinaryPath(folder);
    ASSERT_EQ(
        table()->program(backend_.get(), 0, binary.c_str(), "", &program, error, sizeof(error)),
        ATOLL_OK)
        << error;
    for (const auto& kernel : manifest["kernels"]) {
      SCOPED_TRACE(kernel["kernelId"].get<std::string>());
      ASSERT_GE(kernel["name"].size(), 1u);
      for (const auto& name : kernel["name"]) {
        void* handle = nullptr;
        EXPECT_EQ(table()->kernel(backend_.get(), program, name.get<std::string>().c_str(), nullptr,
                                  0, &handle, error, sizeof(error)),
                  ATOLL_OK)
            << error;
      }
      // A length rule may name only scalar arguments of the same kernel.
      std::set<std::string> scalars;
      for (const auto& argument : kernel["arguments"]) {
        std::string type = argument["type"];
        if (type.back() != '*') scalars.insert(argument["name"].get<std::string>());
      }
      for (const auto& argument : kernel["arguments"]) {
        if (!argument.contains("length")) continue;
        std::stringstream rule(argument["length"].get<std::string>());
        std::string factor;
        while (std::getline(rule, factor, '*')) {
          bool constant = !factor.empty() && std::all_of(factor.begin(), factor.end(), ::isdigit);
          EXPECT_TRUE(constant || scalars.count(factor) == 1)
              << "length factor '" << factor << "' of " << argument["name"];
        }
      }
    }
    table()->release_program(backend_.get(), program);
  }
}

// Runs a vector kernel (a, b, c, size) on compute unit `compute_unit`.
template <typename T>
int RunVector(const atoll_backend_v1* table, void* backend, void* kernel, const char* type,
              std::vector<T>& a, std::vector<T>& b, std::vector<T>& c, int32_t size,
              std::string* message, uint32_t compute_unit = 0) {
  atoll_backend_arg_v1 args[] = {
      Array(a.data(), a.size() * sizeof(T), type, ATOLL_BACKEND_ACCESS_READ),
      Array(b.data(), b.size() * sizeof(T), type, ATOLL_BACKEND_ACCESS_READ),
      Array(c.data(), c.size() * sizeof(T), type, ATOLL_BACKEND_ACCESS_WRITE), Scalar(size, "int")};
  return LaunchAndWait(table, backend, kernel, args, 4, message, compute_unit);
}

TEST_F(Accelerators, VectorAddsAndSubtractsFloats) {
  std::string binary = BinaryPath("vector");
  void* vadd = backend_.Kernel(binary.c_str(), "vadd");
  void* vsub = backend_.Kernel(binary.c_str(), "vsub");
  std::mt19937 random(1);
  std::uniform_real_distribution<float> value(-1000.0f, 1000.0f);
  for (int32_t size : {0, 1, 7, 1023, 1024, 4097}) {
    SCOPED_TRACE(size);
    std::vector<float> a(size), b(size), c(size, -1.0f);
    for (int32_t i = 0; i < size; ++i) {
      a[i] = value(random);
      b[i] = value(random);
    }
    std::string message;
    ASSERT_EQ(RunVector(table(), backend_.get(), vadd, "float*", a, b, c, size, &message, 0),
              ATOLL_OK)
        << message;
    for (int32_t i = 0; i < size; ++i) ASSERT_EQ(c[i], a[i] + b[i]) << i;
    ASSERT_EQ(RunVector(table(), backend_.get(), vsub, "float*", a, b, c, size, &message, 1),
              ATOLL_OK)
        << message;
    for (int32_t i = 0; i < size; ++i) ASSERT_EQ(c[i], a[i] - b[i]) << i;
  }
}

TEST_F(Accelerators, VectorWorksInPlace) {
  void* vadd = backend_.Kernel(BinaryPath("vector").c_str(), "vadd");
  std::vector<float> a = {1, 2, 3, 4, 5};
  std::vector<float> b = {10, 20, 30, 40, 50};
  std::string message;
  ASSERT_EQ(RunVector(table(), backend_.get(), vadd, "float*", a, b, a, 5, &message), ATOLL_OK)
      << message;
  EXPECT_THAT(a, ::testing::ElementsAre(11, 22, 33, 44, 55));
}

TEST_F(Accelerators, VectorIntWrapsAround) {
  std::string binary = BinaryPath("vector_int");
  void* vadd = backend_.Kernel(binary.c_str(), "vadd_int");
  void* vsub = backend_.Kernel(binary.c_str(), "vsub_int");
  std::mt19937 random(2);
  for (int32_t size : {1, 3, 1024, 1031}) {
    SCOPED_TRACE(size);
    std::vector<int32_t> a(size), b(size), c(size);
    for (int32_t i = 0; i < size; ++i) {
      a[i] = static_cast<int32_t>(random());
      b[i] = static_cast<int32_t>(random());
    }
    a[0] = INT32_MAX;
    b[0] = size == 1 ? 1 : INT32_MIN;
    std::string message;
    ASSERT_EQ(RunVector(table(), backend_.get(), vadd, "int*", a, b, c, size, &message), ATOLL_OK)
        << message;
    for (int32_t i = 0; i < size; ++i) {
      ASSERT_EQ(c[i], static_cast<int32_t>(static_cast<int64_t>(a[i]) + b[i])) << i;
    }
    ASSERT_EQ(RunVector(table(), backend_.get(), vsub, "int*", a, b, c, size, &message), ATOLL_OK)
        << message;
    for (int32_t i = 0; i < size; ++i) {
      ASSERT_EQ(c[i], static_cast<int32_t>(static_cast<int64_t>(a[i]) - b[i])) << i;
    }
  }
  std::vector<int32_t> a = {INT32_MAX, INT32_MIN};
  std::vector<int32_t> b = {1, 1};
  std::vector<int32_t> c(2);
  std::string message;
  ASSERT_EQ(RunVector(table(), backend_.get(), vadd, "int*", a, b, c, 2, &message), ATOLL_OK);
  EXPECT_THAT(c, ::testing::ElementsAre(INT32_MIN, INT32_MIN + 1));
  ASSERT_EQ(RunVector(table(), backend_.get(), vsub, "int*", a, b, c, 2, &message), ATOLL_OK);
  EXPECT_THAT(c, ::testing::ElementsAre(INT32_MAX - 1, INT32_MAX));
}

TEST_F(Accelerators, VectorRefusesArgumentsItWouldOverrun) {
  void* vadd = backend_.Kernel(BinaryPath("vector").c_str(), "vadd");
  std::vector<float> a(16), b(16), c(8);
  std::string message;
  EXPECT_EQ(RunVector(table(), backend_.get(), vadd, "float*", a, b, c, 16, &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("vadd: argument 2 'c' holds 32 bytes"));
  EXPECT_EQ(RunVector(table(), backend_.get(), vadd, "float*", a, b, c, -1, &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'size' is -1"));

  int32_t size = 4;
  atoll_backend_arg_v1 three[] = {Array(a.data(), 64, "float*"), Array(b.data(), 64, "float*"),
                                  Scalar(size, "int")};
  EXPECT_EQ(LaunchAndWait(table(), backend_.get(), vadd, three, 3, &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("takes 4 arguments"));

  int64_t wide_size = 4;
  atoll_backend_arg_v1 wide[] = {Array(a.data(), 64, "float*"), Array(b.data(), 64, "float*"),
                                 Array(c.data(), 32, "float*"), Scalar(wide_size, "long")};
  EXPECT_EQ(LaunchAndWait(table(), backend_.get(), vadd, wide, 4, &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'size' must be a scalar of 4 bytes"));

  auto* misaligned = reinterpret_cast<char*>(a.data()) + 1;
  atoll_backend_arg_v1 shifted[] = {Array(misaligned, 16, "float*"), Array(b.data(), 16, "float*"),
                                    Array(c.data(), 16, "float*"), Scalar(size, "int")};
  EXPECT_EQ(LaunchAndWait(table(), backend_.get(), vadd, shifted, 4, &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'a' is not aligned"));
}

// The definition, written the plain way.
std::vector<uint8_t> ReferenceFilter(const std::vector<int16_t>& coefficients, int size,
                                     float factor, int16_t bias, int width, int height,
                                     const std::vector<uint8_t>& src) {
  std::vector<uint8_t> dst(static_cast<size_t>(width) * height);
  int radius = size / 2;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      int64_t sum = 0;
      for (int i = 0; i < size; ++i) {
        for (int j = 0; j < size; ++j) {
          int row = y + i - radius;
          int column = x + j - radius;
          int pixel = 0;
          if (row >= 0 && row < height && column >= 0 && column < width) {
            pixel = src[row * width + column];
          }
          sum += coefficients[i * size + j] * pixel;
        }
      }
      double value = std::round(static_cast<double>(sum) * factor + bias);
      dst[y * width + x] = static_cast<uint8_t>(std::clamp(value, 0.0, 255.0));
    }
  }
  return dst;
}

class Filter2d : public Accelerators {
 protected:
  int Run(const std::vector<int16_t>& coefficients, int32_t size, float factor, int16_t bias,
          int32_t width, int32_t height, const std::vector<uint8_t>& src, std::vector<uint8_t>& dst,
          std::string* message) {
    atoll_backend_arg_v1 args[] = {
        Array(const_cast<int16_t*>(coefficients.data()), coefficients.size() * 2, "short*",
              ATOLL_BACKEND_ACCESS_READ),
        Scalar(size, "int"),
        Scalar(factor, "float"),
        Scalar(bias, "short"),
        Scalar(width, "int"),
        Scalar(height, "int"),
        Array(const_cast<uint8_t*>(src.data()), src.size(), "unsigned char*",
              ATOLL_BACKEND_ACCESS_READ),
        Array(dst.data(), dst.size(), "unsigned char*", ATOLL_BACKEND_ACCESS_WRITE)};
    return LaunchAndWait(table(), backend_.get(), filter2d_, args, 8, message);
  }

  void* filter2d_ = backend_.Kernel(BinaryPath("vision").c_str(), "filter2d");
};

TEST_F(Filter2d, MatchesTheReferenceIncludingBordersClampingFactorAndBias) {
  struct Parameters {
    int low, high;  // coefficient range
    float factor;
    int16_t bias;
  };
  const Parameters parameters[] = {
      {1, 1, 1.0f / 9.0f, 0}, {-4, 4, 0.1f, 0}, {-20, 20, 0.0123f, 100}, {0, 6, 0.05f, -30}};
  const std::pair<int, int> images[] = {{0, 0}, {1, 1},   {2, 3},   {4, 9},   {5, 5},
                                        {6, 2}, {64, 48}, {97, 61}, {300, 7}, {600, 5}};
  std::mt19937 random(3);
  for (int size : {3, 5}) {
    for (const Parameters& p : parameters) {
      for (auto [width, height] : images) {
        SCOPED_TRACE(::testing::Message()
                     << size << "x" << size << " factor " << p.factor << " bias " << p.bias
                     << " on " << width << "x" << height);
        std::uniform_int_distribution<int> coefficient(p.low, p.high);
        std::vector<int16_t> coefficients(size * size);
        for (auto& c : coefficients) c = static_cast<int16_t>(coefficient(random));
        std::vector<uint8_t> src(static_cast<size_t>(width) * height);
        for (auto& pixel : src) pixel = static_cast<uint8_t>(random());
        std::vector<uint8_t> dst(src.size(), 0xAA);
        std::string message;
        ASSERT_EQ(Run(coefficients, size, p.factor, p.bias, width, height, src, dst, &message),
                  ATOLL_OK)
            << message;
        std::vector<uint8_t> expected =
            ReferenceFilter(coefficients, size, p.factor, p.bias, width, height, src);
        ASSERT_EQ(dst, expected);
      }
    }
  }
}

TEST_F(Filter2d, RoundsHalfAwayFromZeroAndClamps) {
  std::vector<int16_t> center(9, 0);
  center[4] = 1;
  std::vector<uint8_t> src = {3, 5, 0, 255};
  std::vector<uint8_t> dst(4);
  std::string message;
  // 3 * 0.5 = 1.5 -> 2 and 5 * 0.5 = 2.5 -> 3: half away from zero, not to even.
  ASSERT_EQ(Run(center, 3, 0.5f, 0, 4, 1, src, dst, &message), ATOLL_OK) << message;
  EXPECT_THAT(dst, ::testing::ElementsAre(2, 3, 0, 128));
  ASSERT_EQ(Run(center, 3, 1.0f, -4, 4, 1, src, dst, &message), ATOLL_OK) << message;
  EXPECT_THAT(dst, ::testing::ElementsAre(0, 1, 0, 251));
  ASSERT_EQ(Run(center, 3, 2.0f, 10, 4, 1, src, dst, &message), ATOLL_OK) << message;
  EXPECT_THAT(dst, ::testing::ElementsAre(16, 20, 10, 255));
}

TEST_F(Filter2d, RefusesArgumentsItCannotHonour) {
  std::vector<int16_t> coefficients(9, 1);
  std::vector<uint8_t> src(16, 1);
  std::vector<uint8_t> dst(16);
  std::string message;
  EXPECT_EQ(Run(coefficients, 4, 1.0f, 0, 4, 4, src, dst, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'size' is 4; filter2d supports 3 (3x3) and 5 (5x5)"));
  EXPECT_EQ(Run(coefficients, 5, 1.0f, 0, 4, 4, src, dst, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'coefficients' holds 18 bytes"));
  EXPECT_EQ(Run(coefficients, 3, 1.0f, 0, 4, 5, src, dst, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'src' holds 16 bytes"));
  EXPECT_EQ(Run(coefficients, 3, 1.0f, 0, -4, 4, src, dst, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("-4 x 4"));
  EXPECT_EQ(Run(coefficients, 3, NAN, 0, 4, 4, src, dst, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'factor'"));
  EXPECT_EQ(Run(coefficients, 3, 1.0f, 0, 4, 4, src, src, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("overlap"));
}

}  // namespace
