#include "repository/signature.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace atl::repository {
namespace {

using ::testing::HasSubstr;

KernelSpec Kernel(const char* arguments) {
  std::string json = std::string(R"({"bitstreamId": "vector", "version": "1", "kernels": [
      {"kernelId": "addition", "name": "vadd", "arguments": )") +
                     arguments + "}]}";
  StatusOr<Manifest> manifest = ParseManifest(json);
  EXPECT_TRUE(manifest.ok()) << manifest.status().ToString();
  return manifest.ok() ? manifest->kernels[0] : KernelSpec();
}

KernelSpec Vadd() {
  return Kernel(R"([{"type": "float*", "name": "a", "access": "r"},
                    {"type": "float*", "name": "b", "access": "r"},
                    {"type": "float*", "name": "c", "access": "w"},
                    {"type": "int", "name": "size"}])");
}

ArgValue Array(uint64_t bytes) { return ArgValue{true, bytes, nullptr}; }

template <typename T>
ArgValue Scalar(const T& value) {
  return ArgValue{false, sizeof(T), &value};
}

std::string ErrorOf(const KernelSpec& kernel, const std::vector<ArgValue>& args) {
  Status status = CheckSignature("vector.addition", kernel, args);
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.code(), Code::kInvalidArgument);
  return status.message();
}

TEST(CheckSignature, AcceptsMatchingArguments) {
  int size = 100;
  EXPECT_TRUE(
      CheckSignature("vector.addition", Vadd(),
                     std::vector<ArgValue>{Array(400), Array(400), Array(400), Scalar(size)})
          .ok());
  EXPECT_TRUE(CheckSignature("vector.addition", Vadd(),
                             std::vector<ArgValue>{Array(0), Array(4), Array(8), Scalar(size)})
                  .ok());
}

TEST(CheckSignature, Count) {
  int size = 1;
  EXPECT_EQ(ErrorOf(Vadd(), {Array(4), Array(4), Scalar(size)}),
            "vector.addition: takes 4 arguments (float* a, float* b, float* c, int size), got 3");
  EXPECT_THAT(ErrorOf(Vadd(), {Array(4), Array(4), Array(4), Scalar(size), Scalar(size)}),
              HasSubstr("takes 4 arguments"));
}

TEST(CheckSignature, ArrayWhereScalarExpected) {
  EXPECT_EQ(ErrorOf(Vadd(), {Array(4), Array(4), Array(4), Array(4)}),
            "vector.addition: argument 3 'size' must be a scalar of 4 bytes (int), got an array");
}

TEST(CheckSignature, ScalarWhereArrayExpected) {
  int size = 1;
  EXPECT_EQ(ErrorOf(Vadd(), {Array(4), Scalar(size), Array(4), Scalar(size)}),
            "vector.addition: argument 1 'b' must be an array of 4-byte elements (float*), got a "
            "scalar of 4 bytes");
}

TEST(CheckSignature, ScalarSize) {
  int64_t size = 1;
  EXPECT_EQ(ErrorOf(Vadd(), {Array(4), Array(4), Array(4), Scalar(size)}),
            "vector.addition: argument 3 'size' must be a scalar of 4 bytes (int), got a scalar of "
            "8 bytes");
  EXPECT_THAT(ErrorOf(Vadd(), {Array(4), Array(4), Array(4), ArgValue{false, 4, nullptr}}),
              HasSubstr("argument 3 'size' must be a scalar of 4 bytes (int), got no value"));
}

TEST(CheckSignature, ArrayNotAMultipleOfElementSize) {
  int size = 1;
  EXPECT_EQ(ErrorOf(Vadd(), {Array(10), Array(4), Array(4), Scalar(size)}),
            "vector.addition: argument 0 'a' must be an array of 4-byte elements (float*), got 10 "
            "bytes, which is not a multiple of 4");
}

TEST(CheckSignature, LengthRuleSatisfied) {
  KernelSpec kernel = Kernel(R"([{"type": "float*", "name": "a", "length": "n"},
                                 {"type": "uint16_t*", "name": "img", "length": "w*h*3"},
                                 {"type": "int", "name": "n"},
                                 {"type": "unsigned char", "name": "w"},
                                 {"type": "uint64_t", "name": "h"}])");
  int n = 10;
  unsigned char w = 200;
  uint64_t h = 7;
  EXPECT_TRUE(CheckSignature("x.y", kernel,
                             std::vector<ArgValue>{Array(40), Array(200 * 7 * 3 * 2), Scalar(n),
                                                   Scalar(w), Scalar(h)})
                  .ok());
  // "At least": a larger array is fine.
  EXPECT_TRUE(CheckSignature("x.y", kernel,
                             std::vector<ArgValue>{Array(44), Array(200 * 7 * 3 * 2 + 2), Scalar(n),
                                                   Scalar(w), Scalar(h)})
                  .ok());
}

