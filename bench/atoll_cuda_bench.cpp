// atoll_cuda_bench: the cuda backend through atolld, against the CUDA program a user would
// otherwise write, measured in the same run on the same GPU (DESIGN.md, "Performance: how it is
// judged"). The direct baselines call the CUDA driver API in this process, loaded with dlopen as
// the backend loads it; cuMemcpyHtoD/DtoH on malloc'd memory is what cudaMemcpy does.
//
//   roundtrip  (a) vector.addition on 1024 floats, one request at a time, against: cuMemcpyHtoD of
//              a and b from malloc'd memory, the vadd kernel, cuMemcpyDtoH of c. Issue target:
//              at most 1.2x the direct time at p50.
//   bandwidth  (b) vector.addition on 3 x 256 MiB: the bytes it moves over its time, against
//              cuMemcpyHtoD of 256 MiB from pinned memory (the limit) and from pageable malloc'd
//              memory, and against the same uploads, kernel and download done directly from
//              pinned and from pageable memory. Also testing.cuda.consume on 256 MiB (one upload
//              and a kernel that reads it once). Issue target: at least 90% of pinned.
//   rate       (c) testing.cuda.noop with W requests in flight per client thread, 4 threads,
//              against 4 threads each launching noop on its own stream, W at a time. Issue
//              target: at least 250k requests/s.
//
// It expects a running atolld at $ATOLL_SOCKET whose cuda backend has vector and testing.cuda
// installed; bench/run_cuda.sh provides one. The figures are never asserted.
#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <latch>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <cuda.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "atoll/atoll.h"
#include "atoll/atoll.hpp"
#include "atoll/backend.h"
#include "bench_support.h"
#include "report.h"

namespace atl::bench {
namespace {

constexpr int kVectorLength = 1024;
constexpr double kRoundTripRatioTarget = 1.2;
constexpr double kBandwidthTarget = 0.9;
constexpr double kRateTarget = 250000;

struct Options {
  std::string build_dir;
  std::string json_path;
  std::string git;
  std::string daemon_config;
  int daemon_pid = 0;
  int iterations = 20000;
  int warmup = 2000;
  int rounds = 4;
  int big_mib = 256;
  int big_iterations = 20;
  double duration_s = 2.0;
  int window = 64;
  int threads = 4;
  std::vector<std::string> scenarios = {"roundtrip", "bandwidth", "rate"};
  bool quick = false;
};

// ---- The direct baseline: the CUDA driver API in this process ---------------------------------

#define ATL_BENCH_CUDA_FUNCTIONS(X) \
  X(cuInit)                         \
  X(cuDeviceGet)                    \
  X(cuDeviceGetName)                \
  X(cuDevicePrimaryCtxRetain)       \
  X(cuCtxSetCurrent)                \
  X(cuModuleLoadData)               \
  X(cuModuleGetFunction)            \
  X(cuMemAlloc)                     \
  X(cuMemFree)                      \
  X(cuMemAllocHost)                 \
  X(cuMemFreeHost)                  \
  X(cuMemcpyHtoD)                   \
  X(cuMemcpyDtoH)                   \
  X(cuMemcpyHtoDAsync)              \
  X(cuLaunchKernel)                 \
  X(cuStreamCreate)                 \
  X(cuStreamSynchronize)            \
  X(cuCtxSynchronize)               \
  X(cuGetErrorName)                 \
  X(cuMemsetD8)
#define ATL_BENCH_STRING2(x) #x
#define ATL_BENCH_STRING(x) ATL_BENCH_STRING2(x)
#define ATL_BENCH_TYPE(name) using name##_fn = decltype(&::name);
ATL_BENCH_CUDA_FUNCTIONS(ATL_BENCH_TYPE)
#undef ATL_BENCH_TYPE

class Cuda {
 public:
  Cuda() {
    void* handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) throw std::runtime_error(std::string("libcuda.so.1: ") + dlerror());
#define ATL_BENCH_LOAD(name)                                                 \
  name = reinterpret_cast<name##_fn>(dlsym(handle, ATL_BENCH_STRING(name))); \
  if (name == nullptr) throw std::runtime_error("libcuda.so.1 lacks " ATL_BENCH_STRING(name));
    ATL_BENCH_CUDA_FUNCTIONS(ATL_BENCH_LOAD)
#undef ATL_BENCH_LOAD
    Check(cuInit(0), "cuInit");
    Check(cuDeviceGet(&device_, 0), "cuDeviceGet");
    Check(cuDevicePrimaryCtxRetain(&context_, device_), "cuDevicePrimaryCtxRetain");
    MakeCurrent();
    char name[256] = "";
    cuDeviceGetName(name, sizeof(name), device_);
    name_ = name;
  }
  void MakeCurrent() const { Check(cuCtxSetCurrent(context_), "cuCtxSetCurrent"); }
  void Check(CUresult result, const char* what) const {
    if (result == CUDA_SUCCESS) return;
    const char* text = nullptr;
    cuGetErrorName(result, &text);
    throw std::runtime_error(std::string(what) + " failed: " + (text != nullptr ? text : "?"));
  }
  CUfunction Function(const std::string& path, const char* name) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw std::runtime_error("cannot read " + path);
    std::ostringstream bytes;
    bytes << file.rdbuf();
    images_.push_back(bytes.str());
    CUmodule module = nullptr;
    Check(cuModuleLoadData(&module, images_.back().data()), "cuModuleLoadData");
    CUfunction function = nullptr;
    Check(cuModuleGetFunction(&function, module, name), "cuModuleGetFunction");
    return function;
  }
  const std::string& name() const { return name_; }

#define ATL_BENCH_FIELD(name) name##_fn name = nullptr;
  ATL_BENCH_CUDA_FUNCTIONS(ATL_BENCH_FIELD)
#undef ATL_BENCH_FIELD

