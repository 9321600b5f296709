// The cuda backend's logic that needs no GPU: configuration, launch geometry, the device memory
// pool, the pinned-memory registry, binary formats and build options.
#include <cstdint>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "atoll/status.h"
#include "binary.h"
#include "block_pool.h"
#include "config.h"
#include "geometry.h"
#include "host_registry.h"

namespace atl::cuda {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// ---- Configuration ------------------------------------------------------------------------------

TEST(CudaConfig, DefaultsWhenEmpty) {
  Config config;
  ASSERT_EQ(ParseConfig("{}", &config), "");
  EXPECT_FALSE(config.devices.has_value());
  EXPECT_EQ(config.streams, 4u);
  EXPECT_EQ(config.EffectiveCompletionThreads(), 4u);
  EXPECT_FALSE(config.pool_bytes.has_value());
  EXPECT_FALSE(config.pinned_bytes.has_value());
  EXPECT_EQ(config.zero_copy_bytes, 0u);
  EXPECT_EQ(config.single_pass_zero_copy_bytes, 16384u);
  EXPECT_EQ(config.kernel_timeout_ms, 0u);
  EXPECT_EQ(config.driver_library, "libcuda.so.1");
  EXPECT_EQ(config.nvml_library, "libnvidia-ml.so.1");
  EXPECT_EQ(config.jit_cache_dir, "");
  EXPECT_TRUE(config.own_context);
}

TEST(CudaConfig, ReadsEveryField) {
  Config config;
  ASSERT_EQ(ParseConfig(R"({"devices": [1, 0], "streams": 16, "completion_threads": 2,
                           "spin_us": 0, "pool_bytes": "8GiB", "pinned_bytes": 1048576,
                           "zero_copy_bytes": "32KiB", "kernel_timeout_ms": 5000,
                           "single_pass_zero_copy_bytes": 0,
                           "jit_cache_dir": "/tmp/jit", "driver_library": "/x/libcuda.so.1",
                           "context": "primary",
                           "nvml_library": ""})",
                        &config),
            "");
  ASSERT_TRUE(config.devices.has_value());
  EXPECT_THAT(*config.devices, ElementsAre(1u, 0u));
  EXPECT_EQ(config.streams, 16u);
  EXPECT_EQ(config.EffectiveCompletionThreads(), 2u);
  EXPECT_EQ(config.spin_us, 0u);
  EXPECT_EQ(config.pool_bytes, uint64_t{8} << 30);
  EXPECT_EQ(config.pinned_bytes, kMiB);
  EXPECT_EQ(config.zero_copy_bytes, 32768u);
  EXPECT_EQ(config.single_pass_zero_copy_bytes, 0u);
  EXPECT_EQ(config.kernel_timeout_ms, 5000u);
  EXPECT_EQ(config.jit_cache_dir, "/tmp/jit");
  EXPECT_EQ(config.driver_library, "/x/libcuda.so.1");
  EXPECT_EQ(config.nvml_library, "");
  EXPECT_FALSE(config.own_context);
}

TEST(CudaConfig, CompletionThreadsNeverExceedStreams) {
  Config config;
  ASSERT_EQ(ParseConfig(R"({"streams": 2, "completion_threads": 8})", &config), "");
  EXPECT_EQ(config.EffectiveCompletionThreads(), 2u);
  ASSERT_EQ(ParseConfig(R"({"streams": 1})", &config), "");
  EXPECT_EQ(config.EffectiveCompletionThreads(), 1u);
}

