// End-to-end tests: a real atolld with the cpu backend, driven through libatoll.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>
#include "atoll.pb.h"
#include "atoll/atoll.h"
#include "atoll/atoll.hpp"
#include "client/connection.h"
#include "ipc/socket.h"
#include "test_daemon.h"

namespace atl::testing {
namespace {

using ::testing::HasSubstr;

class EndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { daemon_ = new TestDaemon(); }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override { ::setenv("ATOLL_SOCKET", daemon_->socket().c_str(), 1); }

  // Runs `r` (with atoll::call when `call`, else submit and get) and returns its error, or OK.
  static std::pair<atoll_status_code, std::string> Outcome(const atoll::request& r,
                                                           bool call = false) {
    try {
      if (call) {
        atoll::call(r);
      } else {
        atoll::submit(r).get();
      }
      return {ATOLL_OK, ""};
    } catch (const atoll::error& e) {
      return {e.code(), e.what()};
    }
  }

  static TestDaemon* daemon_;
};
TestDaemon* EndToEnd::daemon_ = nullptr;

TEST_F(EndToEnd, VectorAdditionAndSubtractionComputeTheRightValues) {
  for (int size : {1, 7, 1024, 100000}) {
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
}

TEST_F(EndToEnd, IntegerVariantsWrapLikeUnsignedArithmetic) {
  const int n = 5000;
  atoll::vector<int> a(n), b(n), c(n);
  for (int i = 0; i < n; ++i) {
    a[i] = i * 7919 - 2000000000;
    b[i] = 2000000000 - i;
  }
  atoll::request r("vector.int.addition");
  r.arg(a).arg(b).arg(c).arg(n);
  atoll::submit(r).get();
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(c[i], static_cast<int>(static_cast<unsigned>(a[i]) + static_cast<unsigned>(b[i])));
  }
}

TEST_F(EndToEnd, Filter2dMatchesReference) {
  const int w = 67, h = 45;
  atoll::vector<short> coef = {1, 2, 1, 2, 4, 2, 1, 2, 1};
  atoll::vector<unsigned char> src(w * h), dst(w * h);
  for (int i = 0; i < w * h; ++i) src[i] = static_cast<unsigned char>((i * 37) % 251);
  float factor = 1.0f / 16;
  short bias = 3;
  int size = 3;
  atoll::request r("vision.filter2d");
  r.arg(coef).arg(size).arg(factor).arg(bias).arg(w).arg(h).arg(src).arg(dst);
  atoll::submit(r).get();
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      int sum = 0;
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          int yy = y + dy, xx = x + dx;
          int v = (yy < 0 || yy >= h || xx < 0 || xx >= w) ? 0 : src[yy * w + xx];
          sum += coef[(dy + 1) * 3 + (dx + 1)] * v;
        }
      }
      double value = std::round(sum * static_cast<double>(factor) + bias);
      int expected = static_cast<int>(std::clamp(value, 0.0, 255.0));
      ASSERT_NEAR(dst[y * w + x], expected, 1) << x << "," << y;
    }
  }
}