TEST(CheckSignature, LengthRuleUnsatisfied) {
  KernelSpec kernel = Kernel(R"([{"type": "float*", "name": "a", "length": "n"},
                                 {"type": "uint16_t*", "name": "img", "length": "w*h*3"},
                                 {"type": "int", "name": "n"},
                                 {"type": "unsigned char", "name": "w"},
                                 {"type": "uint64_t", "name": "h"}])");
  int n = 10;
  unsigned char w = 200;
  uint64_t h = 7;
  EXPECT_EQ(ErrorOf(kernel, {Array(36), Array(8400), Scalar(n), Scalar(w), Scalar(h)}),
            "vector.addition: argument 0 'a' must hold at least n = 10 elements of 4 bytes (40 "
            "bytes), got 9 elements (36 bytes)");
  EXPECT_EQ(ErrorOf(kernel, {Array(40), Array(8398), Scalar(n), Scalar(w), Scalar(h)}),
            "vector.addition: argument 1 'img' must hold at least w*h*3 = 200*7*3 = 4200 elements "
            "of 2 bytes (8400 bytes), got 4199 elements (8398 bytes)");
}

TEST(CheckSignature, LengthFromNegativeScalar) {
  KernelSpec kernel = Kernel(R"([{"type": "float*", "name": "a", "length": "n"},
                                 {"type": "int", "name": "n"}])");
  int n = -5;
  EXPECT_EQ(ErrorOf(kernel, {Array(40), Scalar(n)}),
            "vector.addition: argument 1 'n' is -5, but it sets the length of argument 0 'a' (n) "
            "and must not be negative");
  int8_t small = -1;
  KernelSpec narrow = Kernel(R"([{"type": "char*", "name": "a", "length": "n"},
                                 {"type": "int8_t", "name": "n"}])");
  EXPECT_THAT(ErrorOf(narrow, {Array(40), Scalar(small)}), HasSubstr("is -1"));
  // The same bits read as unsigned are a large count, not a negative one.
  uint8_t big = 0xff;
  KernelSpec unsigned_narrow = Kernel(R"([{"type": "char*", "name": "a", "length": "n"},
                                          {"type": "uint8_t", "name": "n"}])");
  EXPECT_TRUE(
      CheckSignature("x.y", unsigned_narrow, std::vector<ArgValue>{Array(255), Scalar(big)}).ok());
  EXPECT_THAT(ErrorOf(unsigned_narrow, {Array(254), Scalar(big)}), HasSubstr("n = 255"));
}

TEST(CheckSignature, LengthOverflow) {
  KernelSpec kernel = Kernel(R"([{"type": "double*", "name": "a", "length": "w*h"},
                                 {"type": "uint64_t", "name": "w"},
                                 {"type": "uint64_t", "name": "h"}])");
  uint64_t w = uint64_t{1} << 33;
  uint64_t h = uint64_t{1} << 31;
  EXPECT_THAT(ErrorOf(kernel, {Array(64), Scalar(w), Scalar(h)}),
              HasSubstr("argument 0 'a' has a length w*h = 8589934592*2147483648 that overflows "
                        "64 bits"));
  // The element count fits, but not once multiplied by the element size.
  uint64_t one = 1;
  uint64_t huge = uint64_t{1} << 62;
  EXPECT_THAT(ErrorOf(kernel, {Array(64), Scalar(huge), Scalar(one)}),
              HasSubstr("overflows 64 bits"));
}

TEST(PreparedSignature, OnePreparedFormChecksManyRequests) {
  KernelSpec kernel = Kernel(R"([{"type": "uint16_t*", "name": "img", "length": "w*h*3"},
                                 {"type": "unsigned char", "name": "w"},
                                 {"type": "int64_t", "name": "h"}])");
  const PreparedSignature prepared(kernel);
  for (unsigned w = 0; w < 256; w += 51) {
    for (int64_t h = -2; h < 40; h += 7) {
      const unsigned char narrow = static_cast<unsigned char>(w);
      for (uint64_t bytes : {uint64_t{0}, w * 6 * static_cast<uint64_t>(h < 0 ? 0 : h),
                             w * 6 * static_cast<uint64_t>(h < 0 ? 0 : h) + 2}) {
        std::vector<ArgValue> args{Array(bytes), Scalar(narrow), Scalar(h)};
        Status prepared_status = prepared.Check("image.rgb", args);
        Status single = CheckSignature("image.rgb", kernel, args);
        EXPECT_EQ(prepared_status.ToString(), single.ToString()) << "w=" << w << " h=" << h;
        const bool fits = h >= 0 && bytes >= w * 6 * static_cast<uint64_t>(h);
        EXPECT_EQ(prepared_status.ok(), fits) << prepared_status.ToString();
      }
    }
  }
}