TEST(CudaConfig, RefusesBadFieldsNamingThem) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"streams": 0})", "\"streams\""},
      {R"({"streams": 257})", "\"streams\""},
      {R"({"streams": "4"})", "\"streams\""},
      {R"({"streams": -1})", "\"streams\""},
      {R"({"devices": 0})", "\"devices\""},
      {R"({"devices": [-1]})", "\"devices[]\""},
      {R"({"devices": [0, 0]})", "lists device 0 twice"},
      {R"({"pool_bytes": 0})", "\"pool_bytes\""},
      {R"({"pool_bytes": "lots"})", "\"pool_bytes\""},
      {R"({"pool_bytes": "8 parsecs"})", "unknown unit"},
      {R"({"pinned_bytes": -5})", "\"pinned_bytes\""},
      {R"({"kernel_timeout_ms": 1.5})", "\"kernel_timeout_ms\""},
      {R"({"driver_library": ""})", "\"driver_library\""},
      {R"({"context": "shared"})", "\"context\""},
      {R"({"stream": 4})", "unknown field \"stream\""},
      {R"([1])", "JSON object"},
      {R"({"streams": )", "not valid JSON"},
  };
  for (const auto& [text, named] : cases) {
    SCOPED_TRACE(text);
    Config config;
    EXPECT_THAT(ParseConfig(text, &config), HasSubstr(named));
  }
}

TEST(CudaConfig, ParsesSizesWithUnits) {
  const std::pair<const char*, uint64_t> cases[] = {
      {"0", 0},
      {"512", 512},
      {"64KiB", 64 << 10},
      {"1K", 1024},
      {"512MiB", 512 * kMiB},
      {"8GiB", uint64_t{8} << 30},
      {" 2 GB ", uint64_t{2} << 30},
      {"1TiB", uint64_t{1} << 40},
  };
  for (const auto& [text, expected] : cases) {
    SCOPED_TRACE(text);
    uint64_t bytes = 1;
    EXPECT_EQ(ParseBytes(text, &bytes), "");
    EXPECT_EQ(bytes, expected);
  }
  uint64_t bytes = 0;
  EXPECT_THAT(ParseBytes("", &bytes), HasSubstr("not a size"));
  EXPECT_THAT(ParseBytes("GiB", &bytes), HasSubstr("not a size"));
  EXPECT_THAT(ParseBytes("99999999999999999999", &bytes), HasSubstr("too large"));
  EXPECT_THAT(ParseBytes("17179869184GiB", &bytes), HasSubstr("too large"));
}

// ---- Geometry -----------------------------------------------------------------------------------

atoll_backend_geometry_v1 Geometry(uint32_t dims, std::vector<uint64_t> global,
                                   std::vector<uint32_t> local = {}) {
  atoll_backend_geometry_v1 g{};
  g.dims = dims;
  for (size_t d = 0; d < global.size(); ++d) g.global[d] = global[d];
  for (size_t d = 0; d < local.size(); ++d) g.local[d] = local[d];
  return g;
}

LaunchShape Shape(const atoll_backend_geometry_v1& g, uint32_t kernel_max = 1024) {
  LaunchShape shape;
  EXPECT_EQ(ComputeLaunchShape(g, DeviceLimits{}, kernel_max, &shape), "");
  return shape;
}

TEST(CudaGeometry, NoDimensionsIsOneThread) {
  LaunchShape s = Shape(Geometry(0, {}));
  EXPECT_THAT(s.grid, ElementsAre(1u, 1u, 1u));
  EXPECT_THAT(s.block, ElementsAre(1u, 1u, 1u));
  EXPECT_FALSE(s.empty);
}

TEST(CudaGeometry, OneThreadPerElementInBlocksOf256) {
  LaunchShape s = Shape(Geometry(1, {1024}));
  EXPECT_THAT(s.block, ElementsAre(256u, 1u, 1u));
  EXPECT_THAT(s.grid, ElementsAre(4u, 1u, 1u));
  s = Shape(Geometry(1, {1025}));
  EXPECT_THAT(s.grid, ElementsAre(5u, 1u, 1u));
  // Fewer elements than a block: one block of just those threads.
  s = Shape(Geometry(1, {7}));
  EXPECT_THAT(s.block, ElementsAre(7u, 1u, 1u));
  EXPECT_THAT(s.grid, ElementsAre(1u, 1u, 1u));
  s = Shape(Geometry(1, {uint64_t{64} << 20}));
  EXPECT_THAT(s.grid, ElementsAre(262144u, 1u, 1u));
}

TEST(CudaGeometry, DefaultBlockRespectsTheKernelsLimit) {
  LaunchShape s = Shape(Geometry(1, {10000}), 128);
  EXPECT_THAT(s.block, ElementsAre(128u, 1u, 1u));
  EXPECT_THAT(s.grid, ElementsAre(79u, 1u, 1u));
}

