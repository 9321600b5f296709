#include "repository/manifest.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

namespace atl::repository {
namespace {

using ::testing::HasSubstr;

// InAccel's own vadd manifest (github.com/inaccel/vadd, src/bitstream.json), tabs and all.
constexpr char kInAccelVadd[] =
    "{\n\t\"bitstreamId\": \"vector\",\n\t\"version\": \"1\",\n\t\"description\": "
    "\"https://github.com/inaccel/vadd\",\n\t\"kernels\": [\n\t\t{\n\t\t\t\"name\": [\n\t\t\t\t"
    "\"vadd\"\n\t\t\t],\n\t\t\t\"kernelId\": \"addition\",\n\t\t\t\"arguments\": [\n\t\t\t\t{"
    "\"type\": \"float*\", \"name\": \"a\", \"access\": \"r\"},\n\t\t\t\t{\"type\": \"float*\", "
    "\"name\": \"b\", \"access\": \"r\"},\n\t\t\t\t{\"type\": \"float*\", \"name\": \"c\", "
    "\"access\": \"w\"},\n\t\t\t\t{\"type\": \"int\", \"name\": "
    "\"size\"}\n\t\t\t]\n\t\t}\n\t]\n}\n";

// The shape of InAccel's documented full sample: a platform, memory banks, and each kernelId
// listed once per compute unit.
constexpr char kInAccelFull[] = R"({
  "name": "bitstream.bin", "bitstreamId": "com.inaccel.math.vector", "version": "0.1",
  "description": "vector operations",
  "platform": {"vendor": "xilinx", "name": "u250", "version": "xdma_201830.2"},
  "kernels": [
    {"name": ["vadd_kernel_0"], "kernelId": "addition", "arguments": [
      {"type": "float*", "name": "input1", "memory": ["0"], "access": "r"},
      {"type": "float*", "name": "output", "memory": ["0"], "access": "w"},
      {"type": "int", "name": "size"}]},
    {"name": ["vadd_kernel_1"], "kernelId": "addition", "arguments": [
      {"type": "float*", "name": "input1", "memory": ["1"], "access": "r"},
      {"type": "float*", "name": "output", "memory": ["1"], "access": "w"},
      {"type": "int", "name": "size"}]},
    {"name": "vsub_kernel_0", "kernelId": "subtraction", "arguments": [
      {"type": "float*", "name": "input1", "memory": "2"},
      {"type": "int", "name": "size"}]}
  ]
})";

// A valid manifest whose pieces the tests below break one at a time.
std::string Valid(const std::string& kernels = "",
                  const std::string& top = R"("bitstreamId": "vector", "version": "1.0",)") {
  std::string k = kernels.empty() ? R"([{"kernelId": "addition", "name": ["vadd"],
      "arguments": [{"type": "float*", "name": "a", "access": "r"},
                    {"type": "int", "name": "n"}]}])"
                                  : kernels;
  return "{" + top + R"( "kernels": )" + k + "}";
}

std::string Kernel(const std::string& arguments) {
  return R"([{"kernelId": "addition", "name": ["vadd"], "arguments": )" + arguments + "}]";
}

// The error message of a manifest that must not parse.
std::string ErrorOf(const std::string& json) {
  StatusOr<Manifest> parsed = ParseManifest(json);
  EXPECT_FALSE(parsed.ok()) << json;
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), Code::kInvalidArgument) << parsed.status().ToString();
  return parsed.status().message();
}