 private:
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  std::string name_;
  std::vector<std::string> images_;
};

// Device memory for the direct variants.
class DeviceBuffer {
 public:
  DeviceBuffer(const Cuda& cu, size_t bytes) : cu_(cu) {
    cu_.Check(cu_.cuMemAlloc(&pointer_, bytes), "cuMemAlloc");
  }
  ~DeviceBuffer() { cu_.cuMemFree(pointer_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  CUdeviceptr get() const { return pointer_; }

 private:
  const Cuda& cu_;
  CUdeviceptr pointer_ = 0;
};

class PinnedBuffer {
 public:
  PinnedBuffer(const Cuda& cu, size_t bytes) : cu_(cu) {
    cu_.Check(cu_.cuMemAllocHost(&pointer_, bytes), "cuMemAllocHost");
  }
  ~PinnedBuffer() { cu_.cuMemFreeHost(pointer_); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(pointer_);
  }

 private:
  const Cuda& cu_;
  void* pointer_ = nullptr;
};

void LaunchVadd(const Cuda& cu, CUfunction vadd, CUdeviceptr a, CUdeviceptr b, CUdeviceptr c, int n,
                CUstream stream = nullptr) {
  void* params[] = {&a, &b, &c, &n};
  unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  cu.Check(cu.cuLaunchKernel(vadd, blocks, 1, 1, 256, 1, 1, 0, stream, params, nullptr),
           "cuLaunchKernel");
}

// ---- The cuda backend in this process, without the daemon ------------------------------------
//
// The plugin loaded with dlopen and driven as atolld drives it: what the backend itself adds to a
// request, apart from the client/daemon path.
class InProcessBackend {
 public:
  InProcessBackend(const std::string& build, const std::string& config) {
    std::string path = build + "/lib/atoll/backends/libatoll_backend_cuda.so";
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) throw std::runtime_error(std::string("dlopen: ") + dlerror());
    auto get = reinterpret_cast<atoll_backend_get_v1_fn>(dlsym(handle, ATOLL_BACKEND_ENTRY_V1));
    if (get == nullptr) throw std::runtime_error(path + " has no " ATOLL_BACKEND_ENTRY_V1);
    table_ = get();
    char error[1024] = "";
    if (table_->open(config.c_str(), &backend_, error, sizeof(error)) != 0 ||
        table_->device_count(backend_) == 0) {
      throw std::runtime_error(std::string("cuda backend: ") + error);
    }
    std::string binary = build + "/accelerators/vector-cuda/vector.fatbin";
    if (table_->program(backend_, 0, binary.c_str(), "", &program_, error, sizeof(error)) != 0) {
      throw std::runtime_error(std::string("program: ") + error);
    }
    const char* types[] = {"float*", "float*", "float*", "int"};
    if (table_->kernel(backend_, program_, "vadd", types, 4, &vadd_, error, sizeof(error)) != 0) {
      throw std::runtime_error(std::string("kernel: ") + error);
    }
  }
  ~InProcessBackend() { table_->close(backend_); }

  // Loads testing.cuda's noop.
  void LoadNoop(const std::string& build) {
    std::string binary = build + "/accelerators/testing-cuda/testing.fatbin";
    char error[1024] = "";
    void* program = nullptr;
    if (table_->program(backend_, 0, binary.c_str(), "", &program, error, sizeof(error)) != 0 ||
        table_->kernel(backend_, program, "noop", nullptr, 0, &noop_, error, sizeof(error)) != 0) {
      throw std::runtime_error(std::string("noop: ") + error);
    }
  }
  // Starts noop on `compute_unit`; `status` becomes its status when it completes.
  void StartNoop(uint32_t compute_unit, std::atomic<int>* status) {
    atoll_backend_geometry_v1 geometry{};
    char error[512] = "";
    status->store(-1, std::memory_order_relaxed);
    if (table_->launch(backend_, 0, compute_unit, noop_, nullptr, 0, &geometry, &Done, status,
                       error, sizeof(error)) != 0) {
      throw std::runtime_error(std::string("launch noop: ") + error);
    }
  }
  InProcessBackend(const InProcessBackend&) = delete;
  InProcessBackend& operator=(const InProcessBackend&) = delete;

  void Register(void* data, uint64_t bytes) {
    char error[1024] = "";
    if (table_->register_memory(backend_, data, bytes, error, sizeof(error)) != 0) {
      throw std::runtime_error(std::string("register_memory: ") + error);
    }
  }
  void Unregister(void* data) { table_->unregister_memory(backend_, data); }

  // vadd on n floats, waiting for `done` by polling, as a client waiting for a reply would.
  void Vadd(float* a, float* b, float* c, int n) {
    uint64_t bytes = static_cast<uint64_t>(n) * sizeof(float);
    atoll_backend_arg_v1 args[] = {
        {ATOLL_BACKEND_ARG_ARRAY, ATOLL_BACKEND_ACCESS_READ, "float*", a, bytes},
        {ATOLL_BACKEND_ARG_ARRAY, ATOLL_BACKEND_ACCESS_READ, "float*", b, bytes},
        {ATOLL_BACKEND_ARG_ARRAY, ATOLL_BACKEND_ACCESS_WRITE, "float*", c, bytes},
        {ATOLL_BACKEND_ARG_SCALAR, 0, "int", &n, sizeof(n)}};
    atoll_backend_geometry_v1 geometry{};
    geometry.dims = 1;
    geometry.global[0] = static_cast<uint64_t>(n);
    std::atomic<int> status{-1};
    char error[1024] = "";
    int rc = table_->launch(backend_, 0, 0, vadd_, args, 4, &geometry, &Done, &status, error,
                            sizeof(error));
    if (rc != 0) throw std::runtime_error(std::string("launch: ") + error);
    while (status.load(std::memory_order_acquire) < 0) {
    }
    if (status.load() != 0) throw std::runtime_error("the in-process launch failed");
  }

 private:
  static void Done(void* user, int status, const char*) {
    static_cast<std::atomic<int>*>(user)->store(status, std::memory_order_release);
  }
  const atoll_backend_v1* table_ = nullptr;
  void* backend_ = nullptr;
  void* program_ = nullptr;
  void* vadd_ = nullptr;
  void* noop_ = nullptr;
};

// `threads` threads, each keeping `per_thread` compute units of an in-process cuda backend busy
// with noop, one launch each at a time as atolld does: the backend's own request rate.
double InProcessNoopRate(const std::string& build, int threads, int per_thread, double duration_s) {
  InProcessBackend backend(build, R"({"streams": )" + std::to_string(threads * per_thread) + "}");
  backend.LoadNoop(build);
  std::atomic<bool> stop{false};
  std::vector<uint64_t> counts(static_cast<size_t>(threads));
  std::vector<std::string> errors(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  int64_t begin = NowNs();
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        std::vector<std::atomic<int>> slots(static_cast<size_t>(per_thread));
        for (int i = 0; i < per_thread; ++i) {
          backend.StartNoop(static_cast<uint32_t>(t * per_thread + i), &slots[i]);
        }
        uint64_t done = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          for (int i = 0; i < per_thread; ++i) {
            if (slots[i].load(std::memory_order_acquire) < 0) continue;
            ++done;
            backend.StartNoop(static_cast<uint32_t>(t * per_thread + i), &slots[i]);
          }
        }
        for (auto& slot : slots) {
          while (slot.load(std::memory_order_acquire) < 0) {
          }
        }
        counts[static_cast<size_t>(t)] = done;
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(t)] = e.what();
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(duration_s));
  stop.store(true);
  int64_t end = NowNs();
  for (auto& w : workers) w.join();
  for (const auto& e : errors) {
    if (!e.empty()) throw std::runtime_error(e);
  }
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return static_cast<double>(total) / (static_cast<double>(end - begin) / 1e9);
}