TEST(CudaGeometry, SpreadsTheDefaultBlockOverDimensions) {
  LaunchShape s = Shape(Geometry(2, {1920, 1080}));
  EXPECT_THAT(s.block, ElementsAre(256u, 1u, 1u));
  EXPECT_THAT(s.grid, ElementsAre(8u, 1080u, 1u));
  s = Shape(Geometry(2, {7, 1000}));
  EXPECT_THAT(s.block, ElementsAre(7u, 36u, 1u));
  EXPECT_THAT(s.grid, ElementsAre(1u, 28u, 1u));
  s = Shape(Geometry(3, {4, 4, 1000}));
  EXPECT_THAT(s.block, ElementsAre(4u, 4u, 16u));
  EXPECT_THAT(s.grid, ElementsAre(1u, 1u, 63u));
}

TEST(CudaGeometry, UsesTheManifestsLocalSize) {
  LaunchShape s = Shape(Geometry(2, {1000, 1000}, {16, 16}));
  EXPECT_THAT(s.block, ElementsAre(16u, 16u, 1u));
  EXPECT_THAT(s.grid, ElementsAre(63u, 63u, 1u));
  // A dimension left at 0 next to a given one counts as 1.
  s = Shape(Geometry(2, {1000, 3}, {128, 0}));
  EXPECT_THAT(s.block, ElementsAre(128u, 1u, 1u));
  EXPECT_THAT(s.grid, ElementsAre(8u, 3u, 1u));
}

TEST(CudaGeometry, ZeroWorkItemsRunNothing) {
  LaunchShape shape;
  EXPECT_EQ(ComputeLaunchShape(Geometry(1, {0}), DeviceLimits{}, 1024, &shape), "");
  EXPECT_TRUE(shape.empty);
  EXPECT_EQ(ComputeLaunchShape(Geometry(2, {5, 0}), DeviceLimits{}, 1024, &shape), "");
  EXPECT_TRUE(shape.empty);
}

TEST(CudaGeometry, RefusesWhatTheGpuCannotRun) {
  LaunchShape shape;
  EXPECT_THAT(ComputeLaunchShape(Geometry(4, {1, 1, 1}), DeviceLimits{}, 1024, &shape),
              HasSubstr("at most 3"));
  EXPECT_THAT(ComputeLaunchShape(Geometry(1, {100}, {2048}), DeviceLimits{}, 1024, &shape),
              HasSubstr("along x"));
  EXPECT_THAT(ComputeLaunchShape(Geometry(2, {100, 100}, {64, 64}), DeviceLimits{}, 1024, &shape),
              HasSubstr("4096 threads"));
  EXPECT_THAT(ComputeLaunchShape(Geometry(1, {1000}, {512}), DeviceLimits{}, 256, &shape),
              HasSubstr("at most 256"));
  EXPECT_THAT(
      ComputeLaunchShape(Geometry(2, {1, uint64_t{1} << 20}, {1, 1}), DeviceLimits{}, 1024, &shape),
      HasSubstr("along y"));
  EXPECT_THAT(ComputeLaunchShape(Geometry(1, {uint64_t{1} << 50}), DeviceLimits{}, 1024, &shape),
              HasSubstr("more than this GPU allows"));
}

// ---- Device memory pool -------------------------------------------------------------------------

// An allocator that hands out fake handles and can be told the "device" is full.
struct FakeDevice {
  uint64_t next = 0x1000;
  uint64_t capacity = UINT64_MAX;
  uint64_t allocated = 0;
  std::map<uint64_t, uint64_t> live;  // handle -> bytes
  int allocations = 0;
  int frees = 0;

  BlockPool::Allocate Allocator() {
    return [this](uint64_t bytes, uint64_t* handle, std::string* error) {
      if (allocated + bytes > capacity) {
        *error = "CUDA_ERROR_OUT_OF_MEMORY";
        return static_cast<int>(ATOLL_RESOURCE_EXHAUSTED);
      }
      *handle = next;
      next += bytes;
      live[*handle] = bytes;
      allocated += bytes;
      ++allocations;
      return static_cast<int>(ATOLL_OK);
    };
  }
  BlockPool::Free Freer() {
    return [this](uint64_t handle) {
      auto found = live.find(handle);
      ASSERT_NE(found, live.end()) << "freed a handle twice or never allocated";
      allocated -= found->second;
      live.erase(found);
      ++frees;
    };
  }
};