TEST(ParseManifest, ParsesInAccelVadd) {
  StatusOr<Manifest> m = ParseManifest(kInAccelVadd);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->bitstream_id, "vector");
  EXPECT_EQ(m->version, "1");
  EXPECT_EQ(m->binary, "");
  EXPECT_EQ(m->description, "https://github.com/inaccel/vadd");
  EXPECT_EQ(m->platform.backend, "opencl");
  EXPECT_EQ(m->platform.vendor, "");
  ASSERT_EQ(m->kernels.size(), 1u);
  const KernelSpec& k = m->kernels[0];
  EXPECT_EQ(k.kernel_id, "addition");
  EXPECT_EQ(k.names, std::vector<std::string>{"vadd"});
  ASSERT_EQ(k.arguments.size(), 4u);
  EXPECT_EQ(k.arguments[0].kind, ArgKind::kArray);
  EXPECT_EQ(k.arguments[0].element_bytes, 4u);
  EXPECT_EQ(k.arguments[0].access, Access::kRead);
  EXPECT_EQ(k.arguments[2].access, Access::kWrite);
  EXPECT_EQ(k.arguments[3].kind, ArgKind::kScalar);
  EXPECT_EQ(k.arguments[3].type, "int");
  EXPECT_EQ(k.arguments[3].element_bytes, 4u);
  EXPECT_EQ(k.arguments[3].name, "size");
}

TEST(ParseManifest, ParsesInAccelFullSampleMergingComputeUnits) {
  StatusOr<Manifest> m = ParseManifest(kInAccelFull);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->binary, "bitstream.bin");
  EXPECT_EQ(m->platform.backend, "opencl");
  EXPECT_EQ(m->platform.vendor, "xilinx");
  EXPECT_EQ(m->platform.name, "u250");
  EXPECT_EQ(m->platform.version, "xdma_201830.2");
  ASSERT_EQ(m->kernels.size(), 2u);
  EXPECT_EQ(m->kernels[0].names, (std::vector<std::string>{"vadd_kernel_0", "vadd_kernel_1"}));
  EXPECT_EQ(m->kernels[0].arguments[0].memory, "0");
  EXPECT_EQ(m->kernels[1].names, std::vector<std::string>{"vsub_kernel_0"});
  EXPECT_EQ(m->kernels[1].arguments[0].memory, "2");
  EXPECT_EQ(m->kernels[1].arguments[0].access, Access::kReadWrite);
}

TEST(ParseManifest, ParsesAtollAdditions) {
  StatusOr<Manifest> m = ParseManifest(R"({
    "bitstreamId": "com.example.vision", "version": "2.1", "name": "vision.so",
    "platform": {"backend": "cpu", "vendor": "atoll", "name": "x86_64", "version": "1"},
    "future": {"ignored": true},
    "kernels": [{"kernelId": "filter2d", "name": "filter", "extra": 1, "arguments": [
      {"type": "const unsigned   char *", "name": "in", "access": "r", "length": "width * height"},
      {"type": "uint8_t*", "name": "out", "access": "w", "length": "3*width*height"},
      {"type": "unsigned int", "name": "width"},
      {"type": "size_t", "name": "height"},
      {"type": "float", "name": "gain"}]}]})");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->platform.backend, "cpu");
  const KernelSpec& k = m->kernels[0];
  EXPECT_EQ(k.names, std::vector<std::string>{"filter"});
  EXPECT_EQ(k.arguments[0].type, "const unsigned   char *");
  EXPECT_EQ(k.arguments[0].element_bytes, 1u);
  EXPECT_EQ(k.arguments[0].length, "width*height");
  EXPECT_EQ(k.arguments[1].length, "3*width*height");
  EXPECT_EQ(k.arguments[3].element_bytes, 8u);
}

TEST(ParseManifest, RoundTripsThroughJson) {
  for (const char* text : {kInAccelVadd, kInAccelFull}) {
    StatusOr<Manifest> first = ParseManifest(text);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    std::string json = ManifestToJson(*first);
    StatusOr<Manifest> second = ParseManifest(json);
    ASSERT_TRUE(second.ok()) << second.status().ToString() << "\n" << json;
    EXPECT_EQ(ManifestToJson(*second), json);
    EXPECT_EQ(second->kernels.size(), first->kernels.size());
    EXPECT_EQ(second->kernels[0].names, first->kernels[0].names);
    EXPECT_EQ(second->platform.backend, first->platform.backend);
  }
}

TEST(ParseManifest, InvalidJsonGivesPosition) {
  std::string message = ErrorOf("{\n  \"bitstreamId\": \"vector\",\n  \"version\" \"1\"\n}");
  EXPECT_THAT(message, HasSubstr("not valid JSON"));
  EXPECT_THAT(message, HasSubstr("line 3"));
}