TEST_F(EndToEnd, ManyThreadsSubmitAtOnce) {
  constexpr int kThreads = 8, kPerThread = 200, kSize = 256;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      atoll::vector<float> a(kSize, float(t)), b(kSize, 1.0f), c(kSize);
      for (int i = 0; i < kPerThread; ++i) {
        atoll::request r("vector.addition");
        r.arg(a).arg(b).arg(c).arg(kSize);
        atoll::submit(r).get();
        if (c[kSize - 1] != float(t) + 1.0f) failures++;
        a[0] = float(i);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(EndToEnd, PipelinedRequestsAllComplete) {
  constexpr int kInFlight = 2000;
  std::vector<std::future<void>> futures;
  atoll::request r("testing.noop");
  for (int i = 0; i < kInFlight; ++i) futures.push_back(atoll::submit(r));
  for (auto& f : futures) f.get();
}

// Each request brings a buffer the connection has not carried yet, so every one is a BufferAdd on
// the socket followed by its request in the shared ring: the daemon must keep them in order however
// far its socket reads run ahead of its ring reads.
TEST_F(EndToEnd, PipelinedRequestsWithNewBuffersAllComplete) {
  constexpr int kRequests = 600;
  constexpr int kSize = 256;
  atoll::vector<float> a(kSize, 1.0f), b(kSize, 2.0f);
  std::vector<std::unique_ptr<atoll::vector<float>>> outputs;
  std::vector<std::unique_ptr<atoll::request>> requests;
  std::vector<std::future<void>> futures;
  for (int r = 0; r < kRequests; ++r) {
    outputs.push_back(std::make_unique<atoll::vector<float>>(kSize, -1.0f));
    requests.push_back(std::make_unique<atoll::request>("vector.addition"));
    requests.back()->arg(a).arg(b).arg(*outputs.back()).arg(kSize);
    futures.push_back(atoll::submit(*requests.back()));
  }
  for (int r = 0; r < kRequests; ++r) {
    ASSERT_NO_THROW(futures[r].get()) << r;
    for (int i = 0; i < kSize; ++i) ASSERT_EQ((*outputs[r])[i], 3.0f) << r << " " << i;
  }
}

TEST_F(EndToEnd, CallWaitsInTheCallingThreadAndThrowsTheRequestsError) {
  const int n = 4096;
  atoll::vector<float> a(n), b(n), c(n);
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < n; ++i) {
      a[i] = static_cast<float>(i + round);
      b[i] = static_cast<float>(2 * i);
      c[i] = -1.0f;
    }
    atoll::request add("vector.addition");
    add.arg(a).arg(b).arg(c).arg(n);
    ASSERT_NO_THROW(atoll::call(add));
    for (int i = 0; i < n; ++i) ASSERT_EQ(c[i], a[i] + b[i]) << round << " " << i;
  }
  int code = ATOLL_OUT_OF_RANGE;
  atoll::request fails("testing.fail");
  fails.arg(code);
  auto [failed, failure] = Outcome(fails, /*call=*/true);
  EXPECT_EQ(failed, ATOLL_OUT_OF_RANGE) << failure;
  EXPECT_THAT(failure, HasSubstr("on purpose"));
  atoll::request unknown("vector.additoin");
  auto [missing, why] = Outcome(unknown, /*call=*/true);
  EXPECT_EQ(missing, ATOLL_NOT_FOUND) << why;
  EXPECT_THAT(why, HasSubstr("vector.addition"));
}

TEST_F(EndToEnd, UnknownAcceleratorSuggestsCloseNames) {
  atoll::request r("vector.additon");
  auto [code, message] = Outcome(r);
  EXPECT_EQ(code, ATOLL_NOT_FOUND);
  EXPECT_THAT(message, HasSubstr("vector.addition"));
}

TEST_F(EndToEnd, WrongArgumentCountIsRefused) {
  atoll::vector<float> a(4), b(4), c(4);
  atoll::request r("vector.addition");
  r.arg(a).arg(b).arg(c);
  auto [code, message] = Outcome(r);
  EXPECT_EQ(code, ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("4"));
  EXPECT_THAT(message, HasSubstr("3"));
}

TEST_F(EndToEnd, ScalarWhereArrayExpectedAndTheReverse) {
  atoll::vector<float> a(4), b(4), c(4);
  int n = 4;
  atoll::request r1("vector.addition");
  r1.arg(n).arg(b).arg(c).arg(n);
  auto [code1, message1] = Outcome(r1);
  EXPECT_EQ(code1, ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message1, HasSubstr("argument 0"));
  EXPECT_THAT(message1, HasSubstr("'a'"));

  atoll::request r2("vector.addition");
  r2.arg(a).arg(b).arg(c).arg(c);
  auto [code2, message2] = Outcome(r2);
  EXPECT_EQ(code2, ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message2, HasSubstr("argument 3"));
  EXPECT_THAT(message2, HasSubstr("'size'"));
}

TEST_F(EndToEnd, ScalarOfWrongSizeIsRefused) {
  atoll::vector<float> a(4), b(4), c(4);
  long n = 4;
  atoll::request r("vector.addition");
  r.arg(a).arg(b).arg(c).arg(n);
  auto [code, message] = Outcome(r);
  EXPECT_EQ(code, ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("4 bytes"));
  EXPECT_THAT(message, HasSubstr("8"));
}