// Page-aligned shared memory, as atolld maps client buffers.
class SharedBuffer {
 public:
  explicit SharedBuffer(size_t bytes) : bytes_((bytes + 4095) / 4096 * 4096) {
    data_ = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (data_ == MAP_FAILED) throw std::runtime_error("mmap failed");
  }
  ~SharedBuffer() { munmap(data_, bytes_); }
  SharedBuffer(const SharedBuffer&) = delete;
  SharedBuffer& operator=(const SharedBuffer&) = delete;
  float* floats() const { return static_cast<float*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  void* data_;
  size_t bytes_;
};

// ---- Measurement --------------------------------------------------------------------------------

struct Variant {
  std::string key;
  std::function<void()> call;
  std::vector<int64_t> samples_ns;
  Usage usage;
  int64_t wall_ns = 0;
};

// Warms every variant up, then times each call; the variants take turns in rounds so a noisy
// phase of the machine spreads over all of them.
void MeasureInRounds(const Options& o, int iterations, int warmup, std::vector<Variant>* variants) {
  for (Variant& v : *variants) {
    for (int i = 0; i < warmup; ++i) v.call();
  }
  const int rounds = std::max(1, o.rounds);
  const int per_round = std::max(1, iterations / rounds);
  for (int round = 0; round < rounds; ++round) {
    for (Variant& v : *variants) {
      Usage before = SampleUsage(o.daemon_pid, SampleAt::kStart);
      int64_t begin = NowNs();
      for (int i = 0; i < per_round; ++i) {
        int64_t t0 = NowNs();
        v.call();
        v.samples_ns.push_back(NowNs() - t0);
      }
      v.wall_ns += NowNs() - begin;
      v.usage += SampleUsage(o.daemon_pid, SampleAt::kEnd) - before;
    }
  }
}

void CheckSum(const char* what, const float* a, const float* b, const float* c, size_t n) {
  for (size_t i = 0; i < n; i += (n > 100000 ? 4099 : 1)) {
    if (c[i] != a[i] + b[i]) {
      throw std::runtime_error(std::string(what) + ": c[" + std::to_string(i) + "] = " +
                               std::to_string(c[i]) + ", expected " + std::to_string(a[i] + b[i]));
    }
  }
}

// ---- (a) Round trip -----------------------------------------------------------------------------

void RoundTrip(const Options& o, Cuda& cu, Report* report) {
  const int n = kVectorLength;
  const size_t bytes = n * sizeof(float);
  CUfunction vadd = cu.Function(o.build_dir + "/accelerators/vector-cuda/vector.fatbin", "vadd");
  DeviceBuffer da(cu, bytes), db(cu, bytes), dc(cu, bytes);
  std::vector<float> ha(n), hb(n), hc(n);
  atoll::vector<float> a(n), b(n), c(n);
  for (int i = 0; i < n; ++i) {
    a[i] = ha[i] = static_cast<float>(i) * 0.5f;
    b[i] = hb[i] = static_cast<float>(n - i);
  }
  auto direct = [&] {
    // The in-process backend below makes its own context current on this thread.
    cu.MakeCurrent();
    cu.Check(cu.cuMemcpyHtoD(da.get(), ha.data(), bytes), "cuMemcpyHtoD");
    cu.Check(cu.cuMemcpyHtoD(db.get(), hb.data(), bytes), "cuMemcpyHtoD");
    LaunchVadd(cu, vadd, da.get(), db.get(), dc.get(), n);
    cu.Check(cu.cuMemcpyDtoH(hc.data(), dc.get(), bytes), "cuMemcpyDtoH");
  };
  atoll::request request("vector.addition");
  request.arg(a).arg(b).arg(c).arg(n);
  auto through_atoll = [&] { atoll::submit(request).get(); };
  // The C API's waiting thread polls for its response (ATOLL_SPIN_US) where std::future sleeps.
  atoll::vector<float> c_c(n);
  CRequest c_request("vector.addition");
  SetVectorAdditionArgs(c_request, a.data(), b.data(), c_c.data(), n);
  auto through_c_api = [&] { SubmitAndWaitC(c_request); };
  // Where the time goes: the backend in this process (no daemon), with copies and with
  // zero-copy; the daemon's round trip of a kernel that does nothing, on the cpu and the cuda
  // backend; the bare socket ping-pong.
  InProcessBackend copies(o.build_dir, R"({"zero_copy_bytes": 0})");
  InProcessBackend zero_copy(o.build_dir, R"({"zero_copy_bytes": 65536})");
  SharedBuffer pa(bytes), pb(bytes), pc(bytes), za(bytes), zb(bytes), zc(bytes);
  for (int i = 0; i < n; ++i) {
    pa.floats()[i] = za.floats()[i] = ha[i];
    pb.floats()[i] = zb.floats()[i] = hb[i];
  }
  for (SharedBuffer* buffer : {&pa, &pb, &pc}) copies.Register(buffer->floats(), buffer->bytes());
  for (SharedBuffer* buffer : {&za, &zb, &zc}) {
    zero_copy.Register(buffer->floats(), buffer->bytes());
  }
  atoll::request noop_cuda("testing.cuda.noop");
  atoll::request noop_cpu("testing.noop");
  SocketEcho echo(64);
  std::vector<Variant> variants;
  variants.push_back({"direct", direct, {}, {}, 0});
  variants.push_back({"atoll", through_atoll, {}, {}, 0});
  variants.push_back({"atoll_c_api", through_c_api, {}, {}, 0});
  variants.push_back({"atoll_call", [&] { atoll::call(request); }, {}, {}, 0});
  variants.push_back({"backend_in_process",
                      [&] { copies.Vadd(pa.floats(), pb.floats(), pc.floats(), n); },
                      {},
                      {},
                      0});
  variants.push_back({"backend_in_process_zero_copy",
                      [&] { zero_copy.Vadd(za.floats(), zb.floats(), zc.floats(), n); },
                      {},
                      {},
                      0});
  variants.push_back({"atoll_noop_cuda", [&] { atoll::submit(noop_cuda).get(); }, {}, {}, 0});
  variants.push_back({"atoll_noop_cpu", [&] { atoll::submit(noop_cpu).get(); }, {}, {}, 0});
  variants.push_back({"floor_socket", [&] { echo.RoundTrip(false); }, {}, {}, 0});
  variants.push_back({"floor_socket_polling", [&] { echo.RoundTrip(true); }, {}, {}, 0});
  MeasureInRounds(o, o.iterations, o.warmup, &variants);
  CheckSum("direct", ha.data(), hb.data(), hc.data(), n);
  CheckSum("atoll", a.data(), b.data(), c.data(), n);
  CheckSum("atoll, C API", a.data(), b.data(), c_c.data(), n);
  CheckSum("backend in process", pa.floats(), pb.floats(), pc.floats(), n);
  CheckSum("backend in process, zero-copy", za.floats(), zb.floats(), zc.floats(), n);

  std::map<std::string, LatencySummary> s;
  for (Variant& v : variants) s[v.key] = Summarize(v.samples_ns);
  const std::string section =
      "(a) Round trip: vector.addition on 1024 floats, one request at a time (baseline: "
      "cuMemcpyHtoD x2 from malloc'd memory, vadd, cuMemcpyDtoH, in-process on the same GPU)";
  auto details = [](const LatencySummary& x) {
    return nlohmann::json{
        {"samples", x.count}, {"min_us", x.min_us}, {"max_us", x.max_us}, {"mean_us", x.mean_us}};
  };
  report->Add(Make(section, "cuda.roundtrip.direct.p50", s["direct"].p50_us, "us",
                   std::numeric_limits<double>::quiet_NaN(), "", details(s["direct"])));
  report->Add(Make(section, "cuda.roundtrip.direct.p99", s["direct"].p99_us, "us"));
  Result p50 = Make(section, "cuda.roundtrip.atoll.p50", s["atoll"].p50_us, "us",
                    s["direct"].p50_us, "cuda.roundtrip.direct.p50", details(s["atoll"]));
  p50.target = "<= 1.2x direct";
  p50.target_met = p50.ratio() <= kRoundTripRatioTarget;
  report->Add(std::move(p50));
  report->Add(Make(section, "cuda.roundtrip.atoll.p99", s["atoll"].p99_us, "us", s["direct"].p99_us,
                   "cuda.roundtrip.direct.p99"));
  Result c_p50 =
      Make(section, "cuda.roundtrip.atoll_c_api.p50", s["atoll_c_api"].p50_us, "us",
           s["direct"].p50_us, "cuda.roundtrip.direct.p50",
           {{"what", "atoll_submit + atoll_response_wait"}, {"p99_us", s["atoll_c_api"].p99_us}});
  c_p50.target = "<= 1.2x direct";
  c_p50.target_met = c_p50.ratio() <= kRoundTripRatioTarget;
  report->Add(std::move(c_p50));
  Result call_p50 = Make(section, "cuda.roundtrip.atoll_call.p50", s["atoll_call"].p50_us, "us",
                         s["direct"].p50_us, "cuda.roundtrip.direct.p50",
                         {{"what", "atoll::call(r): submit and wait in the calling thread"},
                          {"p99_us", s["atoll_call"].p99_us}});
  call_p50.target = "<= 1.2x direct";
  call_p50.target_met = call_p50.ratio() <= kRoundTripRatioTarget;
  report->Add(std::move(call_p50));
  report->Add(Make(section, "cuda.roundtrip.atoll_minus_direct.p50",
                   s["atoll"].p50_us - s["direct"].p50_us, "us"));
  const std::string where =
      "(a') Where the round trip goes (p50): the backend alone, in this process, and the "
      "daemon's path with a kernel that does nothing (baseline: direct CUDA)";
  const struct {
    const char* key;
    const char* what;
  } parts[] = {
      {"backend_in_process",
       "the cuda backend loaded in this process (no daemon), vadd on registered memory, copies"},
      {"backend_in_process_zero_copy", "the same with zero_copy_bytes 65536: no copies"},
      {"atoll_noop_cuda", "testing.cuda.noop through atolld: the daemon path plus an empty launch"},
      {"atoll_noop_cpu", "testing.noop through atolld on the cpu backend: the daemon path alone"},
  };
  for (const auto& part : parts) {
    report->Add(Make(where, std::string("cuda.roundtrip.") + part.key + ".p50", s[part.key].p50_us,
                     "us", s["direct"].p50_us, "cuda.roundtrip.direct.p50",
                     {{"what", part.what}, {"p99_us", s[part.key].p99_us}}));
  }
  report->Add(Make(where, "floor.process_socket.p50", s["floor_socket"].p50_us, "us",
                   std::numeric_limits<double>::quiet_NaN(), "",
                   {{"what",
                     "64-byte packet to an echo process and back, both blocking: the "
                     "least any client/daemon design pays per request here"}}));
  report->Add(Make(where, "floor.process_socket_polling.p50", s["floor_socket_polling"].p50_us,
                   "us", std::numeric_limits<double>::quiet_NaN(), "",
                   {{"what", "the same with the caller polling (the echo process still sleeps)"}}));
  for (const Variant& v : variants) {
    report->Add(Diagnostic{"cuda.roundtrip." + v.key, static_cast<double>(v.samples_ns.size()),
                           static_cast<double>(v.wall_ns) / 1e9, v.usage});
  }
}

// ---- (b) Bandwidth ------------------------------------------------------------------------------

double GBps(size_t bytes, double us) { return us > 0 ? static_cast<double>(bytes) / us / 1e3 : 0; }

void Bandwidth(const Options& o, Cuda& cu, Report* report) {
  cu.MakeCurrent();
  const size_t bytes = static_cast<size_t>(o.big_mib) << 20;
  const int n = static_cast<int>(bytes / sizeof(float));
  CUfunction vadd = cu.Function(o.build_dir + "/accelerators/vector-cuda/vector.fatbin", "vadd");
  DeviceBuffer da(cu, bytes), db(cu, bytes), dc(cu, bytes);
  PinnedBuffer pa(cu, bytes), pb(cu, bytes), pc(cu, bytes);
  std::vector<float> ha(n), hb(n), hc(n);
  atoll::vector<float> a(n), b(n), c(n);
  atoll::vector<int> data(n);
  atoll::vector<unsigned long long> sum(1);
  for (int i = 0; i < n; ++i) {
    float x = static_cast<float>(i % 1000), y = static_cast<float>(i % 7);
    a[i] = ha[i] = pa.as<float>()[i] = x;
    b[i] = hb[i] = pb.as<float>()[i] = y;
    data[i] = i % 1000;
  }
  std::memset(hc.data(), 0, bytes);
  std::memset(pc.as<float>(), 0, bytes);

  auto upload_pinned = [&] { cu.Check(cu.cuMemcpyHtoD(da.get(), pa.as<float>(), bytes), "HtoD"); };
  auto upload_pageable = [&] { cu.Check(cu.cuMemcpyHtoD(da.get(), ha.data(), bytes), "HtoD"); };
  atoll::request consume("testing.cuda.consume");
  consume.arg(data).arg(n).arg(sum);
  auto upload_atoll = [&] {
    sum[0] = 0;
    atoll::submit(consume).get();
  };
  auto vadd_sequence = [&](const float* x, const float* y, float* z) {
    cu.Check(cu.cuMemcpyHtoD(da.get(), x, bytes), "HtoD");
    cu.Check(cu.cuMemcpyHtoD(db.get(), y, bytes), "HtoD");
    LaunchVadd(cu, vadd, da.get(), db.get(), dc.get(), n);
    cu.Check(cu.cuMemcpyDtoH(z, dc.get(), bytes), "DtoH");
  };
  auto vadd_pinned = [&] { vadd_sequence(pa.as<float>(), pb.as<float>(), pc.as<float>()); };
  auto vadd_pageable = [&] { vadd_sequence(ha.data(), hb.data(), hc.data()); };
  atoll::request add("vector.addition");
  add.arg(a).arg(b).arg(c).arg(n);
  auto vadd_atoll = [&] { atoll::submit(add).get(); };

  std::vector<Variant> variants;
  variants.push_back({"upload.pinned", upload_pinned, {}, {}, 0});
  variants.push_back({"upload.pageable", upload_pageable, {}, {}, 0});
  variants.push_back({"upload.atoll", upload_atoll, {}, {}, 0});
  variants.push_back({"vadd.pinned", vadd_pinned, {}, {}, 0});
  variants.push_back({"vadd.pageable", vadd_pageable, {}, {}, 0});
  variants.push_back({"vadd.atoll", vadd_atoll, {}, {}, 0});
  MeasureInRounds(o, o.big_iterations, 2, &variants);
  CheckSum("direct pinned", pa.as<float>(), pb.as<float>(), pc.as<float>(), n);
  CheckSum("direct pageable", ha.data(), hb.data(), hc.data(), n);
  CheckSum("atoll", a.data(), b.data(), c.data(), n);
  unsigned long long expected = 0;
  for (int i = 0; i < n; ++i) expected += static_cast<unsigned long long>(i % 1000);
  if (sum[0] != expected) throw std::runtime_error("testing.cuda.consume returned a wrong sum");

  std::map<std::string, LatencySummary> s;
  for (Variant& v : variants) s[v.key] = Summarize(v.samples_ns);
  const std::string mib = std::to_string(o.big_mib) + " MiB";
  std::string section = "(b) Host-to-device bandwidth, " + mib +
                        " arrays (p50 of each; baseline: cuMemcpyHtoD of " + mib +
                        " from pinned memory, the limit)";
  double pinned = GBps(bytes, s["upload.pinned"].p50_us);
  report->Add(Make(section, "cuda.upload.pinned", pinned, "GB/s",
                   std::numeric_limits<double>::quiet_NaN(), "",
                   {{"what", "cuMemcpyHtoD of " + mib + " from cuMemAllocHost memory"}}));
  report->Add(Make(section, "cuda.upload.pageable", GBps(bytes, s["upload.pageable"].p50_us),
                   "GB/s", pinned, "cuda.upload.pinned",
                   {{"what", "cuMemcpyHtoD of " + mib + " from malloc'd memory"}}));
  Result effective =
      Make(section, "cuda.vadd_big.atoll.effective", GBps(3 * bytes, s["vadd.atoll"].p50_us),
           "GB/s", pinned, "cuda.upload.pinned",
           {{"what", "vector.addition on 3 x " + mib +
                         " through atolld: 2 uploads, the kernel and 1 download, bytes moved "
                         "over the request's time"},
            {"direct_pinned_same_work_GBps", GBps(3 * bytes, s["vadd.pinned"].p50_us)},
            {"direct_pageable_same_work_GBps", GBps(3 * bytes, s["vadd.pageable"].p50_us)}});
  effective.target = ">= 90% of pinned";
  effective.target_met = effective.ratio() >= kBandwidthTarget;
  report->Add(std::move(effective));
  report->Add(Make(section, "cuda.upload.atoll", GBps(bytes, s["upload.atoll"].p50_us), "GB/s",
                   pinned, "cuda.upload.pinned",
                   {{"what", "testing.cuda.consume on " + mib +
                                 " through atolld: one upload and a kernel that reads it once"}}));

  section = "(b') vector.addition on 3 x " + mib +
            " (p50 time; baseline: the same uploads, kernel and download done directly from "
            "pinned memory)";
  report->Add(Make(section, "cuda.vadd_big.direct_pinned", s["vadd.pinned"].p50_us / 1e3, "ms",
                   std::numeric_limits<double>::quiet_NaN(), "",
                   {{"GBps_moved", GBps(3 * bytes, s["vadd.pinned"].p50_us)}}));
  report->Add(Make(section, "cuda.vadd_big.direct_pageable", s["vadd.pageable"].p50_us / 1e3, "ms",
                   s["vadd.pinned"].p50_us / 1e3, "cuda.vadd_big.direct_pinned",
                   {{"GBps_moved", GBps(3 * bytes, s["vadd.pageable"].p50_us)}}));
  report->Add(Make(section, "cuda.vadd_big.atoll", s["vadd.atoll"].p50_us / 1e3, "ms",
                   s["vadd.pinned"].p50_us / 1e3, "cuda.vadd_big.direct_pinned",
                   {{"GBps_moved", GBps(3 * bytes, s["vadd.atoll"].p50_us)}}));
  for (const Variant& v : variants) {
    report->Add(Diagnostic{"cuda.bandwidth." + v.key, static_cast<double>(v.samples_ns.size()),
                           static_cast<double>(v.wall_ns) / 1e9, v.usage});
  }
}

// ---- (c) Request rate ---------------------------------------------------------------------------

uint64_t PipelineNoop(int window, int64_t deadline_ns, const char* accelerator) {
  atoll::request noop(accelerator);
  std::vector<std::future<void>> ring(static_cast<size_t>(window));
  for (auto& f : ring) f = atoll::submit(noop);
  uint64_t done = 0;
  size_t oldest = 0;
  while (NowNs() < deadline_ns) {
    ring[oldest].get();
    ++done;
    ring[oldest] = atoll::submit(noop);
    if (++oldest == ring.size()) oldest = 0;
  }
  for (size_t i = 0; i < ring.size(); ++i) {
    ring[(oldest + i) % ring.size()].get();
    ++done;
  }
  return done;
}

// `threads` threads, each launching noop on its own stream, `window` launches per
// synchronisation: the most kernel launches per second this process gets from the GPU.
double DirectNoopRate(Cuda& cu, CUfunction noop, int threads, int window, double duration_s) {
  std::atomic<bool> stop{false};
  std::latch ready(threads + 1);
  std::vector<uint64_t> counts(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  std::vector<std::string> errors(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        cu.MakeCurrent();
        CUstream stream = nullptr;
        cu.Check(cu.cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
        ready.arrive_and_wait();
        uint64_t launches = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          for (int i = 0; i < window; ++i) {
            cu.Check(cu.cuLaunchKernel(noop, 1, 1, 1, 1, 1, 1, 0, stream, nullptr, nullptr),
                     "cuLaunchKernel");
          }
          cu.Check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize");
          launches += static_cast<uint64_t>(window);
        }
        counts[static_cast<size_t>(t)] = launches;
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(t)] = e.what();
        ready.count_down();
      }
    });
  }
  ready.arrive_and_wait();
  int64_t begin = NowNs();
  std::this_thread::sleep_for(std::chrono::duration<double>(duration_s));
  stop.store(true);
  for (auto& w : workers) w.join();
  for (const auto& e : errors) {
    if (!e.empty()) throw std::runtime_error(e);
  }
  double elapsed = static_cast<double>(NowNs() - begin) / 1e9;
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return static_cast<double>(total) / elapsed;
}