TEST(ParseManifest, NumberTooLargeForADoubleIsAnError) {
  // nlohmann throws out_of_range for these, which escaped the parser (found by fuzzing).
  EXPECT_THAT(ErrorOf("1e999"), HasSubstr("not valid JSON"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "v", "version": "1", "x": -1e400,)")),
              HasSubstr("number overflow"));
}

TEST(ParseManifest, NonObjectJson) {
  EXPECT_THAT(ErrorOf("[1, 2]"), HasSubstr("must be a JSON object"));
  EXPECT_THAT(ErrorOf("\"vector\""), HasSubstr("got string"));
}

TEST(ParseManifest, TopLevelFields) {
  EXPECT_THAT(ErrorOf(Valid("", R"("version": "1",)")), HasSubstr("bitstreamId: missing"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "", "version": "1",)")),
              HasSubstr("bitstreamId: must not be empty"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": 7, "version": "1",)")),
              HasSubstr("bitstreamId: must be a string, got number 7"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "a b", "version": "1",)")),
              HasSubstr("bitstreamId: \"a b\" has characters"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "a..b", "version": "1",)")),
              HasSubstr("bitstreamId: \"a..b\" has an empty component"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "v",)")), HasSubstr("version: missing"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "v", "version": 1,)")),
              HasSubstr("version: must be a string"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "v", "version": "1@2",)")),
              HasSubstr("version: \"1@2\" must not contain"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "v", "version": "1", "name": "../x",)")),
              HasSubstr("name: \"../x\" must be a file name"));
  EXPECT_THAT(
      ErrorOf(Valid("", R"("bitstreamId": "v", "version": "1", "name": "bitstream.json",)")),
      HasSubstr("name: names the manifest itself"));
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "v", "version": "1", "description": [],)")),
              HasSubstr("description: must be a string, got array"));
}