TEST_F(EndToEnd, ArraysTooSmallForTheLengthRuleAreRefusedBeforeRunning) {
  atoll::vector<float> a(4), b(4), c(4);
  int n = 1 << 20;  // would read far past the buffers
  atoll::request r("vector.addition");
  r.arg(a).arg(b).arg(c).arg(n);
  auto [code, message] = Outcome(r);
  EXPECT_EQ(code, ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(message, HasSubstr("'a'"));
}

TEST_F(EndToEnd, PointerOutsideAnyBufferFailsAtArgTime) {
  std::vector<float> plain(16);
  atoll_request r = atoll_request_create("vector.addition");
  EXPECT_EQ(atoll_request_arg_array(r, 64, plain.data(), 0), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(atoll_last_error(), HasSubstr("not inside any Atoll buffer"));
  EXPECT_EQ(errno, EINVAL);
  atoll_request_release(r);
}

TEST_F(EndToEnd, RangePastTheBufferEndIsRefused) {
  float* a = static_cast<float*>(atoll_alloc(64));
  atoll_request r = atoll_request_create("vector.addition");
  EXPECT_EQ(atoll_request_arg_array(r, 128, a, 0), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(atoll_last_error(), HasSubstr("runs past the end"));
  EXPECT_EQ(atoll_request_arg_array(r, 32, a + 12, 0), ATOLL_INVALID_ARGUMENT);
  EXPECT_EQ(atoll_request_arg_array(r, 16, a + 12, 0), ATOLL_OK);
  atoll_request_release(r);
  atoll_free(a);
}

TEST_F(EndToEnd, BufferFreedBeforeSubmitIsRefused) {
  const int n = 16;
  float* a = static_cast<float*>(atoll_alloc(n * sizeof(float)));
  float* b = static_cast<float*>(atoll_alloc(n * sizeof(float)));
  float* c = static_cast<float*>(atoll_alloc(n * sizeof(float)));
  atoll_request r = atoll_request_create("vector.addition");
  ASSERT_EQ(atoll_request_arg_array(r, n * sizeof(float), a, 0), ATOLL_OK);
  ASSERT_EQ(atoll_request_arg_array(r, n * sizeof(float), b, 1), ATOLL_OK);
  ASSERT_EQ(atoll_request_arg_array(r, n * sizeof(float), c, 2), ATOLL_OK);
  ASSERT_EQ(atoll_request_arg_scalar(r, sizeof(n), &n, 3), ATOLL_OK);
  atoll_free(b);
  atoll_response response = nullptr;
  EXPECT_EQ(atoll_submit(r, &response), ATOLL_INVALID_ARGUMENT);
  EXPECT_THAT(atoll_last_error(), HasSubstr("argument 1"));
  atoll_request_release(r);
  atoll_free(a);
  atoll_free(c);
}

TEST_F(EndToEnd, BufferFreedWhileRequestRunsDoesNotHurtTheDaemon) {
  const int n = 1024;
  int* out = static_cast<int*>(atoll_alloc(n * sizeof(int)));
  atoll_request r = atoll_request_create("testing.fill");
  int value = 42, ms = 100;
  ASSERT_EQ(atoll_request_arg_array(r, n * sizeof(int), out, 0), ATOLL_OK);
  ASSERT_EQ(atoll_request_arg_scalar(r, sizeof(int), &n, 1), ATOLL_OK);
  ASSERT_EQ(atoll_request_arg_scalar(r, sizeof(int), &value, 2), ATOLL_OK);
  ASSERT_EQ(atoll_request_arg_scalar(r, sizeof(int), &ms, 3), ATOLL_OK);
  atoll_response response = nullptr;
  ASSERT_EQ(atoll_submit(r, &response), ATOLL_OK);
  atoll_free(out);  // the daemon keeps its own mapping until the kernel ends
  EXPECT_EQ(atoll_response_wait(response), ATOLL_OK);
  atoll_response_release(response);
  atoll_request_release(r);
  // The daemon still serves.
  atoll::request noop("testing.noop");
  atoll::submit(noop).get();
}

TEST_F(EndToEnd, GapInArgumentIndicesIsRefusedAtSubmit) {
  atoll::vector<float> a(4);
  atoll::request r("vector.addition");
  r.arg(0, a).arg(2, a);
  EXPECT_THROW(atoll::submit(r), atoll::error);
}

TEST_F(EndToEnd, KernelErrorsReachTheClientWithTheirCode) {
  int code = ATOLL_OUT_OF_RANGE;
  atoll::request r("testing.fail");
  r.arg(code);
  auto [c, message] = Outcome(r);
  EXPECT_EQ(c, ATOLL_OUT_OF_RANGE);
  EXPECT_THAT(message, HasSubstr("on purpose"));
}

TEST_F(EndToEnd, TimeoutFailsAQueuedRequestWithoutRunningIt) {
  // Occupy both compute units, then queue a request with a short deadline.
  int ms = 300;
  atoll::request sleep("testing.sleep");
  sleep.arg(ms);
  auto busy1 = atoll::submit(sleep);
  auto busy2 = atoll::submit(sleep);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  const int n = 8;
  atoll::vector<int> out(n, -1);
  int value = 7, no_wait = 0;
  atoll::request fill("testing.fill");
  fill.arg(out).arg(n).arg(value).arg(no_wait).timeout_ms(50);
  auto begin = std::chrono::steady_clock::now();
  auto [code, message] = Outcome(fill);
  auto waited = std::chrono::steady_clock::now() - begin;
  EXPECT_EQ(code, ATOLL_DEADLINE_EXCEEDED) << message;
  EXPECT_LT(waited, std::chrono::milliseconds(250));
  busy1.get();
  busy2.get();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(out[0], -1);  // it never ran
}

TEST_F(EndToEnd, CancelledQueuedRequestNeverRuns) {
  int ms = 200;
  atoll::request sleep("testing.sleep");
  sleep.arg(ms);
  auto busy1 = atoll::submit(sleep);
  auto busy2 = atoll::submit(sleep);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  const int n = 8;
  int* out = static_cast<int*>(atoll_alloc(n * sizeof(int)));
  for (int i = 0; i < n; ++i) out[i] = -1;
  atoll_request r = atoll_request_create("testing.fill");
  int value = 9, no_wait = 0;
  atoll_request_arg_array(r, n * sizeof(int), out, 0);
  atoll_request_arg_scalar(r, sizeof(int), &n, 1);
  atoll_request_arg_scalar(r, sizeof(int), &value, 2);
  atoll_request_arg_scalar(r, sizeof(int), &no_wait, 3);
  atoll_response response = nullptr;
  ASSERT_EQ(atoll_submit(r, &response), ATOLL_OK);
  ASSERT_EQ(atoll_response_cancel(response), ATOLL_OK);
  EXPECT_EQ(atoll_response_wait(response), ATOLL_CANCELLED);
  busy1.get();
  busy2.get();
  EXPECT_EQ(out[0], -1);
  atoll_response_release(response);
  atoll_request_release(r);
  atoll_free(out);
}

TEST_F(EndToEnd, WaitForTimesOutWhileTheRequestGoesOn) {
  int ms = 150;
  atoll_request r = atoll_request_create("testing.sleep");
  atoll_request_arg_scalar(r, sizeof(int), &ms, 0);
  atoll_response response = nullptr;
  ASSERT_EQ(atoll_submit(r, &response), ATOLL_OK);
  EXPECT_EQ(atoll_response_wait_for(response, 10), ATOLL_DEADLINE_EXCEEDED);
  EXPECT_EQ(errno, ETIMEDOUT);
  // A zero timeout only looks, also when the client polls (ATOLL_SPIN_US, end_to_end_polling):
  // the quickest of 20 looks stays well under the spin time.
  auto quickest = std::chrono::nanoseconds::max();
  for (int i = 0; i < 20; ++i) {
    auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(atoll_response_wait_for(response, 0), ATOLL_DEADLINE_EXCEEDED);
    quickest = std::min(quickest, std::chrono::steady_clock::now() - start);
  }
  if (client::ClientSpinUs() >= 150) {
    EXPECT_LT(quickest, std::chrono::microseconds(100)) << "a zero timeout polled";
  }
  EXPECT_EQ(atoll_response_wait_for(response, 5000), ATOLL_OK);
  EXPECT_TRUE(atoll_response_done(response));
  atoll_response_release(response);
  atoll_request_release(r);
}

TEST_F(EndToEnd, ProtocolVersionMismatchIsExplained) {
  auto fd = ipc::Connect(daemon_->socket());
  ASSERT_TRUE(fd.ok());
  wire::ClientMessage hello;
  hello.mutable_hello()->set_protocol_version(99);
  ASSERT_TRUE(ipc::SendPacket(fd->get(), hello.SerializeAsString()).ok());
  std::string buffer;
  size_t size = 0;
  auto r = ipc::RecvPacket(fd->get(), &buffer, &size, nullptr);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(*r, ipc::RecvResult::kPacket);
  wire::ServerMessage reply;
  ASSERT_TRUE(reply.ParseFromArray(buffer.data(), static_cast<int>(size)));
  ASSERT_TRUE(reply.has_goodbye());
  EXPECT_EQ(reply.goodbye().status().code(), static_cast<uint32_t>(ATOLL_FAILED_PRECONDITION));
  EXPECT_THAT(reply.goodbye().status().message(), HasSubstr("version 99"));
}

TEST_F(EndToEnd, GarbageAndForeignBufferIdsDoNotHurtOtherClients) {
  auto fd = ipc::Connect(daemon_->socket());
  ASSERT_TRUE(fd.ok());
  wire::ClientMessage hello;
  hello.mutable_hello()->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
  ASSERT_TRUE(ipc::SendPacket(fd->get(), hello.SerializeAsString()).ok());
  std::string buffer;
  size_t size = 0;
  ASSERT_TRUE(ipc::RecvPacket(fd->get(), &buffer, &size, nullptr).ok());  // welcome
  // A request naming a buffer id this connection never sent (another client's, say).
  wire::ClientMessage submit;
  submit.mutable_submit()->set_request_id(1);
  submit.mutable_submit()->set_accelerator("vector.addition");
  for (int i = 0; i < 3; ++i) {
    auto* arg = submit.mutable_submit()->add_arguments();
    arg->set_index(i);
    arg->mutable_array()->set_buffer_id(1);
    arg->mutable_array()->set_size_bytes(16);
  }
  auto* n = submit.mutable_submit()->add_arguments();
  n->set_index(3);
  int four = 4;
  n->set_scalar(std::string(reinterpret_cast<char*>(&four), 4));
  ASSERT_TRUE(ipc::SendPacket(fd->get(), submit.SerializeAsString()).ok());
  ASSERT_TRUE(ipc::RecvPacket(fd->get(), &buffer, &size, nullptr).ok());
  wire::ServerMessage reply;
  ASSERT_TRUE(reply.ParseFromArray(buffer.data(), static_cast<int>(size)));
  ASSERT_TRUE(reply.has_complete());
  EXPECT_EQ(reply.complete().status().code(), static_cast<uint32_t>(ATOLL_INVALID_ARGUMENT));
  EXPECT_THAT(reply.complete().status().message(), HasSubstr("unknown on this connection"));
  // Then garbage: the daemon closes this connection only.
  ASSERT_TRUE(ipc::SendPacket(fd->get(), std::string("\xff\xff\xff\xff garbage", 12)).ok());
  auto r = ipc::RecvPacket(fd->get(), &buffer, &size, nullptr);
  ASSERT_TRUE(r.ok());
  if (*r == ipc::RecvResult::kPacket) {
    ASSERT_TRUE(reply.ParseFromArray(buffer.data(), static_cast<int>(size)));
    EXPECT_TRUE(reply.has_goodbye());
  }
  atoll::request noop("testing.noop");
  atoll::submit(noop).get();
}

TEST_F(EndToEnd, CrashedClientsBuffersAndConnectionsAreReleased) {
  auto status = [] {
    auto text = atl::client::Connection::Default().Query(wire::Query::KIND_STATUS, 5000);
    EXPECT_TRUE(text.ok()) << text.status().ToString();
    return nlohmann::json::parse(text.ok() ? *text : std::string("{}"));
  };
  auto before = status();
  for (int round = 0; round < 3; ++round) {
    pid_t child = ::fork();
    if (child == 0) {
      // A fresh process: its own connection and buffers, killed while a request runs.
      const int n = 1 << 16;
      atoll::vector<int> out(n);
      int value = 1, ms = 2000;
      atoll::request fill("testing.fill");
      fill.arg(out).arg(n).arg(value).arg(ms);
      auto pending = atoll::submit(fill);
      ::raise(SIGKILL);
    }
    int wstatus = 0;
    ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
    ASSERT_TRUE(WIFSIGNALED(wstatus));
  }
  // The daemon notices each disconnect at once; running kernels keep their own mapping until
  // they end, but the connection's table is emptied.
  nlohmann::json after;
  for (int i = 0; i < 200; ++i) {
    after = status();
    if (after["connections"] == before["connections"] &&
        after["buffers"]["mapped"] == before["buffers"]["mapped"]) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(after["connections"], before["connections"]);
  EXPECT_EQ(after["buffers"]["mapped"], before["buffers"]["mapped"]);
  EXPECT_EQ(after["buffers"]["bytes"], before["buffers"]["bytes"]);
  atoll::request noop("testing.noop");
  atoll::submit(noop).get();
}

TEST_F(EndToEnd, OversizedRequestIsRefusedWithoutHurtingOthersInFlight) {
  int ms = 100;
  atoll::request sleep("testing.sleep");
  sleep.arg(ms);
  auto running = atoll::submit(sleep);
  atoll::request big("testing.noop");
  std::vector<char> blob(ATOLL_MAX_SCALAR_BYTES, 'x');
  for (int i = 0; i < 20; ++i) big.arg_scalar(blob.data(), blob.size());
  try {
    atoll::submit(big);
    FAIL() << "an oversized request must be refused";
  } catch (const atoll::error& e) {
    EXPECT_EQ(e.code(), ATOLL_INVALID_ARGUMENT);
    EXPECT_THAT(e.what(), HasSubstr("limit"));
  }
  EXPECT_NO_THROW(running.get());
}

TEST(EndToEndNoDaemon, DaemonNotRunningSaysHowToStartIt) {
  ::setenv("ATOLL_SOCKET", "/tmp/atoll-nobody-listens-here.sock", 1);
  atoll::vector<float> a(4);
  atoll::request r("vector.addition");
  r.arg(a);
  try {
    atoll::submit(r);
    FAIL() << "submit should throw";
  } catch (const atoll::error& e) {
    EXPECT_EQ(e.code(), ATOLL_UNAVAILABLE);
    EXPECT_THAT(e.what(), HasSubstr("atolld"));
  }
}

TEST(EndToEndPermissions, SocketPermissionDeniedIsExplained) {
  TestDaemon::Options options;
  options.install = {};
  options.config_json = R"({"socket_mode": "0600"})";
  options.set_environment = false;
  TestDaemon daemon(options);
  if (::geteuid() != 0) {
    // The socket's owner may connect; take that away so the client is refused.
    ASSERT_EQ(::chmod(daemon.socket().c_str(), 0), 0);
  }
  pid_t child = ::fork();
  if (child == 0) {
    // Root bypasses the socket's mode, so the client runs as an unprivileged user.
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) std::_Exit(10);
    auto fd = ipc::Connect(daemon.socket());
    if (fd.ok()) std::_Exit(11);
    if (fd.status().code() != Code::kPermissionDenied) std::_Exit(12);
    if (fd.status().message().find("permission denied") == std::string::npos) std::_Exit(13);
    std::_Exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(EndToEndShutdown, SigtermFailsQueuedWorkAndFinishesRunningWork) {
  TestDaemon::Options options;
  options.install = {"testing"};
  options.set_environment = true;
  TestDaemon daemon(options);
  int ms = 300;
  atoll::request sleep("testing.sleep");
  sleep.arg(ms);
  auto running1 = atoll::submit(sleep);
  auto running2 = atoll::submit(sleep);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto queued = atoll::submit(sleep);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(daemon.Stop(), 0);
  EXPECT_NO_THROW(running1.get());
  EXPECT_NO_THROW(running2.get());
  try {
    queued.get();
    FAIL() << "the queued request must fail";
  } catch (const atoll::error& e) {
    EXPECT_EQ(e.code(), ATOLL_UNAVAILABLE);
    EXPECT_THAT(e.what(), HasSubstr("shutting down"));
  }
}

TEST(EndToEndShutdown, KernelOutlivingTheGracePeriodDoesNotCrashTheDaemon) {
  TestDaemon::Options options;
  options.install = {"testing"};
  options.config_json = R"({"shutdown_grace_ms": 100})";
  TestDaemon daemon(options);
  int ms = 3000;
  atoll::request sleep("testing.sleep");
  sleep.arg(ms);
  auto running = atoll::submit(sleep);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto begin = std::chrono::steady_clock::now();
  EXPECT_EQ(daemon.Stop(), 0) << daemon.log();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::milliseconds(2000));
  try {
    running.get();
    FAIL() << "the request was still running when the daemon left";
  } catch (const atoll::error& e) {
    EXPECT_EQ(e.code(), ATOLL_UNAVAILABLE);
  }
}

}  // namespace
}  // namespace atl::testing
