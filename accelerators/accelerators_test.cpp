// Runs the bundled accelerators through every backend that has a version of them, each backend
// loaded as atolld loads it, and checks their manifests and results against references written
// here. One suite, parameterised over the rows of Backends(): the cpu backend always; opencl when
// it was built and finds a device at run time; cuda likewise. A row whose backend cannot run here
// skips with the reason.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
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
#include "backend_testing.h"

namespace {

using ::atl::backend_testing::Array;
using ::atl::backend_testing::Geometry;
using ::atl::backend_testing::LaunchAndWait;
using ::atl::backend_testing::OpenBackend;
using ::atl::backend_testing::Plugin;
using ::atl::backend_testing::Scalar;
using ::testing::HasSubstr;

const std::filesystem::path kAcceleratorDir = ATOLL_TEST_ACCELERATOR_DIR;
const char* const kAccelerators[] = {"vector", "vector_int", "vision", "mandelbrot"};

// One backend the accelerators run on.
struct BackendRow {
  std::string name;    // the manifests' platform.backend
  std::string plugin;  // the plugin's path; "" when this build has none
  std::string suffix;  // the accelerator folders' suffix: vector<suffix>
  std::string config;  // what open() gets
  std::string not_built;
};

// gtest prints a failing test's parameter; the row's name says all.
void PrintTo(const BackendRow& row, std::ostream* out) { *out << row.name << " backend"; }

std::vector<BackendRow> Backends() {
  std::vector<BackendRow> rows;
  rows.push_back({"cpu", ATOLL_TEST_CPU_BACKEND_PATH, "", "{}", ""});
  // No disk cache: the tests build afresh, and leave nothing behind.
  rows.push_back({"opencl", ATOLL_TEST_OPENCL_BACKEND_PATH, "-opencl", R"({"cache_dir": ""})",
                  "the opencl backend was not built: CMake found no OpenCL headers and ICD loader "
                  "(scripts/install-deps.sh installs them)"});
#ifdef ATOLL_TEST_CUDA_BACKEND_PATH
  // The cuda row: its accelerators are laid out in <name>-cuda by atoll_cuda_accelerator.
  rows.push_back(
      {"cuda", ATOLL_TEST_CUDA_BACKEND_PATH, "-cuda", "{}", "the cuda backend was not built"});
#endif
  return rows;
}

nlohmann::json ReadJson(const std::filesystem::path& path) {
  std::ifstream file(path);
  EXPECT_TRUE(file.good()) << "cannot read " << path;
  std::stringstream text;
  text << file.rdbuf();
  return nlohmann::json::parse(text.str());
}

// A rule of the length-rule grammar, "width*height" or "3*n", evaluated on a launch's scalars as
// the daemon evaluates it.
uint64_t Evaluate(const std::string& rule, const nlohmann::json& arguments,
                  const std::vector<atoll_backend_arg_v1>& args) {
  uint64_t product = 1;
  std::stringstream factors(rule);
  std::string factor;
  while (std::getline(factors, factor, '*')) {
    factor.erase(std::remove_if(factor.begin(), factor.end(), ::isspace), factor.end());
    if (std::all_of(factor.begin(), factor.end(), ::isdigit)) {
      product *= std::stoull(factor);
      continue;
    }
    bool found = false;
    for (size_t i = 0; i < arguments.size(); ++i) {
      if (arguments[i].value("name", "") != factor) continue;
      found = true;
      int64_t value = 0;
      switch (args[i].size_bytes) {
        case 1:
          value = *static_cast<const int8_t*>(args[i].data);
          break;
        case 2:
          value = *static_cast<const int16_t*>(args[i].data);
          break;
        case 4:
          value = *static_cast<const int32_t*>(args[i].data);
          break;
        default:
          value = *static_cast<const int64_t*>(args[i].data);
      }
      product *= static_cast<uint64_t>(std::max<int64_t>(value, 0));
    }
    EXPECT_TRUE(found) << "rule '" << rule << "' names '" << factor << "', not an argument";
  }
  return product;
}

class Accelerators : public ::testing::TestWithParam<BackendRow> {
 protected:
  void SetUp() override {
    const BackendRow& row = GetParam();
    if (row.plugin.empty()) GTEST_SKIP() << row.not_built;
    plugin_ = std::make_unique<Plugin>(row.plugin.c_str());
    ASSERT_NE(table(), nullptr);
    backend_ = std::make_unique<OpenBackend>(table(), row.config.c_str());
    ASSERT_NE(backend_->get(), nullptr);
    if (table()->device_count(backend_->get()) == 0) {
      GTEST_SKIP() << "the " << row.name << " backend finds no device on this machine";
    }
  }