TEST(ParseManifest, PlatformFields) {
  const std::string top = R"("bitstreamId": "v", "version": "1", )";
  EXPECT_THAT(ErrorOf(Valid("", top + R"("platform": "u250",)")),
              HasSubstr("platform: must be an object"));
  EXPECT_THAT(ErrorOf(Valid("", top + R"("platform": {"backend": ""},)")),
              HasSubstr("platform.backend: must not be empty"));
  EXPECT_THAT(ErrorOf(Valid("", top + R"("platform": {"backend": "CUDA"},)")),
              HasSubstr("platform.backend: \"CUDA\" is not a backend name"));
  EXPECT_THAT(ErrorOf(Valid("", top + R"("platform": {"vendor": 3},)")),
              HasSubstr("platform.vendor: must be a string"));
  StatusOr<Manifest> m =
      ParseManifest(Valid("", top + R"("platform": {"backend": "cuda", "name": "sm_90"},)"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->platform.backend, "cuda");
  EXPECT_EQ(m->platform.name, "sm_90");
}

TEST(ParseManifest, KernelsField) {
  const std::string top = R"("bitstreamId": "v", "version": "1")";
  EXPECT_THAT(ErrorOf("{" + top + "}"), HasSubstr("kernels: missing"));
  EXPECT_THAT(ErrorOf(Valid("{}")), HasSubstr("kernels: must be a list of kernels, got object"));
  EXPECT_THAT(ErrorOf(Valid("[]")), HasSubstr("kernels: must list at least one kernel"));
  EXPECT_THAT(ErrorOf(Valid("[3]")), HasSubstr("kernels[0]: must be an object"));
}

TEST(ParseManifest, KernelFields) {
  EXPECT_THAT(ErrorOf(Valid(R"([{"name": ["vadd"], "arguments": []}])")),
              HasSubstr("kernels[0].kernelId: missing"));
  EXPECT_THAT(ErrorOf(Valid(R"([{"kernelId": "", "name": ["vadd"], "arguments": []}])")),
              HasSubstr("kernels[0].kernelId: must not be empty"));
  EXPECT_THAT(ErrorOf(Valid(R"([{"kernelId": "a.b", "name": ["vadd"], "arguments": []}])")),
              HasSubstr("kernels[0].kernelId: \"a.b\" must not contain '.'"));
  EXPECT_THAT(ErrorOf(Valid(R"([{"kernelId": "add", "arguments": []}])")),
              HasSubstr("kernels[0].name: missing"));
  EXPECT_THAT(ErrorOf(Valid(R"([{"kernelId": "add", "name": [], "arguments": []}])")),
              HasSubstr("kernels[0].name: must list at least one"));
  EXPECT_THAT(ErrorOf(Valid(R"([{"kernelId": "add", "name": ["a", 2], "arguments": []}])")),
              HasSubstr("kernels[0].name[1]: must be a string, got number 2"));
  EXPECT_THAT(ErrorOf(Valid(R"([{"kernelId": "add", "name": ["a", ""], "arguments": []}])")),
              HasSubstr("kernels[0].name[1]: must not be empty"));
  EXPECT_THAT(ErrorOf(Valid(R"([{"kernelId": "add", "name": "vadd"}])")),
              HasSubstr("kernels[0].arguments: missing"));
  EXPECT_THAT(ErrorOf(Valid(R"([{"kernelId": "add", "name": "vadd", "arguments": {}}])")),
              HasSubstr("kernels[0].arguments: must be a list"));
  EXPECT_TRUE(ParseManifest(Valid(R"([{"kernelId": "add", "name": "k", "arguments": []}])")).ok());
}

TEST(ParseManifest, DuplicateKernelIdsWithDifferentArguments) {
  std::string message = ErrorOf(Valid(R"([
      {"kernelId": "add", "name": "a", "arguments": [{"type": "int", "name": "n"}]},
      {"kernelId": "sub", "name": "s", "arguments": []},
      {"kernelId": "add", "name": "b", "arguments": [{"type": "long", "name": "n"}]}])"));
  EXPECT_THAT(message,
              HasSubstr("kernels[2].kernelId: \"add\" is already the kernelId of kernels[0]"));
}

TEST(ParseManifest, ArgumentFields) {
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([7])"))),
              HasSubstr("kernels[0].arguments[0]: must be an object"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"name": "a"}])"))),
              HasSubstr("kernels[0].arguments[0].type: missing"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int", "name": "a"}, {"type": "flaot*"}])"))),
              HasSubstr("kernels[0].arguments[1].type: unknown type 'flaot*'; did you mean "
                        "'float*'?"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "struct widget"}])"))),
              HasSubstr("kernels[0].arguments[0].type: unknown type 'struct widget'; use a C"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "float**"}])"))),
              HasSubstr("kernels[0].arguments[0].type: pointers to pointers"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "*"}])"))),
              HasSubstr("kernels[0].arguments[0].type: no type name"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int", "name": "1x"}])"))),
              HasSubstr("kernels[0].arguments[0].name: \"1x\" must be a C identifier"));
  EXPECT_THAT(
      ErrorOf(Valid(Kernel(R"([{"type": "int", "name": "n"}, {"type": "int*", "name": "n"}])"))),
      HasSubstr("kernels[0].arguments[1].name: \"n\" is already the name of "
                "kernels[0].arguments[0]"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int*", "index": ["1"]}])"))),
              HasSubstr("kernels[0].arguments[0].index: reordering arguments is not supported"));
}

TEST(ParseManifest, Access) {
  EXPECT_EQ(ErrorOf(Valid(Kernel(R"([{"type": "int*"}, {"type": "int*", "access": "x"}])"))),
            "kernels[0].arguments[1].access: must be \"r\", \"w\" or \"rw\", got \"x\"");
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int*", "access": 1}])"))),
              HasSubstr("got number 1"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int", "access": "r"}])"))),
              HasSubstr("kernels[0].arguments[0].access: is only for arrays"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int", "memory": "0"}])"))),
              HasSubstr("kernels[0].arguments[0].memory: is only for arrays"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int*", "memory": [0]}])"))),
              HasSubstr("kernels[0].arguments[0].memory[0]: must be a string"));
  StatusOr<Manifest> m =
      ParseManifest(Valid(Kernel(R"([{"type": "int*", "memory": ["DDR[0]", "DDR[1]"]}])")));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->kernels[0].arguments[0].memory, "DDR[0],DDR[1]");
  EXPECT_EQ(m->kernels[0].arguments[0].access, Access::kReadWrite);
}

