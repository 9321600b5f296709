// The Coral shim's behaviour that needs no daemon: shared memory from every allocator, request and
// response printing, Coral's errno conventions, and how a submit without a daemon fails.
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <list>
#include <map>
#include <memory_resource>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "inaccel/coral"
#include "inaccel/coral.h"

namespace {

// Whether `address` lies in a MAP_SHARED mapping ("rw-s" in /proc/self/maps): memory the daemon
// can map too, as opposed to the heap.
bool IsSharedMapping(const void* address) {
  const auto at = reinterpret_cast<std::uintptr_t>(address);
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::uintptr_t start = 0, end = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%zx-%zx %4s", &start, &end, perms) != 3) continue;
    if (start <= at && at < end) return perms[3] == 's';
  }
  return false;
}

std::string Hex(const void* address) {
  char text[32];
  std::snprintf(text, sizeof(text), "0x%llX",
                static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(address)));
  return text;
}

std::string Print(inaccel_request request) {
  int n = inaccel_request_snprint(nullptr, 0, request);
  EXPECT_GE(n, 0);
  std::string text(static_cast<std::size_t>(n) + 1, '\0');
  EXPECT_EQ(inaccel_request_snprint(&text[0], text.size(), request), n);
  text.resize(static_cast<std::size_t>(n));
  return text;
}

std::string Print(inaccel_response response) {
  int n = inaccel_response_snprint(nullptr, 0, response);
  EXPECT_GE(n, 0);
  std::string text(static_cast<std::size_t>(n) + 1, '\0');
  EXPECT_EQ(inaccel_response_snprint(&text[0], text.size(), response), n);
  text.resize(static_cast<std::size_t>(n));
  return text;
}

// ATOLL_SOCKET names a socket that does not exist (its folder does not either) while one test
// runs. The path is the same for the whole process, in case the library reads the variable once.
class NoDaemon {
 public:
  NoDaemon() { setenv("ATOLL_SOCKET", socket().c_str(), 1); }
  ~NoDaemon() { unsetenv("ATOLL_SOCKET"); }

  static const std::string& socket() {
    static const std::string path =
        "/tmp/coral_compile_test_absent_" + std::to_string(getpid()) + "/atolld.sock";
    return path;
  }
};

// Fills every page of [p, p + size) with a pattern that differs from page to page.
void FillPages(unsigned char* p, std::size_t size) {
  for (std::size_t page = 0; page < size; page += 4096) {
    const std::size_t n = size - page < 4096 ? size - page : 4096;
    std::memset(p + page, static_cast<int>((page / 4096) % 251 + 1), n);
  }
}

// Whether [p, p + size) still holds FillPages' pattern; the first differing offset otherwise.
std::size_t FirstMismatch(const unsigned char* p, std::size_t size) {
  unsigned char expected[4096];
  for (std::size_t page = 0; page < size; page += 4096) {
    const std::size_t n = size - page < 4096 ? size - page : 4096;
    std::memset(expected, static_cast<int>((page / 4096) % 251 + 1), n);
    if (std::memcmp(p + page, expected, n) != 0) return page;
  }
  return size;
}

bool AllZero(const unsigned char* p, std::size_t size) {
  static const unsigned char kZeros[4096] = {};
  for (std::size_t at = 0; at < size; at += 4096) {
    if (std::memcmp(p + at, kZeros, size - at < 4096 ? size - at : 4096) != 0) return false;
  }
  return true;
}

TEST(CoralShm, AllocReturnsZeroedSharedMemory) {
  const std::size_t size = std::size_t{256} << 20;
  auto* p = static_cast<unsigned char*>(inaccel_alloc(size));
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(IsSharedMapping(p));
  EXPECT_TRUE(IsSharedMapping(p + size - 1));
  EXPECT_TRUE(AllZero(p, size));
  FillPages(p, size);
  EXPECT_EQ(FirstMismatch(p, size), size);
  inaccel_free(p);
}

TEST(CoralShm, ReallocKeepsContentsAndZeroFillsWhatItAdds) {
  const std::size_t size = std::size_t{1} << 20;
  auto* p = static_cast<unsigned char*>(inaccel_alloc(size + 100));
  ASSERT_NE(p, nullptr);
  FillPages(p, size + 100);
  const std::size_t grown = std::size_t{64} << 20;
  auto* q = static_cast<unsigned char*>(inaccel_realloc(p, grown));
  ASSERT_NE(q, nullptr);
  EXPECT_TRUE(IsSharedMapping(q + grown - 1));
  EXPECT_EQ(FirstMismatch(q, size + 100), size + 100);
  EXPECT_TRUE(AllZero(q + size + 100, grown - size - 100));
  // Shrinking keeps the head; growing again shows zeros, not what the tail held before.
  FillPages(q, grown);
  q = static_cast<unsigned char*>(inaccel_realloc(q, 100));
  ASSERT_NE(q, nullptr);
  q = static_cast<unsigned char*>(inaccel_realloc(q, grown));
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(FirstMismatch(q, 100), std::size_t{100});
  EXPECT_TRUE(AllZero(q + 100, grown - 100));
  EXPECT_EQ(inaccel_realloc(q, 0), nullptr);  // frees, as Coral's does
}