struct RateRun {
  uint64_t requests = 0;
  double elapsed_s = 0;
  Usage usage;
};

// `threads` client threads pipelining `accelerator` through atolld.
RateRun DaemonRate(const Options& o, const char* accelerator) {
  // Warm-up: connect, load the binary, reach the steady state.
  PipelineNoop(o.window, NowNs() + static_cast<int64_t>(2e8), accelerator);
  std::latch ready(o.threads + 1), go(1);
  std::atomic<int64_t> deadline{0};
  std::vector<uint64_t> counts(static_cast<size_t>(o.threads));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(o.threads));
  std::vector<std::thread> workers;
  for (int t = 0; t < o.threads; ++t) {
    workers.emplace_back([&, t] {
      ready.count_down();
      go.wait();
      try {
        counts[static_cast<size_t>(t)] = PipelineNoop(o.window, deadline.load(), accelerator);
      } catch (...) {
        errors[static_cast<size_t>(t)] = std::current_exception();
      }
    });
  }
  ready.arrive_and_wait();
  Usage before = SampleUsage(o.daemon_pid, SampleAt::kStart);
  int64_t begin = NowNs();
  deadline.store(begin + static_cast<int64_t>(o.duration_s * 1e9));
  go.count_down();
  for (auto& w : workers) w.join();
  double elapsed = static_cast<double>(NowNs() - begin) / 1e9;
  Usage used = SampleUsage(o.daemon_pid, SampleAt::kEnd) - before;
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  RateRun run;
  for (uint64_t c : counts) run.requests += c;
  run.elapsed_s = elapsed;
  run.usage = used;
  return run;
}