TEST(ParseManifest, SinglePass) {
  StatusOr<Manifest> m = ParseManifest(Valid(Kernel(
      R"([{"type": "float*", "access": "r", "single_pass": true}, {"type": "float*"},
          {"type": "float*", "single_pass": false}])")));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE(m->kernels[0].arguments[0].single_pass);
  EXPECT_FALSE(m->kernels[0].arguments[1].single_pass);
  EXPECT_FALSE(m->kernels[0].arguments[2].single_pass);
  std::string json = ManifestToJson(*m);
  EXPECT_THAT(json, HasSubstr("\"single_pass\": true"));
  StatusOr<Manifest> again = ParseManifest(json);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->kernels[0].arguments[0].single_pass);
  EXPECT_FALSE(again->kernels[0].arguments[1].single_pass);

  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int", "single_pass": true}])"))),
              HasSubstr("kernels[0].arguments[0].single_pass: is only for arrays"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int*", "single_pass": "yes"}])"))),
              HasSubstr("kernels[0].arguments[0].single_pass: must be true or false, got"));
  // Compute units of one kernelId must agree on it, as on every other argument field.
  EXPECT_THAT(ErrorOf(Valid(R"([
      {"kernelId": "add", "name": "a", "arguments": [{"type": "int*", "single_pass": true}]},
      {"kernelId": "add", "name": "b", "arguments": [{"type": "int*"}]}])")),
              HasSubstr("kernels[1]"));
}

TEST(ParseManifest, SizeGivesUnknownTypesTheirSize) {
  StatusOr<Manifest> m = ParseManifest(Valid(
      Kernel(R"([{"type": "pixel_t*", "size": "3", "name": "p"}, {"type": "int", "size": 4}])")));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->kernels[0].arguments[0].element_bytes, 3u);
  EXPECT_EQ(m->kernels[0].arguments[0].kind, ArgKind::kArray);
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int", "size": "8"}])"))),
              HasSubstr("kernels[0].arguments[0].size: is 8 but 'int' is 4 bytes"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "pixel_t", "size": "0"}])"))),
              HasSubstr("kernels[0].arguments[0].size: must be a positive number"));
}

TEST(ParseManifest, LengthRules) {
  auto with_length = [](const std::string& length, const std::string& more = "") {
    return Valid(Kernel(R"([{"type": "float*", "name": "a", "length": )" + length + "}, " +
                        R"({"type": "int", "name": "n"}, {"type": "float", "name": "f"}, )" +
                        R"({"type": "uint64_t", "name": "m"})" + more + "]"));
  };
  EXPECT_TRUE(ParseManifest(with_length(R"("n")")).ok());
  EXPECT_TRUE(ParseManifest(with_length(R"(" n * m * 4 ")")).ok());
  EXPECT_TRUE(ParseManifest(with_length("16")).ok());
  EXPECT_THAT(ErrorOf(with_length(R"("k")")),
              HasSubstr("kernels[0].arguments[0].length: 'k' is not an argument of kernel "
                        "'addition'"));
  EXPECT_THAT(ErrorOf(with_length(R"("f")")),
              HasSubstr("kernels[0].arguments[0].length: 'f' is of type 'float', but a length "
                        "may only use integer scalar arguments"));
  EXPECT_THAT(ErrorOf(with_length(R"("a")")), HasSubstr("'a' is of type 'float*'"));
  EXPECT_THAT(ErrorOf(with_length(R"("n-1")")),
              HasSubstr("kernels[0].arguments[0].length: 'n-1' in 'n-1' is neither an argument "
                        "name nor a non-negative integer"));
  EXPECT_THAT(ErrorOf(with_length(R"("n*")")),
              HasSubstr("kernels[0].arguments[0].length: 'n*' has an empty factor"));
  EXPECT_THAT(ErrorOf(with_length(R"("")")),
              HasSubstr("kernels[0].arguments[0].length: empty length rule"));
  EXPECT_THAT(ErrorOf(with_length(R"("99999999999999999999")")),
              HasSubstr("does not fit in 64 bits"));
  EXPECT_THAT(ErrorOf(with_length("-3")),
              HasSubstr("kernels[0].arguments[0].length: must be a string"));
  EXPECT_THAT(ErrorOf(Valid(Kernel(R"([{"type": "int", "name": "n", "length": "n"}])"))),
              HasSubstr("kernels[0].arguments[0].length: is only for arrays"));
  // A rule may name an argument that comes after the array.
  EXPECT_TRUE(
      ParseManifest(with_length(R"("later")", R"(, {"type": "short", "name": "later"})")).ok());
}