  const atoll_backend_v1* table() const { return plugin_->table(); }
  void* backend() const { return backend_->get(); }

  std::filesystem::path Folder(const std::string& accelerator) const {
    return kAcceleratorDir / (accelerator + GetParam().suffix);
  }
  nlohmann::json Manifest(const std::string& accelerator) const {
    return ReadJson(Folder(accelerator) / "bitstream.json");
  }
  std::string BinaryPath(const std::string& accelerator) const {
    return (Folder(accelerator) / Manifest(accelerator)["name"].get<std::string>()).string();
  }

  // The manifest's kernel whose name list holds `name`.
  static nlohmann::json KernelSpec(const nlohmann::json& manifest, const std::string& name) {
    for (const auto& kernel : manifest["kernels"]) {
      for (const auto& n : kernel["name"]) {
        if (n == name) return kernel;
      }
    }
    ADD_FAILURE() << "no kernel named " << name;
    return nlohmann::json::object();
  }

  static std::vector<std::string> Types(const nlohmann::json& kernel) {
    std::vector<std::string> types;
    for (const auto& argument : kernel["arguments"]) types.push_back(argument["type"]);
    return types;
  }

  // Programs device 0 with the accelerator's binary and looks up `name` with the manifest's
  // argument types, as the daemon does.
  void* Kernel(const std::string& accelerator, const std::string& name) {
    nlohmann::json manifest = Manifest(accelerator);
    std::vector<std::string> types = Types(KernelSpec(manifest, name));
    std::vector<const char*> pointers;
    for (const std::string& t : types) pointers.push_back(t.c_str());
    std::string binary = BinaryPath(accelerator);
    std::string options = manifest.value("buildOptions", "");
    void* kernel = backend_->Kernel(binary.c_str(), name.c_str(), pointers, 0, options.c_str());
    kernels_[kernel] = {accelerator, name};
    return kernel;
  }

  // The geometry the daemon would pass: the manifest's "launch" block on these scalars.
  atoll_backend_geometry_v1 GeometryFor(void* kernel,
                                        const std::vector<atoll_backend_arg_v1>& args) const {
    auto [accelerator, name] = kernels_.at(kernel);
    nlohmann::json spec = KernelSpec(Manifest(accelerator), name);
    atoll_backend_geometry_v1 geometry = Geometry();
    if (!spec.contains("launch")) return geometry;
    const nlohmann::json& launch = spec["launch"];
    nlohmann::json global =
        launch["global"].is_array() ? launch["global"] : nlohmann::json::array({launch["global"]});
    geometry.dims = static_cast<uint32_t>(global.size());
    for (size_t d = 0; d < global.size(); ++d) {
      geometry.global[d] = Evaluate(global[d], spec["arguments"], args);
    }
    if (launch.contains("local")) {
      nlohmann::json local =
          launch["local"].is_array() ? launch["local"] : nlohmann::json::array({launch["local"]});
      for (size_t d = 0; d < local.size(); ++d) geometry.local[d] = local[d];
    }
    return geometry;
  }

  int Run(void* kernel, const std::vector<atoll_backend_arg_v1>& args, std::string* message,
          uint32_t compute_unit = 0) {
    return LaunchAndWait(table(), backend(), kernel, args.data(),
                         static_cast<uint32_t>(args.size()), GeometryFor(kernel, args), message,
                         compute_unit);
  }