void Rate(const Options& o, Cuda& cu, Report* report) {
  cu.MakeCurrent();
  CUfunction noop = cu.Function(o.build_dir + "/accelerators/testing-cuda/testing.fatbin", "noop");
  Progress("  direct: " + std::to_string(o.threads) + " threads launching noop");
  double direct = DirectNoopRate(cu, noop, o.threads, o.window, std::max(0.2, o.duration_s / 2));
  Progress("  the cuda backend in this process: " + std::to_string(o.threads) + " threads");
  double in_process = InProcessNoopRate(o.build_dir, o.threads, 4, std::max(0.2, o.duration_s / 2));
  cu.MakeCurrent();
  Progress("  through atolld: " + std::to_string(o.threads) + " client threads, cuda backend");
  RateRun cuda = DaemonRate(o, "testing.cuda.noop");
  Progress("  through atolld: " + std::to_string(o.threads) + " client threads, cpu backend");
  RateRun cpu = DaemonRate(o, "testing.noop");
  uint64_t requests = cuda.requests;
  double elapsed = cuda.elapsed_s;
  Usage used = cuda.usage;
  double rate = static_cast<double>(requests) / elapsed;
  const std::string section = "(c) Pipelined requests: testing.cuda.noop, " +
                              std::to_string(o.window) + " in flight per client thread, " +
                              std::to_string(o.threads) +
                              " threads (baseline: as many threads launching noop on their own "
                              "streams, " +
                              std::to_string(o.window) + " per synchronisation)";
  report->Add(Make(section, "cuda.rate.direct", direct, "req/s"));
  Result r = Make(section, "cuda.rate.atoll", rate, "req/s", direct, "cuda.rate.direct",
                  {{"requests", requests}, {"elapsed_s", elapsed}});
  r.target = ">= 250000 req/s";
  r.target_met = rate >= kRateTarget;
  report->Add(std::move(r));
  report->Add(Make(section, "cuda.rate.backend_in_process", in_process, "req/s", direct,
                   "cuda.rate.direct",
                   {{"what", "the cuda backend loaded in this process (no daemon), " +
                                 std::to_string(o.threads) +
                                 " threads each keeping 4 compute units busy with noop, one "
                                 "launch per compute unit at a time as atolld does"}}));
  double cpu_rate = static_cast<double>(cpu.requests) / cpu.elapsed_s;
  report->Add(Make(section, "cuda.rate.atoll_cpu_backend_noop", cpu_rate, "req/s", direct,
                   "cuda.rate.direct",
                   {{"what",
                     "testing.noop on the cpu backend through the same atolld: the "
                     "daemon's own ceiling on this machine"}}));
  report->Add(Diagnostic{"cuda.rate.atoll", static_cast<double>(requests), elapsed, used});
  report->Add(Diagnostic{"cuda.rate.atoll_cpu_backend", static_cast<double>(cpu.requests),
                         cpu.elapsed_s, cpu.usage});
}