TEST(ScalarTypeBytes, KnowsCTypes) {
  EXPECT_EQ(*ScalarTypeBytes("int"), 4u);
  EXPECT_EQ(*ScalarTypeBytes("unsigned char"), 1u);
  EXPECT_EQ(*ScalarTypeBytes("  unsigned \t long   long "), 8u);
  EXPECT_EQ(*ScalarTypeBytes("double"), 8u);
  EXPECT_EQ(*ScalarTypeBytes("uint64_t"), 8u);
  EXPECT_EQ(*ScalarTypeBytes("int16_t"), 2u);
  EXPECT_EQ(*ScalarTypeBytes("unsigned"), 4u);
  EXPECT_EQ(*ScalarTypeBytes("short"), 2u);
  EXPECT_EQ(*ScalarTypeBytes("long"), sizeof(long));
  EXPECT_EQ(*ScalarTypeBytes("size_t"), sizeof(size_t));
  EXPECT_EQ(*ScalarTypeBytes("bool"), 1u);
  EXPECT_EQ(*ScalarTypeBytes("float"), 4u);
  EXPECT_EQ(ScalarTypeBytes("int*").status().code(), Code::kNotFound);
  EXPECT_EQ(ScalarTypeBytes("flaot").status().code(), Code::kNotFound);
  EXPECT_EQ(ScalarTypeBytes("").status().code(), Code::kNotFound);
}

TEST(CompareVersions, ComparesNumerically) {
  EXPECT_GT(CompareVersions("1.10", "1.9"), 0);
  EXPECT_LT(CompareVersions("1.9", "1.10"), 0);
  EXPECT_EQ(CompareVersions("1.0", "1.0"), 0);
  EXPECT_EQ(CompareVersions("1", "1.0"), 0);
  EXPECT_LT(CompareVersions("1", "1.1"), 0);
  EXPECT_GT(CompareVersions("2", "1.99"), 0);
  EXPECT_EQ(CompareVersions("01.2", "1.02"), 0);
  EXPECT_GT(CompareVersions("1.0.0.12345678901234567890", "1.0.0.9"), 0);
  EXPECT_LT(CompareVersions("1.0a", "1.0b"), 0);
  EXPECT_GT(CompareVersions("1.1-rc1", "1.0"), 0);
}

}  // namespace
}  // namespace atl::repository

namespace atl::repository {
namespace {

TEST(ParseManifestLaunch, OneDimensionWithLocalSize) {
  StatusOr<Manifest> parsed = ParseManifest(Valid(R"([{"kernelId": "addition", "name": ["vadd"],
      "launch": {"global": "n", "local": 64},
      "arguments": [{"type": "float*", "name": "a"}, {"type": "int", "name": "n"}]}])"));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->kernels[0].launch.global, std::vector<std::string>{"n"});
  EXPECT_EQ(parsed->kernels[0].launch.local, std::vector<uint32_t>{64});
}

TEST(ParseManifestLaunch, TwoDimensionsRulesAndConstants) {
  StatusOr<Manifest> parsed = ParseManifest(Valid(R"([{"kernelId": "filter", "name": "f",
      "launch": {"global": ["w", "h * 2"], "local": [16, 16]},
      "arguments": [{"type": "int", "name": "w"}, {"type": "uint", "name": "h"}]}])"));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->kernels[0].launch.global, (std::vector<std::string>{"w", "h*2"}));
  EXPECT_EQ(parsed->kernels[0].launch.local, (std::vector<uint32_t>{16, 16}));
}