  // Runs a vector kernel (a, b, c, size) on compute unit `compute_unit`.
  template <typename T>
  int RunVector(void* kernel, const char* type, std::vector<T>& a, std::vector<T>& b,
                std::vector<T>& c, int32_t size, std::string* message, uint32_t compute_unit = 0) {
    std::vector<atoll_backend_arg_v1> args = {
        Array(a.data(), a.size() * sizeof(T), type, ATOLL_BACKEND_ACCESS_READ),
        Array(b.data(), b.size() * sizeof(T), type, ATOLL_BACKEND_ACCESS_READ),
        Array(c.data(), c.size() * sizeof(T), type, ATOLL_BACKEND_ACCESS_WRITE),
        Scalar(size, "int")};
    return Run(kernel, args, message, compute_unit);
  }

  std::unique_ptr<Plugin> plugin_;
  std::unique_ptr<OpenBackend> backend_;
  std::map<void*, std::pair<std::string, std::string>> kernels_;
};

std::string RowName(const ::testing::TestParamInfo<BackendRow>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Backends, Accelerators, ::testing::ValuesIn(Backends()), RowName);

TEST_P(Accelerators, ManifestsNameTheirBinaryAndKernels) {
  for (const char* accelerator : kAccelerators) {
    SCOPED_TRACE(accelerator);
    nlohmann::json manifest = Manifest(accelerator);
    EXPECT_EQ(manifest["platform"]["backend"], GetParam().name);
    if (GetParam().name == "cpu") {
      EXPECT_EQ(manifest["platform"]["vendor"], "atoll");
    }
    void* program = nullptr;
    std::string message;
    std::string binary = BinaryPath(accelerator);
    ASSERT_EQ(backend_->Program(binary.c_str(), &program, &message, 0,
                                manifest.value("buildOptions", "").c_str()),
              ATOLL_OK)
        << message;
    for (const auto& kernel : manifest["kernels"]) {
      SCOPED_TRACE(kernel["kernelId"].get<std::string>());
      ASSERT_GE(kernel["name"].size(), 1u);
      std::vector<std::string> types = Types(kernel);
      std::vector<const char*> pointers;
      for (const std::string& t : types) pointers.push_back(t.c_str());
      for (const auto& name : kernel["name"]) {
        void* handle = nullptr;
        EXPECT_EQ(backend_->FindKernel(program, name.get<std::string>().c_str(), pointers, &handle,
                                       &message),
                  ATOLL_OK)
            << message;
      }
      // Length and launch rules may name only integer scalar arguments of the same kernel.
      std::set<std::string> scalars;
      for (const auto& argument : kernel["arguments"]) {
        std::string type = argument["type"];
        if (type.back() != '*') scalars.insert(argument["name"].get<std::string>());
      }
      std::vector<std::string> rules;
      for (const auto& argument : kernel["arguments"]) {
        if (argument.contains("length")) rules.push_back(argument["length"]);
      }
      if (kernel.contains("launch")) {
        const nlohmann::json& global = kernel["launch"]["global"];
        if (global.is_array()) {
          for (const auto& rule : global) rules.push_back(rule);
        } else {
          rules.push_back(global);
        }
      }
      for (const std::string& text : rules) {
        std::stringstream rule(text);
        std::string factor;
        while (std::getline(rule, factor, '*')) {
          bool constant = !factor.empty() && std::all_of(factor.begin(), factor.end(), ::isdigit);
          EXPECT_TRUE(constant || scalars.count(factor) == 1)
              << "factor '" << factor << "' of rule '" << text << "'";
        }
      }
    }
    table()->release_program(backend(), program);
  }
}

// A program written for one backend calls the same accelerator ids with the same arguments on
// any other.
TEST_P(Accelerators, ManifestsMatchTheCpuOnes) {
  for (const char* accelerator : kAccelerators) {
    SCOPED_TRACE(accelerator);
    nlohmann::json cpu = ReadJson(kAcceleratorDir / accelerator / "bitstream.json");
    nlohmann::json ours = Manifest(accelerator);
    EXPECT_EQ(ours["bitstreamId"], cpu["bitstreamId"]);
    EXPECT_EQ(ours["version"], cpu["version"]);
    ASSERT_EQ(ours["kernels"].size(), cpu["kernels"].size());
    for (size_t k = 0; k < cpu["kernels"].size(); ++k) {
      EXPECT_EQ(ours["kernels"][k]["kernelId"], cpu["kernels"][k]["kernelId"]);
      EXPECT_EQ(ours["kernels"][k]["arguments"], cpu["kernels"][k]["arguments"]);
    }
  }
}

TEST_P(Accelerators, VectorAddsAndSubtractsFloats) {
  void* vadd = Kernel("vector", "vadd");
  void* vsub = Kernel("vector", "vsub");
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
    ASSERT_EQ(RunVector(vadd, "float*", a, b, c, size, &message, 0), ATOLL_OK) << message;
    for (int32_t i = 0; i < size; ++i) ASSERT_EQ(c[i], a[i] + b[i]) << i;
    ASSERT_EQ(RunVector(vsub, "float*", a, b, c, size, &message, 1), ATOLL_OK) << message;
    for (int32_t i = 0; i < size; ++i) ASSERT_EQ(c[i], a[i] - b[i]) << i;
  }
}