TEST(CoralShm, ReallocOfNullAllocates) {
  void* p = inaccel_realloc(nullptr, 4096);
  ASSERT_NE(p, nullptr);
  EXPECT_TRUE(IsSharedMapping(p));
  inaccel::free(p);
  p = inaccel::alloc(10);
  ASSERT_NE(p, nullptr);
  p = inaccel::realloc(p, 20000);
  ASSERT_NE(p, nullptr);
  inaccel::free(p);
}

TEST(CoralAllocator, VectorLivesInSharedMemory) {
  const std::size_t count = std::size_t{8} << 20;  // 64 MiB of doubles
  inaccel::vector<double> v(count);
  EXPECT_TRUE(IsSharedMapping(v.data()));
  EXPECT_TRUE(IsSharedMapping(v.data() + count - 1));
  for (std::size_t i = 0; i < count; ++i) v[i] = static_cast<double>(i) * 0.5;
  for (std::size_t i = 0; i < count; ++i) ASSERT_EQ(v[i], static_cast<double>(i) * 0.5) << i;

  inaccel::vector<int> grown;
  for (int i = 0; i < 1000000; ++i) grown.push_back(i);
  EXPECT_TRUE(IsSharedMapping(grown.data()));
  for (int i = 0; i < 1000000; ++i) ASSERT_EQ(grown[i], i);
}

TEST(CoralAllocator, RebindsForNodeContainersAndComparesEqual) {
  std::list<int, inaccel::allocator<int>> list;
  for (int i = 0; i < 100; ++i) list.push_back(i);
  EXPECT_TRUE(IsSharedMapping(&list.back()));
  std::map<int, int, std::less<int>, inaccel::allocator<std::pair<const int, int>>> map;
  map[1] = 2;
  EXPECT_TRUE(IsSharedMapping(&map.at(1)));

  inaccel::allocator<int> a;
  inaccel::allocator<double> b;
  EXPECT_TRUE(a == b);
  EXPECT_FALSE(a != b);
  std::allocator<int>& base = a;  // derives from std::allocator, as Coral's does
  (void)base;
}

TEST(CoralPmr, ResourceIsOneSharedMemoryResource) {
  std::pmr::memory_resource* resource = inaccel::pmr::resource();
  ASSERT_NE(resource, nullptr);
  EXPECT_EQ(resource, inaccel::pmr::resource());
  inaccel::pmr::memory_resource other;
  EXPECT_TRUE(resource->is_equal(other));
  EXPECT_FALSE(resource->is_equal(*std::pmr::new_delete_resource()));

  const std::size_t count = std::size_t{8} << 20;  // 64 MiB of uint64_t
  std::pmr::vector<std::uint64_t> v(count, resource);
  EXPECT_TRUE(IsSharedMapping(v.data()));
  EXPECT_TRUE(IsSharedMapping(v.data() + count - 1));
  for (std::size_t i = 0; i < count; ++i) v[i] = i * 2654435761u;
  for (std::size_t i = 0; i < count; ++i) ASSERT_EQ(v[i], i * 2654435761u) << i;

  void* aligned = resource->allocate(100, 4096);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(aligned) % 4096, 0u);
  resource->deallocate(aligned, 100, 4096);
}

TEST(CoralPmr, PoolOverResourceHandsOutSharedMemory) {
  std::pmr::monotonic_buffer_resource pool(1 << 20, inaccel::pmr::resource());
  std::pmr::vector<float> a(1000, &pool), b(1000, &pool);
  EXPECT_TRUE(IsSharedMapping(a.data()));
  EXPECT_TRUE(IsSharedMapping(b.data()));
  inaccel::request request("vector.addition");
  // Ranges inside one pool block are still inside one shared-memory block.
  EXPECT_NO_THROW(request.arg_array(a.data(), a.data() + a.size()).arg(b));
}