TEST(ParseManifestLaunch, AbsentMeansOneWorkItem) {
  StatusOr<Manifest> parsed = ParseManifest(Valid());
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->kernels[0].launch.global.empty());
}

TEST(ParseManifestLaunch, BadBlocksNameTheField) {
  auto launch = [](const std::string& block) {
    return Valid(R"([{"kernelId": "addition", "name": ["vadd"], "launch": )" + block + R"(,
      "arguments": [{"type": "float", "name": "x"}, {"type": "int", "name": "n"}]}])");
  };
  EXPECT_THAT(ErrorOf(launch("3")), HasSubstr("kernels[0].launch: must be an object"));
  EXPECT_THAT(ErrorOf(launch("{}")), HasSubstr("kernels[0].launch.global: missing"));
  EXPECT_THAT(ErrorOf(launch(R"({"global": []})")), HasSubstr("1 to 3 dimensions, got 0"));
  EXPECT_THAT(ErrorOf(launch(R"({"global": ["n", "n", "n", "n"]})")),
              HasSubstr("1 to 3 dimensions, got 4"));
  EXPECT_THAT(ErrorOf(launch(R"({"global": "m"})")),
              HasSubstr("kernels[0].launch.global[0]: 'm' is not an argument"));
  EXPECT_THAT(ErrorOf(launch(R"({"global": ["n", "x"]})")),
              HasSubstr("kernels[0].launch.global[1]: 'x' is of type 'float'"));
  EXPECT_THAT(ErrorOf(launch(R"({"global": "n", "local": [1, 2]})")),
              HasSubstr("kernels[0].launch.local: must give one work-group size per dimension"));
  EXPECT_THAT(ErrorOf(launch(R"({"global": "n", "local": 0})")),
              HasSubstr("kernels[0].launch.local: must be a work-group size from 1 to 65536"));
  EXPECT_THAT(ErrorOf(launch(R"({"global": "n+1"})")), HasSubstr("kernels[0].launch.global"));
}

TEST(ParseManifestBuildOptions, KeptAndRoundTripped) {
  StatusOr<Manifest> parsed = ParseManifest(Valid("", R"("bitstreamId": "vector", "version": "1.0",
                                 "buildOptions": "-cl-fast-relaxed-math",)"));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->build_options, "-cl-fast-relaxed-math");
  StatusOr<Manifest> again = ParseManifest(ManifestToJson(*parsed));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->build_options, "-cl-fast-relaxed-math");
  EXPECT_THAT(ErrorOf(Valid("", R"("bitstreamId": "v", "version": "1", "buildOptions": 3,)")),
              HasSubstr("buildOptions: must be a string"));
}

TEST(ParseManifestLaunch, RoundTripsAndMustMatchAcrossComputeUnits) {
  StatusOr<Manifest> parsed = ParseManifest(Valid(R"([{"kernelId": "addition", "name": "a0",
      "launch": {"global": ["n", 4], "local": [8, 1]},
      "arguments": [{"type": "int", "name": "n"}]}])"));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  StatusOr<Manifest> again = ParseManifest(ManifestToJson(*parsed));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->kernels[0].launch.global, (std::vector<std::string>{"n", "4"}));
  EXPECT_EQ(again->kernels[0].launch.local, (std::vector<uint32_t>{8, 1}));
  EXPECT_THAT(ErrorOf(Valid(R"([
      {"kernelId": "addition", "name": "a0", "launch": {"global": "n"},
       "arguments": [{"type": "int", "name": "n"}]},
      {"kernelId": "addition", "name": "a1", "launch": {"global": "2*n"},
       "arguments": [{"type": "int", "name": "n"}]}])")),
              HasSubstr("with different arguments"));
}

}  // namespace
}  // namespace atl::repository