TEST_P(Accelerators, VectorWorksInPlace) {
  void* vadd = Kernel("vector", "vadd");
  std::vector<float> a = {1, 2, 3, 4, 5};
  std::vector<float> b = {10, 20, 30, 40, 50};
  std::string message;
  ASSERT_EQ(RunVector(vadd, "float*", a, b, a, 5, &message), ATOLL_OK) << message;
  EXPECT_THAT(a, ::testing::ElementsAre(11, 22, 33, 44, 55));
}

TEST_P(Accelerators, VectorIntWrapsAround) {
  void* vadd = Kernel("vector_int", "vadd_int");
  void* vsub = Kernel("vector_int", "vsub_int");
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
    ASSERT_EQ(RunVector(vadd, "int*", a, b, c, size, &message), ATOLL_OK) << message;
    for (int32_t i = 0; i < size; ++i) {
      ASSERT_EQ(c[i], static_cast<int32_t>(static_cast<int64_t>(a[i]) + b[i])) << i;
    }
    ASSERT_EQ(RunVector(vsub, "int*", a, b, c, size, &message), ATOLL_OK) << message;
    for (int32_t i = 0; i < size; ++i) {
      ASSERT_EQ(c[i], static_cast<int32_t>(static_cast<int64_t>(a[i]) - b[i])) << i;
    }
  }
  std::vector<int32_t> a = {INT32_MAX, INT32_MIN};
  std::vector<int32_t> b = {1, 1};
  std::vector<int32_t> c(2);
  std::string message;
  ASSERT_EQ(RunVector(vadd, "int*", a, b, c, 2, &message), ATOLL_OK);
  EXPECT_THAT(c, ::testing::ElementsAre(INT32_MIN, INT32_MIN + 1));
  ASSERT_EQ(RunVector(vsub, "int*", a, b, c, 2, &message), ATOLL_OK);
  EXPECT_THAT(c, ::testing::ElementsAre(INT32_MAX - 1, INT32_MAX));
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
    if (filter2d_ == nullptr) filter2d_ = Kernel("vision", "filter2d");
    std::vector<atoll_backend_arg_v1> args = {
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
    return Accelerators::Run(filter2d_, args, message);
  }

  void* filter2d_ = nullptr;
};

INSTANTIATE_TEST_SUITE_P(Backends, Filter2d, ::testing::ValuesIn(Backends()), RowName);