TEST(CoralRequestPrint, MatchesCoralYaml) {
  auto* a = static_cast<float*>(inaccel_alloc(4096));
  ASSERT_NE(a, nullptr);
  int size = 1024;
  inaccel_request request = inaccel_request_create("vector.addition");
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(Print(request), "---\nvector.addition: []");

  ASSERT_EQ(inaccel_request_arg_array(request, 4096, a, 0), 0);
  ASSERT_EQ(inaccel_request_arg_array(request, 2048, a + 512, 1), 0);
  ASSERT_EQ(inaccel_request_arg_scalar(request, sizeof(size), &size, 3), 0);
  const std::string expected = "---\nvector.addition:\n- array:\n    address: " + Hex(a) +
                               "\n    size: 4096\n- array:\n    address: " + Hex(a + 512) +
                               "\n    size: 2048\n- {}\n- scalar:\n    bytes: 0x00040000";
  EXPECT_EQ(Print(request), expected);

  // snprintf semantics: the full length, and a NUL-terminated prefix that fits.
  char small[10];
  EXPECT_EQ(inaccel_request_snprint(small, sizeof(small), request),
            static_cast<int>(expected.size()));
  EXPECT_STREQ(small, expected.substr(0, 9).c_str());

  std::FILE* file = std::tmpfile();
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(inaccel_request_fprint(file, request), static_cast<int>(expected.size()));
  std::rewind(file);
  std::string written(expected.size() + 1, '\0');
  written.resize(std::fread(&written[0], 1, written.size(), file));
  std::fclose(file);
  EXPECT_EQ(written, expected);

  inaccel_request_release(request);
  inaccel_free(a);
}

TEST(CoralRequestPrint, StreamShowsTheSameTextAndTheCounter) {
  inaccel::vector<float> a(16);
  int size = 16;
  inaccel::request request("vector.addition");
  // An explicit index leaves Coral's counter alone: a goes to 0, not after 3.
  request.arg(size, 3).arg(a);
  std::ostringstream out;
  out << request;
  EXPECT_EQ(out.str(), "---\nvector.addition:\n- array:\n    address: " + Hex(a.data()) +
                           "\n    size: 64\n- {}\n- {}\n- scalar:\n    bytes: 0x10000000");
}

TEST(CoralRequestPrint, ValuesLargerThanAScalarPrintEveryByte) {
  std::vector<unsigned char> host(5000, 0x5A);
  inaccel::request request("com.example.bytes");
  request.arg(host);
  std::ostringstream out;
  out << request;
  std::string hex;
  for (int i = 0; i < 5000; ++i) hex += "5A";
  EXPECT_EQ(out.str(), "---\ncom.example.bytes:\n- scalar:\n    bytes: 0x" + hex);
}

TEST(CoralResponsePrint, ReadsOkBeforeSubmission) {
  inaccel_response response = inaccel_response_create();
  ASSERT_NE(response, nullptr);
  EXPECT_EQ(Print(response), "Ok");
  inaccel_response_release(response);
}

TEST(CoralErrors, ArrayOutsideInaccelMemoryFailsLikeCoral) {
  float host[16] = {};
  inaccel_request request = inaccel_request_create("vector.addition");
  ASSERT_NE(request, nullptr);
  errno = 0;
  EXPECT_EQ(inaccel_request_arg_array(request, sizeof(host), host, 0), -1);
  EXPECT_EQ(errno, EADDRNOTAVAIL);

  // A range that runs past the end of its block is outside inaccel memory too.
  auto* block = static_cast<unsigned char*>(inaccel_alloc(4096));
  ASSERT_NE(block, nullptr);
  errno = 0;
  EXPECT_EQ(inaccel_request_arg_array(request, 1 << 20, block, 0), -1);
  EXPECT_EQ(errno, EADDRNOTAVAIL);
  inaccel_free(block);
  inaccel_request_release(request);

  inaccel::request cpp("vector.addition");
  try {
    cpp.arg_array(host, host + 16);
    FAIL() << "arg_array accepted heap memory";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), std::strerror(EADDRNOTAVAIL));
  }
  std::pmr::vector<float> heap(16, std::pmr::new_delete_resource());
  EXPECT_THROW(cpp.arg(heap), std::runtime_error);
  // By value, host memory is fine.
  std::vector<float> by_value(16, 1.0f);
  EXPECT_NO_THROW(cpp.arg(by_value).arg(1.5f));
}