// A manifest that bypassed the parser's checks: its rules' mistakes are reported by every check.
TEST(PreparedSignature, RulesTheManifestGotWrongAreReported) {
  KernelSpec kernel = Vadd();
  int size = 4;
  std::vector<ArgValue> args{Array(16), Array(16), Array(16), Scalar(size)};

  kernel.arguments[0].length = "size*";
  Status status = PreparedSignature(kernel).Check("vector.addition", args);
  EXPECT_THAT(status.message(),
              HasSubstr("vector.addition: the rule 'size*' of the length of argument 0 'a' "
                        "(size*) does not parse"));
  EXPECT_THAT(status.message(), HasSubstr("fix the manifest"));

  kernel.arguments[0].length = "size*b";
  EXPECT_THAT(PreparedSignature(kernel).Check("vector.addition", args).message(),
              HasSubstr("names 'b', which is not a scalar argument; fix the manifest"));

  kernel.arguments[0].length = "size";
  kernel.arguments[3].type = "float";
  float real = 4;
  EXPECT_THAT(
      PreparedSignature(kernel)
          .Check("vector.addition",
                 std::vector<ArgValue>{Array(16), Array(16), Array(16), Scalar(real)})
          .message(),
      HasSubstr("argument 3 'size' (float) sets the length of argument 0 'a' (size) but is not "
                "an integer scalar"));
}

}  // namespace
}  // namespace atl::repository

namespace atl::repository {
namespace {

KernelSpec Launched(const char* launch) {
  std::string json = std::string(R"({"bitstreamId": "image", "version": "1", "kernels": [
      {"kernelId": "blur", "name": "blur", "launch": )") +
                     launch + R"(, "arguments": [{"type": "float*", "name": "img"},
                                 {"type": "int", "name": "w"}, {"type": "uint64_t", "name": "h"}]}]})";
  StatusOr<Manifest> manifest = ParseManifest(json);
  EXPECT_TRUE(manifest.ok()) << manifest.status().ToString();
  return manifest.ok() ? manifest->kernels[0] : KernelSpec();
}

TEST(EvaluateLaunch, RulesReadTheScalars) {
  int w = 640;
  uint64_t h = 480;
  std::vector<ArgValue> args{Array(4), Scalar(w), Scalar(h)};
  StatusOr<LaunchGeometry> g =
      EvaluateLaunch("image.blur", Launched(R"({"global": ["w", "h*2"], "local": [16, 8]})"), args);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->dims, 2u);
  EXPECT_EQ(g->global[0], 640u);
  EXPECT_EQ(g->global[1], 960u);
  EXPECT_EQ(g->local[0], 16u);
  EXPECT_EQ(g->local[1], 8u);

  g = EvaluateLaunch("image.blur", Launched(R"({"global": "w*h"})"), args);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->dims, 1u);
  EXPECT_EQ(g->global[0], 640u * 480u);
  EXPECT_EQ(g->local[0], 0u);
}

TEST(EvaluateLaunch, NegativeAndOverflowingSizesAreRefused) {
  int w = -3;
  uint64_t h = 1;
  StatusOr<LaunchGeometry> g =
      EvaluateLaunch("image.blur", Launched(R"({"global": "w"})"),
                     std::vector<ArgValue>{Array(4), Scalar(w), Scalar(h)});
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("argument 1 'w' is -3"));
  EXPECT_THAT(g.status().message(), HasSubstr("launch.global[0] (w)"));

  w = 2;
  h = UINT64_MAX;
  g = EvaluateLaunch("image.blur", Launched(R"({"global": "w*h"})"),
                     std::vector<ArgValue>{Array(4), Scalar(w), Scalar(h)});
  ASSERT_FALSE(g.ok());
  EXPECT_THAT(g.status().message(), HasSubstr("overflows 64 bits"));
}

TEST(EvaluateLaunch, NoBlockIsOneWorkItem) {
  int size = 4;
  StatusOr<LaunchGeometry> g =
      EvaluateLaunch("vector.addition", Vadd(),
                     std::vector<ArgValue>{Array(16), Array(16), Array(16), Scalar(size)});
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->dims, 0u);
}

}  // namespace
}  // namespace atl::repository