TEST_P(Filter2d, MatchesTheReferenceIncludingBordersClampingFactorAndBias) {
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

TEST_P(Filter2d, RoundsHalfAwayFromZeroAndClamps) {
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

// The definition, written the plain way; this file is compiled with -ffp-contract=off, so each
// operation rounds on its own as in the kernels.
std::vector<int32_t> ReferenceMandelbrot(float x0, float y0, float step, int32_t max_iterations,
                                         int32_t width, int32_t height) {
  std::vector<int32_t> counts(static_cast<size_t>(width) * height);
  for (int32_t y = 0; y < height; ++y) {
    for (int32_t x = 0; x < width; ++x) {
      float cx = x0 + static_cast<float>(x) * step;
      float cy = y0 + static_cast<float>(y) * step;
      float zx = 0, zy = 0;
      int32_t n = 0;
      for (; n < max_iterations; ++n) {
        float xx = zx * zx;
        float yy = zy * zy;
        if (xx + yy > 4.0f) break;
        float xy = zx * zy;
        zy = (xy + xy) + cy;
        zx = (xx - yy) + cx;
      }
      counts[static_cast<size_t>(y) * width + x] = n;
    }
  }
  return counts;
}

class Mandelbrot : public Accelerators {
 protected:
  int Run(float x0, float y0, float step, int32_t max_iterations, int32_t width, int32_t height,
          std::vector<int32_t>& counts, std::string* message) {
    if (mandelbrot_ == nullptr) mandelbrot_ = Kernel("mandelbrot", "mandelbrot");
    std::vector<atoll_backend_arg_v1> args = {
        Scalar(x0, "float"),
        Scalar(y0, "float"),
        Scalar(step, "float"),
        Scalar(max_iterations, "int"),
        Scalar(width, "int"),
        Scalar(height, "int"),
        Array(counts.data(), counts.size() * sizeof(int32_t), "int*", ATOLL_BACKEND_ACCESS_WRITE)};
    return Accelerators::Run(mandelbrot_, args, message);
  }

  void* mandelbrot_ = nullptr;
};

INSTANTIATE_TEST_SUITE_P(Backends, Mandelbrot, ::testing::ValuesIn(Backends()), RowName);

TEST_P(Mandelbrot, CountsKnownPoints) {
  // c = 0 never escapes; c = 1: z = 1, 2, 5, and |5|^2 > 4 at n = 3; c = 1 + i: z_1 = 1 + i
  // (|z|^2 = 2), z_2 = 1 + 3i (10), so 2; c = -2 stays at 2 (|z|^2 = 4, not more).
  std::vector<int32_t> counts(4, -1);
  std::string message;
  ASSERT_EQ(Run(-2.0f, 0.0f, 1.0f, 100, 4, 1, counts, &message), ATOLL_OK) << message;
  EXPECT_THAT(counts, ::testing::ElementsAre(100, 100, 100, 3));
  std::vector<int32_t> one(1, -1);
  ASSERT_EQ(Run(1.0f, 1.0f, 1.0f, 100, 1, 1, one, &message), ATOLL_OK) << message;
  EXPECT_THAT(one, ::testing::ElementsAre(2));
  ASSERT_EQ(Run(0.0f, 0.0f, 1.0f, 0, 1, 1, one, &message), ATOLL_OK) << message;
  EXPECT_THAT(one, ::testing::ElementsAre(0));
}

// Bit-identical to the reference on grids over the set's edge, where one rounding more or less
// changes a count, and on sizes that leave partial 16 x 16 blocks.
TEST_P(Mandelbrot, MatchesTheReferenceBitForBit) {
  struct Grid {
    float x0, y0, step;
    int32_t max_iterations, width, height;
  };
  const Grid grids[] = {
      {-2.0f, -1.25f, 2.5f / 64, 256, 0, 0},       {-2.0f, -1.25f, 2.5f / 64, 256, 1, 1},
      {-2.0f, -1.25f, 2.5f / 64, 256, 7, 5},       {-2.0f, -1.25f, 2.5f / 64, 256, 97, 61},
      {-2.0f, -1.25f, 2.5f / 300, 1000, 300, 7},   {-0.7454f, 0.1130f, 1e-5f, 3000, 64, 48},
      {-1.7699f, -0.0034f, 1.7e-6f, 2000, 33, 40}, {-0.5f, -0.25f, 0.5f / 128, 500, 128, 128}};
  for (const Grid& g : grids) {
    SCOPED_TRACE(::testing::Message()
                 << g.width << "x" << g.height << " from (" << g.x0 << ", " << g.y0 << ") step "
                 << g.step << ", " << g.max_iterations << " iterations");
    std::vector<int32_t> counts(static_cast<size_t>(g.width) * g.height, -1);
    std::string message;
    ASSERT_EQ(Run(g.x0, g.y0, g.step, g.max_iterations, g.width, g.height, counts, &message),
              ATOLL_OK)
        << message;
    std::vector<int32_t> expected =
        ReferenceMandelbrot(g.x0, g.y0, g.step, g.max_iterations, g.width, g.height);
    ASSERT_EQ(counts, expected);
  }
}

// The region the multi-GPU benchmark uses lies inside the main cardioid: every point costs
// max_iterations, so each request does the same, known work.
TEST_P(Mandelbrot, TheBenchmarkRegionIsInsideTheSet) {
  const int32_t width = 256, height = 128, iterations = 2000;
  std::vector<int32_t> counts(static_cast<size_t>(width) * height, -1);
  std::string message;
  ASSERT_EQ(Run(-0.5f, -0.25f, 0.5f / width, iterations, width, height, counts, &message), ATOLL_OK)
      << message;
  EXPECT_EQ(std::count(counts.begin(), counts.end(), iterations), width * height);
}

// The cpu kernels check their own arguments, since anything can dlopen them and call them; on the
// other backends the daemon's manifest checks and the backend's signature checks do that.
class CpuAccelerators : public Accelerators {};
INSTANTIATE_TEST_SUITE_P(Backends, CpuAccelerators, ::testing::Values(Backends().front()), RowName);

TEST_P(CpuAccelerators, VectorRefusesArgumentsItWouldOverrun) {
  void* vadd = Kernel("vector", "vadd");
  std::vector<float> a(16), b(16), c(8);
  std::string message;
  EXPECT_EQ(RunVector(vadd, "float*", a, b, c, 16, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("vadd: argument 2 'c' holds 32 bytes"));
  EXPECT_EQ(RunVector(vadd, "float*", a, b, c, -1, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'size' is -1"));

  int32_t size = 4;
  EXPECT_EQ(
      Run(vadd, {Array(a.data(), 64, "float*"), Array(b.data(), 64, "float*"), Scalar(size, "int")},
          &message),
      ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("takes 4 arguments"));

  int64_t wide_size = 4;
  EXPECT_EQ(Run(vadd,
                {Array(a.data(), 64, "float*"), Array(b.data(), 64, "float*"),
                 Array(c.data(), 32, "float*"), Scalar(wide_size, "long")},
                &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'size' must be a scalar of 4 bytes"));

  auto* misaligned = reinterpret_cast<char*>(a.data()) + 1;
  EXPECT_EQ(Run(vadd,
                {Array(misaligned, 16, "float*"), Array(b.data(), 16, "float*"),
                 Array(c.data(), 16, "float*"), Scalar(size, "int")},
                &message),
            ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'a' is not aligned"));
}

class CpuFilter2d : public Filter2d {};
INSTANTIATE_TEST_SUITE_P(Backends, CpuFilter2d, ::testing::Values(Backends().front()), RowName);

TEST_P(CpuFilter2d, RefusesArgumentsItCannotHonour) {
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

class CpuMandelbrot : public Mandelbrot {};
INSTANTIATE_TEST_SUITE_P(Backends, CpuMandelbrot, ::testing::Values(Backends().front()), RowName);

TEST_P(CpuMandelbrot, RefusesArgumentsItCannotHonour) {
  std::vector<int32_t> counts(16);
  std::string message;
  EXPECT_EQ(Run(0, 0, 0.1f, 10, 4, 5, counts, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("mandelbrot: argument 6 'counts' holds 64 bytes"));
  EXPECT_EQ(Run(0, 0, 0.1f, 10, -4, 4, counts, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("-4 x 4"));
  EXPECT_EQ(Run(0, 0, 0.1f, -1, 4, 4, counts, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'max_iterations' is -1"));
  EXPECT_EQ(Run(0, NAN, 0.1f, 10, 4, 4, counts, &message), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("must be finite"));
}

}  // namespace