int Run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "atoll_cuda_bench: the cuda backend through atolld against direct CUDA in the "
      "same process and run. Needs a running atolld at $ATOLL_SOCKET with the cuda "
      "backend and the vector and testing.cuda accelerators; bench/run_cuda.sh starts "
      "one and runs this.",
      "atoll_cuda_bench"};
  app.add_option("--build", o.build_dir, "build folder holding accelerators/*-cuda/*.fatbin");
  app.add_option("--json", o.json_path, "also write the results as JSON to this file");
  app.add_flag("--quick", o.quick, "a smoke run of a few seconds");
  app.add_option("--iterations", o.iterations, "timed round trips per variant (a)")
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed round trips per variant first (a)")
      ->capture_default_str();
  app.add_option("--rounds", o.rounds, "variants take turns in this many rounds")
      ->capture_default_str();
  app.add_option("--big-mib", o.big_mib, "array size of (b) in MiB")->capture_default_str();
  app.add_option("--big-iterations", o.big_iterations, "timed calls per variant (b)")
      ->capture_default_str();
  app.add_option("--duration", o.duration_s, "seconds of the rate run (c)")->capture_default_str();
  app.add_option("--window", o.window, "requests in flight per client thread (c)")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "client threads (c)")->capture_default_str();
  std::string scenarios = "roundtrip,bandwidth,rate";
  app.add_option("--scenarios", scenarios, "which to run: roundtrip, bandwidth, rate")
      ->capture_default_str();
  app.add_option("--daemon-pid", o.daemon_pid, "the daemon's pid, for its CPU time per request");
  app.add_option("--daemon-config", o.daemon_config, "the daemon's cuda settings, for the JSON");
  app.add_option("--git", o.git, "the source revision, recorded in the JSON");
  CLI11_PARSE(app, argc, argv);
  o.scenarios = SplitCommas(scenarios);
  if (o.quick) {
    auto unless_given = [&](const char* flag, auto* field, auto value) {
      if (app.count(flag) == 0) *field = value;
    };
    unless_given("--iterations", &o.iterations, 500);
    unless_given("--warmup", &o.warmup, 100);
    unless_given("--rounds", &o.rounds, 2);
    unless_given("--big-mib", &o.big_mib, 16);
    unless_given("--big-iterations", &o.big_iterations, 4);
    unless_given("--duration", &o.duration_s, 0.3);
  }
  if (o.build_dir.empty()) {
    o.build_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path();
  }

  Cuda cu;
  MachineInfo machine = DescribeMachine();
  std::string date = UtcNow();
  std::printf("atoll_cuda_bench %s: %s; %s, %u cores, %s; load average %s\n", date.c_str(),
              cu.name().c_str(), machine.cpu_model.c_str(), machine.cores, machine.kernel.c_str(),
              machine.loadavg.c_str());
  std::fflush(stdout);
  Report report;
  if (Wants(o.scenarios, "roundtrip")) {
    Progress("(a) round trip: vector.addition 1024 floats, direct CUDA vs atolld");
    RoundTrip(o, cu, &report);
  }
  if (Wants(o.scenarios, "bandwidth")) {
    Progress("(b) bandwidth: " + std::to_string(o.big_mib) + " MiB, pinned vs pageable vs atolld");
    Bandwidth(o, cu, &report);
  }
  if (Wants(o.scenarios, "rate")) {
    Progress("(c) request rate: testing.cuda.noop");
    Rate(o, cu, &report);
  }
  report.Print(stdout);
  std::fflush(stdout);
  if (!o.json_path.empty()) {
    nlohmann::json config = {{"iterations", o.iterations},
                             {"warmup", o.warmup},
                             {"rounds", o.rounds},
                             {"big_mib", o.big_mib},
                             {"big_iterations", o.big_iterations},
                             {"duration_s", o.duration_s},
                             {"window", o.window},
                             {"threads", o.threads},
                             {"scenarios", o.scenarios},
                             {"gpu", cu.name()},
                             {"daemon_cuda_config", o.daemon_config},
                             {"quick", o.quick}};
    nlohmann::json doc = report.ToJson(machine, date, o.git, config);
    if (!WriteJson(o.json_path, doc, "atoll_cuda_bench")) return 1;
  }
  return 0;
}

}  // namespace
}  // namespace atl::bench

int main(int argc, char** argv) {
  try {
    return atl::bench::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "atoll_cuda_bench: %s\n", e.what());
    return 1;
  }
}