TEST(CudaBlockPool, SizeClasses) {
  EXPECT_EQ(BlockPool::SizeClass(1), 512u);
  EXPECT_EQ(BlockPool::SizeClass(512), 512u);
  EXPECT_EQ(BlockPool::SizeClass(513), 1024u);
  EXPECT_EQ(BlockPool::SizeClass(4096), 4096u);
  EXPECT_EQ(BlockPool::SizeClass(kMiB), kMiB);
  EXPECT_EQ(BlockPool::SizeClass(kMiB + 1), kMiB + kMiB / 8);
  EXPECT_EQ(BlockPool::SizeClass(256 * kMiB), 256 * kMiB);
  EXPECT_EQ(BlockPool::SizeClass(256 * kMiB + 1), 288 * kMiB);
  for (uint64_t bytes : {uint64_t{3}, uint64_t{5000}, 3 * kMiB + 17, uint64_t{1} << 40}) {
    uint64_t size = BlockPool::SizeClass(bytes);
    EXPECT_GE(size, bytes);
    if (bytes > kMiB) {
      EXPECT_LE(size - bytes, bytes / 8);
    }
  }
}

TEST(CudaBlockPool, ReusesReleasedBlocksOfTheSameClass) {
  FakeDevice device;
  BlockPool pool(64 * kMiB, device.Allocator(), device.Freer());
  BlockPool::Block a, b;
  std::string error;
  ASSERT_EQ(pool.Acquire(4000, &a, &error), ATOLL_OK) << error;
  EXPECT_EQ(a.bytes, 4096u);
  EXPECT_EQ(pool.in_use_bytes(), 4096u);
  pool.Release(a);
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  EXPECT_EQ(pool.cached_bytes(), 4096u);
  ASSERT_EQ(pool.Acquire(4096, &b, &error), ATOLL_OK) << error;
  EXPECT_EQ(b.handle, a.handle);
  EXPECT_EQ(device.allocations, 1);
  // Another class allocates.
  BlockPool::Block c;
  ASSERT_EQ(pool.Acquire(100, &c, &error), ATOLL_OK) << error;
  EXPECT_EQ(device.allocations, 2);
  pool.Release(b);
  pool.Release(c);
  pool.Trim();
  EXPECT_EQ(device.frees, 2);
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(CudaBlockPool, EvictsLeastRecentlyUsedToStayUnderTheCap) {
  FakeDevice device;
  BlockPool pool(4 * kMiB, device.Allocator(), device.Freer());
  std::string error;
  BlockPool::Block one, two, three;
  ASSERT_EQ(pool.Acquire(kMiB, &one, &error), ATOLL_OK);
  ASSERT_EQ(pool.Acquire(2 * kMiB, &two, &error), ATOLL_OK);
  pool.Release(one);  // older
  pool.Release(two);  // newer
  EXPECT_EQ(pool.cached_bytes(), 3 * kMiB);
  // 2 MiB more than fits beside 3 MiB cached: the oldest (one, 1 MiB) goes.
  ASSERT_EQ(pool.Acquire(static_cast<uint64_t>(1.5 * kMiB), &three, &error), ATOLL_OK) << error;
  EXPECT_EQ(device.live.count(one.handle), 0u);
  EXPECT_EQ(device.live.count(two.handle), 1u);
  EXPECT_LE(pool.in_use_bytes() + pool.cached_bytes(), 4 * kMiB);
  pool.Release(three);
}

TEST(CudaBlockPool, RefusesWhatCannotFitBesideBlocksInUse) {
  FakeDevice device;
  BlockPool pool(4 * kMiB, device.Allocator(), device.Freer());
  std::string error;
  BlockPool::Block held, more;
  ASSERT_EQ(pool.Acquire(3 * kMiB, &held, &error), ATOLL_OK);
  EXPECT_EQ(pool.Acquire(2 * kMiB, &more, &error), ATOLL_RESOURCE_EXHAUSTED);
  EXPECT_THAT(error, HasSubstr("pool_bytes"));
  EXPECT_THAT(error, HasSubstr("3 MiB"));
  error.clear();
  EXPECT_EQ(pool.Acquire(5 * kMiB, &more, &error), ATOLL_RESOURCE_EXHAUSTED);
  EXPECT_THAT(error, HasSubstr("capped at 4 MiB"));
  // Nothing changed for the block in use.
  EXPECT_EQ(pool.in_use_bytes(), 3 * kMiB);
  pool.Release(held);
  ASSERT_EQ(pool.Acquire(2 * kMiB, &more, &error), ATOLL_OK) << error;
  pool.Release(more);
}

TEST(CudaBlockPool, FreesCachedBlocksWhenTheDeviceIsFull) {
  FakeDevice device;
  device.capacity = 3 * kMiB;
  BlockPool pool(64 * kMiB, device.Allocator(), device.Freer());
  std::string error;
  BlockPool::Block a, b;
  ASSERT_EQ(pool.Acquire(2 * kMiB, &a, &error), ATOLL_OK);
  pool.Release(a);
  // The device has 1 MiB left; the cached 2 MiB block must go for a 3 MiB one.
  ASSERT_EQ(pool.Acquire(3 * kMiB, &b, &error), ATOLL_OK) << error;
  EXPECT_EQ(device.frees, 1);
  pool.Release(b);
  // Beyond the device: its own error, and the pool's accounting is unchanged.
  BlockPool::Block c;
  error.clear();
  device.capacity = kMiB;
  EXPECT_EQ(pool.Acquire(2 * kMiB, &c, &error), ATOLL_RESOURCE_EXHAUSTED);
  EXPECT_THAT(error, HasSubstr("CUDA_ERROR_OUT_OF_MEMORY"));
  EXPECT_EQ(pool.in_use_bytes(), 0u);
}

TEST(CudaBlockPool, ForgetDropsBlocksOfTheOldContext) {
  FakeDevice device;
  BlockPool pool(64 * kMiB, device.Allocator(), device.Freer());
  std::string error;
  BlockPool::Block in_flight, cached;
  ASSERT_EQ(pool.Acquire(kMiB, &in_flight, &error), ATOLL_OK);
  ASSERT_EQ(pool.Acquire(2 * kMiB, &cached, &error), ATOLL_OK);
  pool.Release(cached);
  pool.Forget();  // the context reset freed them all
  EXPECT_EQ(pool.in_use_bytes(), 0u);
  EXPECT_EQ(pool.cached_bytes(), 0u);
  pool.Release(in_flight);  // a launch of the old context ends: ignored
  EXPECT_EQ(pool.cached_bytes(), 0u);
  pool.Trim();
  EXPECT_EQ(device.frees, 0);  // nothing of the old context is freed twice
}

// ---- Pinned memory registry ---------------------------------------------------------------------

struct FakePinning {
  std::set<uintptr_t> pinned;
  int pins = 0;
  bool refuse = false;
  HostRegistry::Pin Pinner() {
    return [this](void* data, uint64_t, uint64_t* device_pointer, std::string* error) {
      if (refuse) {
        *error = "refused";
        return static_cast<int>(ATOLL_INVALID_ARGUMENT);
      }
      pinned.insert(reinterpret_cast<uintptr_t>(data));
      *device_pointer = reinterpret_cast<uintptr_t>(data);
      ++pins;
      return static_cast<int>(ATOLL_OK);
    };
  }
  HostRegistry::Unpin Unpinner() {
    return [this](void* data, uint32_t) { pinned.erase(reinterpret_cast<uintptr_t>(data)); };
  }
};

void* At(uintptr_t address) { return reinterpret_cast<void*>(address); }

TEST(CudaHostRegistry, PinsOnceAndFindsRangesInside) {
  FakePinning fake;
  std::string error;
  {
    HostRegistry registry(kMiB, fake.Unpinner());
    ASSERT_EQ(registry.Add(At(0x10000), 4096, 0, fake.Pinner(), &error), ATOLL_OK) << error;
    EXPECT_EQ(registry.pinned_bytes(), 4096u);
    HostRegistry::Lease lease = registry.Acquire(At(0x10100), 256, 0, fake.Pinner());
    EXPECT_EQ(lease.base, At(0x10000));
    EXPECT_TRUE(lease.pinned);
    registry.Release(lease.base);
    EXPECT_EQ(fake.pins, 1);
    // Past the end, or outside any buffer: not registered.
    EXPECT_EQ(registry.Acquire(At(0x10f00), 512, 0, fake.Pinner()).base, nullptr);
    EXPECT_EQ(registry.Acquire(At(0x20000), 4, 0, fake.Pinner()).base, nullptr);
    EXPECT_EQ(registry.Acquire(At(0x100), 4, 0, fake.Pinner()).base, nullptr);
    // Overlapping registrations are refused.
    EXPECT_EQ(registry.Add(At(0x10800), 4096, 0, fake.Pinner(), &error), ATOLL_ALREADY_EXISTS);
    EXPECT_EQ(registry.Add(At(0xf800), 4096, 0, fake.Pinner(), &error), ATOLL_ALREADY_EXISTS);
  }
  EXPECT_TRUE(fake.pinned.empty()) << "the destructor unpins everything";
}

TEST(CudaHostRegistry, EvictsLeastRecentlyUsedIdleBuffers) {
  FakePinning fake;
  std::string error;
  HostRegistry registry(3 * 4096, fake.Unpinner());
  ASSERT_EQ(registry.Add(At(0x10000), 4096, 0, fake.Pinner(), &error), ATOLL_OK);
  ASSERT_EQ(registry.Add(At(0x20000), 4096, 0, fake.Pinner(), &error), ATOLL_OK);
  ASSERT_EQ(registry.Add(At(0x30000), 4096, 0, fake.Pinner(), &error), ATOLL_OK);
  // Use the first, so the second is the least recently used.
  registry.Release(registry.Acquire(At(0x10000), 16, 0, fake.Pinner()).base);
  ASSERT_EQ(registry.Add(At(0x40000), 4096, 0, fake.Pinner(), &error), ATOLL_OK) << error;
  EXPECT_EQ(fake.pinned, (std::set<uintptr_t>{0x10000, 0x30000, 0x40000}));
  EXPECT_EQ(registry.pinned_bytes(), 3u * 4096);
  // The evicted buffer is still registered, and pinned again when next used (evicting another).
  HostRegistry::Lease lease = registry.Acquire(At(0x20000), 16, 0, fake.Pinner());
  EXPECT_EQ(lease.base, At(0x20000));
  EXPECT_TRUE(lease.pinned);
  EXPECT_EQ(fake.pinned.count(0x20000), 1u);
  EXPECT_EQ(registry.pinned_bytes(), 3u * 4096);
  registry.Release(lease.base);
}

TEST(CudaHostRegistry, NeverUnpinsBuffersInUse) {
  FakePinning fake;
  std::string error;
  HostRegistry registry(2 * 4096, fake.Unpinner());
  ASSERT_EQ(registry.Add(At(0x10000), 4096, 0, fake.Pinner(), &error), ATOLL_OK);
  ASSERT_EQ(registry.Add(At(0x20000), 4096, 0, fake.Pinner(), &error), ATOLL_OK);
  HostRegistry::Lease a = registry.Acquire(At(0x10000), 4096, 0, fake.Pinner());
  HostRegistry::Lease b = registry.Acquire(At(0x20000), 4096, 0, fake.Pinner());
  // Both in use: the third stays unpinned, yet registered and usable.
  EXPECT_EQ(registry.Add(At(0x30000), 4096, 0, fake.Pinner(), &error), ATOLL_RESOURCE_EXHAUSTED);
  EXPECT_THAT(error, HasSubstr("all in use"));
  HostRegistry::Lease c = registry.Acquire(At(0x30000), 4096, 0, fake.Pinner());
  EXPECT_EQ(c.base, At(0x30000));
  EXPECT_FALSE(c.pinned);
  registry.Release(c.base);
  // A buffer larger than the cap is never pinned.
  EXPECT_EQ(registry.Add(At(0x40000), 3 * 4096, 0, fake.Pinner(), &error),
            ATOLL_RESOURCE_EXHAUSTED);
  EXPECT_THAT(error, HasSubstr("pinned_bytes"));
  // Removing a buffer in use unpins it when the launch ends.
  registry.Remove(At(0x10000));
  EXPECT_EQ(fake.pinned.count(0x10000), 1u);
  EXPECT_EQ(registry.Acquire(At(0x10000), 4, 0, fake.Pinner()).base, nullptr);
  registry.Release(a.base);
  EXPECT_EQ(fake.pinned.count(0x10000), 0u);
  registry.Release(b.base);
  registry.Remove(At(0x20000));
  EXPECT_EQ(fake.pinned.count(0x20000), 0u);
  EXPECT_EQ(registry.pinned_bytes(), 0u);
}

TEST(CudaHostRegistry, ADriverRefusalLeavesTheBufferUnpinned) {
  FakePinning fake;
  fake.refuse = true;
  std::string error;
  HostRegistry registry(kMiB, fake.Unpinner());
  EXPECT_EQ(registry.Add(At(0x10000), 4096, 0, fake.Pinner(), &error), ATOLL_INVALID_ARGUMENT);
  HostRegistry::Lease lease = registry.Acquire(At(0x10000), 4096, 0, fake.Pinner());
  EXPECT_EQ(lease.base, At(0x10000));
  EXPECT_FALSE(lease.pinned);
  registry.Release(lease.base);
  EXPECT_EQ(registry.pinned_bytes(), 0u);
}

TEST(CudaHostRegistry, AResetOfTheOwnerDropsItsPinnings) {
  FakePinning fake;
  std::string error;
  HostRegistry registry(kMiB, fake.Unpinner());
  ASSERT_EQ(registry.Add(At(0x10000), 4096, 1, fake.Pinner(), &error), ATOLL_OK);
  ASSERT_EQ(registry.Add(At(0x20000), 4096, 0, fake.Pinner(), &error), ATOLL_OK);
  registry.DropOwner(1);
  EXPECT_EQ(registry.pinned_bytes(), 4096u);
  // Pinned again, in the context of the device that uses it.
  HostRegistry::Lease lease = registry.Acquire(At(0x10000), 8, 0, fake.Pinner());
  EXPECT_TRUE(lease.pinned);
  EXPECT_EQ(fake.pins, 3);
  registry.Release(lease.base);
}

// ---- Binaries -----------------------------------------------------------------------------------

TEST(CudaBinary, ClassifiesByContent) {
  EXPECT_EQ(ClassifyBinary(std::string("\x7f"
                                       "ELF\x02\x01\x01",
                                       7)),
            BinaryKind::kCubin);
  EXPECT_EQ(ClassifyBinary(std::string("\x50\xed\x55\xba\x01\x00\x10\x00", 8)),
            BinaryKind::kFatbin);
  EXPECT_EQ(ClassifyBinary("//\n.version 9.0\n.target sm_90\n.address_size 64\n"),
            BinaryKind::kPtx);
  EXPECT_EQ(ClassifyBinary(std::string(".version 9.0\n.target sm_90\n\0", 29)), BinaryKind::kPtx);
  EXPECT_EQ(ClassifyBinary(""), BinaryKind::kUnknown);
  EXPECT_EQ(ClassifyBinary("#!/bin/sh\necho hello\n"), BinaryKind::kUnknown);
  EXPECT_EQ(ClassifyBinary(std::string(".version\0.target", 16)), BinaryKind::kUnknown);
  EXPECT_EQ(ClassifyBinary("\x50\xed\x55"), BinaryKind::kUnknown);
  EXPECT_EQ(BinaryArchitectures(BinaryKind::kPtx, ".version 9.0\n.target sm_90a\n"),
            std::vector<std::string>{"compute_90a"});
}

std::string ReadTestFile(const std::string& name) {
#ifdef ATOLL_TEST_CUDA_TESTDATA
  std::ifstream file(std::string(ATOLL_TEST_CUDA_TESTDATA) + "/" + name, std::ios::binary);
  std::ostringstream content;
  content << file.rdbuf();
  return content.str();
#else
  (void)name;
  return "";
#endif
}

TEST(CudaBinary, ReadsTheArchitecturesNvccWrote) {
  std::string multi = ReadTestFile("vector_multi.fatbin");
  if (multi.empty()) GTEST_SKIP() << "nvcc was not found at build time: no test binaries";
  EXPECT_EQ(ClassifyBinary(multi), BinaryKind::kFatbin);
  EXPECT_THAT(BinaryArchitectures(BinaryKind::kFatbin, multi),
              ElementsAre("sm_80", "sm_90", "compute_90"));
  std::string sm80 = ReadTestFile("vector_sm80.fatbin");
  EXPECT_THAT(BinaryArchitectures(ClassifyBinary(sm80), sm80), ElementsAre("sm_80"));
  std::string cubin = ReadTestFile("vector.cubin");
  EXPECT_EQ(ClassifyBinary(cubin), BinaryKind::kCubin);
  EXPECT_THAT(BinaryArchitectures(BinaryKind::kCubin, cubin), ElementsAre("sm_90"));
  std::string ptx = ReadTestFile("vector.ptx");
  EXPECT_EQ(ClassifyBinary(ptx), BinaryKind::kPtx);
  EXPECT_THAT(BinaryArchitectures(BinaryKind::kPtx, ptx), ElementsAre("compute_90"));
  // A truncated fatbin yields what it can, without reading past its end.
  std::string truncated = multi.substr(0, 40);
  EXPECT_LE(BinaryArchitectures(BinaryKind::kFatbin, truncated).size(), 1u);
}

TEST(CudaBinary, ParsesBuildOptions) {
  JitOptions options;
  EXPECT_EQ(ParseBuildOptions("", &options), "");
  EXPECT_EQ(options.Canonical(), "");
  EXPECT_EQ(ParseBuildOptions("  -O2 -lineinfo   --maxrregcount=64 ", &options), "");
  EXPECT_EQ(options.optimization_level, 2);
  EXPECT_TRUE(options.line_info);
  EXPECT_EQ(options.max_registers, 64u);
  EXPECT_EQ(options.Canonical(), "-O2 -lineinfo -maxrregcount=64");
  JitOptions other;
  EXPECT_THAT(ParseBuildOptions("-cl-fast-relaxed-math", &other),
              HasSubstr("unknown build option"));
  EXPECT_THAT(ParseBuildOptions("-maxrregcount=8", &other), HasSubstr("16 to 255"));
  EXPECT_THAT(ParseBuildOptions("-maxrregcount=", &other), HasSubstr("16 to 255"));
  EXPECT_THAT(ParseBuildOptions("-O7", &other), HasSubstr("unknown build option '-O7'"));
}

TEST(CudaBinary, KnowsTheManifestsTypeSizes) {
  EXPECT_EQ(ArgumentTypeSize("float*"), 8u);
  EXPECT_EQ(ArgumentTypeSize("const unsigned char *"), 8u);
  EXPECT_EQ(ArgumentTypeSize("float4*"), 8u);
  EXPECT_EQ(ArgumentTypeSize("int"), 4u);
  EXPECT_EQ(ArgumentTypeSize("unsigned   int"), 4u);
  EXPECT_EQ(ArgumentTypeSize("short"), 2u);
  EXPECT_EQ(ArgumentTypeSize("const short"), 2u);
  EXPECT_EQ(ArgumentTypeSize("uchar"), 1u);
  EXPECT_EQ(ArgumentTypeSize("unsigned long long int"), 8u);
  EXPECT_EQ(ArgumentTypeSize("double"), 8u);
  EXPECT_EQ(ArgumentTypeSize("float4"), 0u);
}

TEST(CudaBinary, HashIsStable) {
  EXPECT_EQ(Fnv1a64(""), 14695981039346656037ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_NE(Fnv1a64("ptx one"), Fnv1a64("ptx two"));
}

}  // namespace
}  // namespace atl::cuda