TEST(CoralErrors, InvalidCallsSetEinval) {
  errno = 0;
  EXPECT_EQ(inaccel_request_create(nullptr), nullptr);
  EXPECT_EQ(errno, EINVAL);

  inaccel_request request = inaccel_request_create("vector.addition");
  ASSERT_NE(request, nullptr);
  auto* a = static_cast<float*>(inaccel_alloc(64));
  int value = 1;
  errno = 0;
  EXPECT_EQ(inaccel_request_arg_array(request, 0, a, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(inaccel_request_arg_scalar(request, 0, &value, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(inaccel_request_arg_scalar(nullptr, sizeof(value), &value, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(inaccel_request_arg_array(nullptr, 64, a, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(inaccel_request_arg_scalar(request, sizeof(value), &value, 0xFFFFFFFFu), -1);
  EXPECT_EQ(errno, EINVAL);

  inaccel_response response = inaccel_response_create();
  ASSERT_NE(response, nullptr);
  errno = 0;
  EXPECT_EQ(inaccel_response_wait(response), -1);  // never submitted
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(inaccel_response_wait_for(response, 1, 0), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(inaccel_submit(nullptr, response), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(inaccel_submit(request, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(inaccel_request_snprint(nullptr, 0, nullptr), -1);
  EXPECT_EQ(errno, EINVAL);

  inaccel_request_release(nullptr);
  inaccel_response_release(nullptr);
  inaccel_response_release(response);
  inaccel_request_release(request);
  inaccel_free(a);
}

TEST(CoralErrors, MovedRequestKeepsItsArguments) {
  inaccel::vector<float> a(8);
  inaccel::request first("vector.addition");
  first.arg(a);
  inaccel::request second(std::move(first));
  second.arg(8);
  std::ostringstream out;
  out << second;
  EXPECT_EQ(out.str(), "---\nvector.addition:\n- array:\n    address: " + Hex(a.data()) +
                           "\n    size: 32\n- scalar:\n    bytes: 0x08000000");
  EXPECT_THROW(first.arg(1), std::runtime_error);  // NOLINT(bugprone-use-after-move)
}

TEST(CoralSubmit, WithoutDaemonTheResponseSaysUnavailable) {
  NoDaemon no_daemon;
  auto* a = static_cast<float*>(inaccel_alloc(64));
  int size = 16;
  inaccel_request request = inaccel_request_create("vector.addition");
  ASSERT_NE(request, nullptr);
  ASSERT_EQ(inaccel_request_arg_array(request, 64, a, 0), 0);
  ASSERT_EQ(inaccel_request_arg_array(request, 64, a, 1), 0);
  ASSERT_EQ(inaccel_request_arg_array(request, 64, a, 2), 0);
  ASSERT_EQ(inaccel_request_arg_scalar(request, sizeof(size), &size, 3), 0);

  inaccel_response response = inaccel_response_create();
  ASSERT_NE(response, nullptr);
  // As with Coral's asynchronous call, the failure arrives through the response.
  ASSERT_EQ(inaccel_submit(request, response), 0);
  EXPECT_EQ(inaccel_response_wait(response), ATOLL_UNAVAILABLE);
  EXPECT_EQ(inaccel_response_wait_for(response, 0, 0), ATOLL_UNAVAILABLE);
  const std::string text = Print(response);
  EXPECT_EQ(text.rfind("Unavailable: ", 0), 0u) << text;
  EXPECT_NE(text.find(no_daemon.socket()), std::string::npos) << text;

  errno = 0;
  EXPECT_EQ(inaccel_submit(request, response), -1);  // a response serves one submission
  EXPECT_EQ(errno, EINVAL);

  inaccel_response_release(response);
  inaccel_request_release(request);
  inaccel_free(a);
}

TEST(CoralSubmit, WithoutDaemonGetThrowsInaccelException) {
  NoDaemon no_daemon;
  int size = 16;
  inaccel::vector<float> a(size), b(size), c(size);
  inaccel::request vadd("vector.addition");
  vadd.arg(a).arg(b).arg(c).arg(size);
  std::future<void> response = inaccel::submit(vadd);
  // Coral's futures are deferred: wait_for does not block, get() does the waiting.
  EXPECT_EQ(response.wait_for(std::chrono::seconds(0)), std::future_status::deferred);
  try {
    response.get();
    FAIL() << "submit succeeded without a daemon";
  } catch (const inaccel::exception& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("Unavailable: ", 0), 0u) << what;
    EXPECT_NE(what.find(no_daemon.socket()), std::string::npos) << what;
  }
}

TEST(CoralSubmit, UnwaitedFutureReleasesItsResponse) {
  NoDaemon no_daemon;
  inaccel::request request("vector.addition");
  request.arg(1);
  // Destroying the future without get() must not leak; the sanitizer builds check it.
  { std::future<void> dropped = inaccel::submit(request); }
  SUCCEED();
}

}  // namespace
