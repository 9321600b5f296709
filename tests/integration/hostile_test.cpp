// Hostile clients: raw SOCK_SEQPACKET connections speaking protobuf through src/ipc, doing what
// libatoll never would. Each case checks that the daemon refuses with an error or bounds the
// damage with a limit, and that a well-behaved client on another connection still gets correct
// results meanwhile.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "atoll.pb.h"
#include "atoll/atoll.hpp"
#include "client/connection.h"
#include "ipc/ring.h"
#include "ipc/socket.h"
#include "test_daemon.h"

namespace atl::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kMaxBufferBytes = 1 << 20;
constexpr int kMaxConnections = 64;
constexpr int kMaxConnectionsPerUid = 40;
constexpr int kHandshakeTimeoutMs = 300;
constexpr int kMaxUnreadReplies = 64;
constexpr int kMaxRequests = 256;

// One connection driven by hand.
class RawClient {
 public:
  // Connects; with `hello`, also does the handshake and checks the Welcome.
  static std::optional<RawClient> Open(const std::string& socket, bool hello = true) {
    auto fd = ipc::Connect(socket);
    if (!fd.ok()) {
      ADD_FAILURE() << fd.status().ToString();
      return std::nullopt;
    }
    RawClient client(std::move(fd).value());
    if (hello) {
      wire::ClientMessage m;
      m.mutable_hello()->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
      client.Send(m);
      auto reply = client.Receive();
      if (!reply || !reply->has_welcome()) {
        ADD_FAILURE() << "no Welcome";
        return std::nullopt;
      }
    }
    return client;
  }

  int fd() const { return fd_.get(); }

  // Sends one packet; false (with a test failure) when the socket refused it.
  bool Send(const wire::ClientMessage& m, int pass_fd = -1) {
    return SendBytes(m.SerializeAsString(), pass_fd);
  }
  bool SendBytes(const std::string& bytes, int pass_fd = -1) {
    Status sent = ipc::SendPacket(fd_.get(), bytes, pass_fd);
    EXPECT_TRUE(sent.ok()) << sent.ToString();
    return sent.ok();
  }

  // The next message, or nothing when the daemon closed the connection or `timeout_ms` passed.
  std::optional<wire::ServerMessage> Receive(int timeout_ms = 10000) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
    size_t size = 0;
    auto r = ipc::RecvPacket(fd_.get(), &buffer_, &size, nullptr, true);
    if (!r.ok() || *r != ipc::RecvResult::kPacket) return std::nullopt;
    wire::ServerMessage m;
    if (!m.ParseFromArray(buffer_.data(), static_cast<int>(size))) return std::nullopt;
    return m;
  }

  // True when the daemon has closed this connection (after whatever it sent last).
  bool ClosedByDaemon(int timeout_ms = 5000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      pollfd p{fd_.get(), POLLIN, 100};
      if (::poll(&p, 1, 100) != 1) continue;
      size_t size = 0;
      auto r = ipc::RecvPacket(fd_.get(), &buffer_, &size, nullptr, true);
      if (!r.ok() || *r == ipc::RecvResult::kClosed) return true;
    }
    return false;
  }

  // The Complete of request `id`, skipping other messages.
  std::optional<wire::Complete> AwaitComplete(uint64_t id) {
    for (;;) {
      auto m = Receive();
      if (!m) return std::nullopt;
      if (m->has_complete() && m->complete().request_id() == id) return m->complete();
      if (m->has_goodbye()) return std::nullopt;
    }
  }

 private:
  explicit RawClient(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
  std::string buffer_;
};

wire::ClientMessage BufferAdd(uint64_t id, uint64_t size) {
  wire::ClientMessage m;
  m.mutable_buffer_add()->set_buffer_id(id);
  m.mutable_buffer_add()->set_size_bytes(size);
  return m;
}

std::string IntBytes(int32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }

// testing.fill(out = buffer `id` [offset, size), n, value, 0 ms).
wire::ClientMessage Fill(uint64_t request, uint64_t buffer, uint64_t offset, uint64_t size, int n,
                         int value) {
  wire::ClientMessage m;
  auto* s = m.mutable_submit();
  s->set_request_id(request);
  s->set_accelerator("testing.fill");
  auto* out = s->add_arguments();
  out->set_index(0);
  out->mutable_array()->set_buffer_id(buffer);
  out->mutable_array()->set_offset(offset);
  out->mutable_array()->set_size_bytes(size);
  int32_t scalars[] = {n, value, 0};
  for (uint32_t i = 0; i < 3; ++i) {
    auto* a = s->add_arguments();
    a->set_index(i + 1);
    a->set_scalar(IntBytes(scalars[i]));
  }
  return m;
}

wire::ClientMessage Noop(uint64_t request) {
  wire::ClientMessage m;
  m.mutable_submit()->set_request_id(request);
  m.mutable_submit()->set_accelerator("testing.noop");
  return m;
}

// A memfd as libatoll makes it: `size` bytes, sealed against shrinking.
UniqueFd SealedMemfd(size_t size) {
  UniqueFd fd(::memfd_create("hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
  return fd;
}

size_t CountFds(pid_t pid) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

class Hostile : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { StartDaemon(kHandshakeTimeoutMs); }
  static void StartDaemon(int handshake_timeout_ms) {
    TestDaemon::Options options;
    options.install = {"vector", "vector_int", "testing"};
    options.config_json = nlohmann::json{
        {"max_connections", kMaxConnections},
        {"max_connections_per_uid", kMaxConnectionsPerUid},
        {"handshake_timeout_ms", handshake_timeout_ms},
        {"max_buffer_bytes_per_connection", kMaxBufferBytes},
        {"max_buffers_per_connection", 16},
        {"max_unread_replies_per_connection", kMaxUnreadReplies},
        {"max_requests_per_connection",
         kMaxRequests}}.dump();
    options.log_level = "info";  // a flood logged at debug level fills the disk
    daemon_ = new TestDaemon(options);
    // Room for the connection flood on this side.
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = std::min<rlim_t>(limit.rlim_max, 16384);
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override {
    ::setenv("ATOLL_SOCKET", daemon_->socket().c_str(), 1);
    WellBehavedClientGetsCorrectResults();  // its connection exists before the attack
    baseline_ = DaemonStatus();
    baseline_fds_ = CountFds(daemon_->pid());
  }
  void TearDown() override {
    ASSERT_EQ(::kill(daemon_->pid(), 0), 0) << "atolld died:\n" << daemon_->log();
    WellBehavedClientGetsCorrectResults();
    // Everything the attack held is released.
    nlohmann::json now;
    for (int i = 0; i < 500; ++i) {
      now = DaemonStatus();
      if (now["connections"] == baseline_["connections"] &&
          now["buffers"] == baseline_["buffers"] && now["requests"]["running"] == 0 &&
          now["requests"]["queued"] == 0 && CountFds(daemon_->pid()) <= baseline_fds_) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(now["connections"], baseline_["connections"]);
    EXPECT_EQ(now["buffers"], baseline_["buffers"]);
    EXPECT_EQ(now["requests"]["running"], 0);
    EXPECT_EQ(now["requests"]["queued"], 0);
    // Not above: fds of an earlier test that the daemon was still closing may be gone by now.
    EXPECT_LE(CountFds(daemon_->pid()), baseline_fds_);
  }

  static nlohmann::json DaemonStatus() {
    auto text = client::Connection::Default().Query(wire::Query::KIND_STATUS, 10000);
    EXPECT_TRUE(text.ok()) << text.status().ToString();
    return nlohmann::json::parse(text.ok() ? *text : std::string("{}"));
  }

  // vector.addition through libatoll on its own connection, checked element by element and
  // within a time bound.
  static void WellBehavedClientGetsCorrectResults() {
    static int seed = 0;
    const int n = 10000;
    atoll::vector<float> a(n), b(n), c(n);
    std::mt19937 rng(++seed);
    std::uniform_real_distribution<float> dist(-100, 100);
    for (int i = 0; i < n; ++i) {
      a[i] = dist(rng);
      b[i] = dist(rng);
    }
    atoll::request add("vector.addition");
    add.arg(a).arg(b).arg(c).arg(n);
    auto begin = Clock::now();
    auto done = atoll::submit(add);
    ASSERT_EQ(done.wait_for(std::chrono::seconds(5)), std::future_status::ready)
        << "a well-behaved client was stalled";
    done.get();
    EXPECT_LT(Clock::now() - begin, std::chrono::seconds(5));
    for (int i = 0; i < n; ++i) ASSERT_EQ(c[i], a[i] + b[i]) << i;
  }

  static TestDaemon* daemon_;
  nlohmann::json baseline_;
  size_t baseline_fds_ = 0;
};
TestDaemon* Hostile::daemon_ = nullptr;

// Submits fill on buffer 1 and returns the refusal's message (fails the test if it ran).
std::string RefusalOfBuffer(RawClient& c, uint64_t request, uint64_t size) {
  c.Send(Fill(request, 1, 0, size, static_cast<int>(size / 4), 1));
  auto done = c.AwaitComplete(request);
  if (!done) {
    ADD_FAILURE() << "no Complete";
    return "";
  }
  EXPECT_EQ(done->status().code(), static_cast<uint32_t>(ATOLL_INVALID_ARGUMENT));
  return done->status().message();
}

TEST_F(Hostile, MemfdThatCannotBeSealedIsRefused) {
  auto c = RawClient::Open(daemon_->socket());
  ASSERT_TRUE(c);
  UniqueFd unsealable(::memfd_create("unsealable", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(unsealable.get(), 4096), 0);
  ASSERT_TRUE(c->Send(BufferAdd(1, 4096), unsealable.get()));
  EXPECT_THAT(RefusalOfBuffer(*c, 1, 4096), HasSubstr("F_SEAL_SHRINK"));

  // Sealable but never sealed: the client could still shrink it under a kernel.
  UniqueFd unsealed(::memfd_create("unsealed", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_EQ(::ftruncate(unsealed.get(), 4096), 0);
  ASSERT_TRUE(c->Send(BufferAdd(1, 4096), unsealed.get()));
  EXPECT_THAT(RefusalOfBuffer(*c, 2, 4096), HasSubstr("not sealed against shrinking"));

  // Not a memfd at all: a pipe, a regular file.
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  ASSERT_TRUE(c->Send(BufferAdd(1, 16), read_end.get()));
  EXPECT_THAT(RefusalOfBuffer(*c, 3, 16), HasSubstr("not a sealable memfd"));
  // On tmpfs a file has seals (only F_SEAL_SEAL), elsewhere none.
  std::string path = daemon_->folder() + "/plain-file";
  UniqueFd file(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_EQ(::ftruncate(file.get(), 4096), 0);
  ASSERT_TRUE(c->Send(BufferAdd(1, 4096), file.get()));
  EXPECT_THAT(RefusalOfBuffer(*c, 4, 4096),
              AnyOf(HasSubstr("not a sealable memfd"), HasSubstr("not sealed against shrinking")));

  // No fd at all.
  ASSERT_TRUE(c->Send(BufferAdd(1, 4096)));
  EXPECT_THAT(RefusalOfBuffer(*c, 5, 4096), HasSubstr("no file descriptor"));
}

TEST_F(Hostile, ShrunkOrWriteSealedMemfdIsRefused) {
  auto c = RawClient::Open(daemon_->socket());
  ASSERT_TRUE(c);
  // Shrunk before it was sealed: smaller than it claims.
  UniqueFd shrunk(::memfd_create("shrunk", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  ASSERT_EQ(::ftruncate(shrunk.get(), 65536), 0);
  ASSERT_EQ(::ftruncate(shrunk.get(), 100), 0);
  ASSERT_EQ(::fcntl(shrunk.get(), F_ADD_SEALS, F_SEAL_SHRINK), 0);
  ASSERT_TRUE(c->Send(BufferAdd(1, 65536), shrunk.get()));
  EXPECT_THAT(RefusalOfBuffer(*c, 1, 4096), HasSubstr("holds 100"));

  // Sealed against writes: the daemon cannot map it writable, so it cannot be an output.
  UniqueFd frozen = SealedMemfd(4096);
  ASSERT_EQ(::fcntl(frozen.get(), F_ADD_SEALS, F_SEAL_WRITE), 0);
  ASSERT_TRUE(c->Send(BufferAdd(1, 4096), frozen.get()));
  EXPECT_THAT(RefusalOfBuffer(*c, 2, 4096), HasSubstr("its buffer was refused"));
}

TEST_F(Hostile, HugeAndNegativeSizesAreRefused) {
  auto c = RawClient::Open(daemon_->socket());
  ASSERT_TRUE(c);
  UniqueFd small = SealedMemfd(4096);
  // Sizes past what the memfd holds, including "negative" ones.
  for (uint64_t size : {uint64_t{1} << 40, static_cast<uint64_t>(-1), static_cast<uint64_t>(-4)}) {
    ASSERT_TRUE(c->Send(BufferAdd(1, size), small.get()));
    EXPECT_THAT(RefusalOfBuffer(*c, 1, 4096),
                AnyOf(HasSubstr("holds 4096"), HasSubstr("max_buffer_bytes_per_connection")));
  }
  // A sparse memfd costs its client nothing, so the daemon bounds what one connection maps.
  UniqueFd sparse = SealedMemfd(kMaxBufferBytes * 4);
  ASSERT_TRUE(c->Send(BufferAdd(1, kMaxBufferBytes * 4), sparse.get()));
  EXPECT_THAT(RefusalOfBuffer(*c, 2, 4096), HasSubstr("max_buffer_bytes_per_connection"));
  // Within the limit in total: two halves fit, a third buffer does not.
  UniqueFd half1 = SealedMemfd(kMaxBufferBytes / 2), half2 = SealedMemfd(kMaxBufferBytes / 2);
  ASSERT_TRUE(c->Send(BufferAdd(10, kMaxBufferBytes / 2), half1.get()));
  ASSERT_TRUE(c->Send(BufferAdd(11, kMaxBufferBytes / 2), half2.get()));
  UniqueFd more = SealedMemfd(4096);
  ASSERT_TRUE(c->Send(BufferAdd(1, 4096), more.get()));
  EXPECT_THAT(RefusalOfBuffer(*c, 3, 4096), HasSubstr("max_buffer_bytes_per_connection"));

  // Ranges past a good buffer's end, with offsets and sizes that overflow when added.
  struct Range {
    uint64_t offset, size;
  };
  uint64_t request = 100;
  for (Range r : {Range{0, kMaxBufferBytes}, Range{static_cast<uint64_t>(-4), 8},
                  Range{8, static_cast<uint64_t>(-4)}, Range{kMaxBufferBytes / 2 + 4, 0}}) {
    c->Send(Fill(++request, 10, r.offset, r.size, 1, 1));
    auto done = c->AwaitComplete(request);
    ASSERT_TRUE(done);
    EXPECT_EQ(done->status().code(), static_cast<uint32_t>(ATOLL_INVALID_ARGUMENT));
    EXPECT_THAT(done->status().message(), HasSubstr("runs past the end"));
  }
  // A negative element count, and one the array cannot hold.
  for (int n : {-1, static_cast<int>(kMaxBufferBytes)}) {
    c->Send(Fill(++request, 10, 0, 4096, n, 1));
    auto done = c->AwaitComplete(request);
    ASSERT_TRUE(done);
    EXPECT_EQ(done->status().code(), static_cast<uint32_t>(ATOLL_INVALID_ARGUMENT)) << n;
  }
  // Argument indices far out of range, and a deadline too far away to add to a clock.
  wire::ClientMessage bad_index = Fill(++request, 10, 0, 4096, 1, 1);
  bad_index.mutable_submit()->mutable_arguments(0)->set_index(UINT32_MAX);
  c->Send(bad_index);
  auto done = c->AwaitComplete(request);
  ASSERT_TRUE(done);
  EXPECT_THAT(done->status().message(), HasSubstr("indices"));
  wire::ClientMessage forever = Fill(++request, 10, 0, 4096, 1024, 7);
  forever.mutable_submit()->set_timeout_us(UINT64_MAX);
  c->Send(forever);
  done = c->AwaitComplete(request);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status().code(), 0u) << done->status().message();
}

TEST_F(Hostile, BogusAndForeignBufferIdsAreRefused) {
  auto owner = RawClient::Open(daemon_->socket());
  auto thief = RawClient::Open(daemon_->socket());
  ASSERT_TRUE(owner && thief);
  UniqueFd memfd = SealedMemfd(4096);
  void* mapped = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
  ASSERT_NE(mapped, MAP_FAILED);
  auto* data = static_cast<int*>(mapped);
  for (int i = 0; i < 1024; ++i) data[i] = 42;
  ASSERT_TRUE(owner->Send(BufferAdd(7, 4096), memfd.get()));
  // The owner's buffer works for the owner...
  owner->Send(Fill(1, 7, 0, 16, 4, 1));
  auto done = owner->AwaitComplete(1);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status().code(), 0u) << done->status().message();
  EXPECT_EQ(data[0], 1);
  // ...and its id means nothing on another connection, nor do ids never sent.
  for (uint64_t id : {uint64_t{7}, uint64_t{0}, uint64_t{8}, static_cast<uint64_t>(-1)}) {
    thief->Send(Fill(id + 100, id, 0, 4096, 1024, 666));
    done = thief->AwaitComplete(id + 100);
    ASSERT_TRUE(done);
    EXPECT_EQ(done->status().code(), static_cast<uint32_t>(ATOLL_INVALID_ARGUMENT));
    EXPECT_THAT(done->status().message(), HasSubstr("unknown on this connection"));
  }
  EXPECT_EQ(data[1023], 42);
  // Removing ids that do not exist changes nothing; the connection lives on.
  wire::ClientMessage remove;
  remove.mutable_buffer_remove()->set_buffer_id(7);
  ASSERT_TRUE(thief->Send(remove));
  owner->Send(Fill(2, 7, 0, 16, 4, 2));
  done = owner->AwaitComplete(2);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status().code(), 0u);
  EXPECT_EQ(data[0], 2);
  ::munmap(mapped, 4096);
}

TEST_F(Hostile, OversizeTruncatedAndMalformedMessagesCloseOnlyTheirConnection) {
  uint64_t errors_before = DaemonStatus()["refused"]["protocol_errors"];
  auto expect_closed = [&](RawClient& c, const std::string& why) {
    auto goodbye = c.Receive();
    ASSERT_TRUE(goodbye && goodbye->has_goodbye()) << why;
    EXPECT_EQ(goodbye->goodbye().status().code(), static_cast<uint32_t>(ATOLL_INVALID_ARGUMENT))
        << why;
    EXPECT_THAT(goodbye->goodbye().status().message(), HasSubstr("protocol error")) << why;
    EXPECT_TRUE(c.ClosedByDaemon()) << why;
  };
  {
    auto c = RawClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->SendBytes(std::string(ipc::kMaxPacketBytes + 1, 'x')));
    expect_closed(*c, "oversize");
  }
  {
    auto c = RawClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    std::string bytes = Fill(1, 1, 0, 16, 4, 1).SerializeAsString();
    EXPECT_TRUE(c->SendBytes(bytes.substr(0, bytes.size() - 3)));
    expect_closed(*c, "truncated");
  }
  {
    auto c = RawClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    // An empty packet reads like the end of the connection, and is taken as one.
    EXPECT_TRUE(c->SendBytes(""));
    EXPECT_TRUE(c->ClosedByDaemon());
  }
  {
    auto c = RawClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    wire::ClientMessage unknown;
    unknown.mutable_query()->set_query_id(1);
    unknown.mutable_query()->set_kind(static_cast<wire::Query::Kind>(77));
    EXPECT_TRUE(c->Send(unknown));  // an unknown query kind is answered, not fatal
    auto reply = c->Receive();
    ASSERT_TRUE(reply && reply->has_query_reply());
    EXPECT_EQ(reply->query_reply().status().code(), static_cast<uint32_t>(ATOLL_INVALID_ARGUMENT));
    // A field number no message has: skipped as unknown, so the packet is a message of no kind.
    EXPECT_TRUE(c->SendBytes(std::string("\xf8\x07\x01", 3)));
    expect_closed(*c, "no kind");
  }
  {
    auto c = RawClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    wire::ClientMessage hello;
    hello.mutable_hello()->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
    EXPECT_TRUE(c->Send(hello));
    expect_closed(*c, "second hello");
  }
  {
    auto c = RawClient::Open(daemon_->socket(), /*hello=*/false);
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->Send(Noop(1)));
    expect_closed(*c, "no hello");
  }
  {
    // More fds in one packet than any message carries.
    auto c = RawClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    std::vector<UniqueFd> fds;
    for (int i = 0; i < 16; ++i) fds.push_back(SealedMemfd(4096));
    std::string bytes = BufferAdd(1, 4096).SerializeAsString();
    iovec iov{bytes.data(), bytes.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * 16);
    for (int i = 0; i < 16; ++i) {
      int fd = fds[static_cast<size_t>(i)].get();
      std::memcpy(CMSG_DATA(cmsg) + i * sizeof(int), &fd, sizeof(int));
    }
    ASSERT_EQ(::sendmsg(c->fd(), &msg, MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    expect_closed(*c, "16 fds");
  }
  {
    // Fds beside messages that carry none are closed by the daemon, not kept.
    auto c = RawClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    size_t fds_before = CountFds(daemon_->pid());
    UniqueFd memfd = SealedMemfd(4096);
    for (uint64_t i = 0; i < 200; ++i) {
      wire::ClientMessage query;
      query.mutable_query()->set_query_id(i);
      query.mutable_query()->set_kind(wire::Query::KIND_STATUS);
      ASSERT_TRUE(c->Send(query, memfd.get()));
      ASSERT_TRUE(c->Receive());
    }
    // The reply can overtake the closing of the last packet's fd.
    for (int i = 0; i < 100 && CountFds(daemon_->pid()) != fds_before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(CountFds(daemon_->pid()), fds_before);
  }
  EXPECT_GE(DaemonStatus()["refused"]["protocol_errors"].get<uint64_t>(), errors_before + 6);
}

// Connections wait for their Hello for 10 s here, so the count of those served stays put.
class HostileConnections : public Hostile {
 protected:
  static void SetUpTestSuite() { StartDaemon(10000); }
};

// Opens `count` connections without Hello and sorts them by the daemon's answer: a Goodbye with
// RESOURCE_EXHAUSTED (whose messages land in `why`), or silence (served, waiting for Hello).
// Returns {served, refused}.
std::pair<int, int> Flood(const std::string& socket, int count, std::vector<UniqueFd>* held,
                          std::vector<std::string>* why) {
  for (int i = 0; i < count; ++i) {
    auto fd = ipc::Connect(socket);
    if (!fd.ok()) {
      ADD_FAILURE() << i << ": " << fd.status().ToString();
      break;
    }
    held->push_back(std::move(fd).value());
  }
  std::string buffer;
  int served = 0, refused = 0;
  std::vector<bool> answered(held->size(), false);
  // The daemon answers refused connections as it accepts them; give it time to reach them all.
  auto deadline = Clock::now() + std::chrono::seconds(30);
  auto quiet_since = Clock::now();
  while (Clock::now() < deadline && Clock::now() - quiet_since < std::chrono::seconds(1)) {
    bool any = false;
    for (size_t i = 0; i < held->size(); ++i) {
      if (answered[i]) continue;
      pollfd p{(*held)[i].get(), POLLIN, 0};
      if (::poll(&p, 1, 0) != 1) continue;
      answered[i] = any = true;
      size_t size = 0;
      auto r = ipc::RecvPacket((*held)[i].get(), &buffer, &size, nullptr, true);
      wire::ServerMessage m;
      if (r.ok() && *r == ipc::RecvResult::kPacket &&
          m.ParseFromArray(buffer.data(), static_cast<int>(size)) && m.has_goodbye() &&
          m.goodbye().status().code() == static_cast<uint32_t>(ATOLL_RESOURCE_EXHAUSTED)) {
        ++refused;
        why->push_back(m.goodbye().status().message());
      } else {
        ADD_FAILURE() << "unexpected answer to a flood connection";
      }
    }
    if (any) quiet_since = Clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (bool a : answered) served += a ? 0 : 1;
  return {served, refused};
}

TEST_F(HostileConnections, ThousandsOfConnectionsAreBoundedByTheLimits) {
  constexpr int kFlood = 2000;
  std::atomic<bool> stop{false};
  std::atomic<int> wrong{0}, served_requests{0};
  // The well-behaved client keeps working while the flood arrives.
  std::thread worker([&] {
    while (!stop.load()) {
      const int n = 1000;
      atoll::vector<int> a(n, 3), b(n, 4), c(n);
      atoll::request add("vector.int.addition");
      int size = n;
      add.arg(a).arg(b).arg(c).arg(size);
      try {
        atoll::submit(add).get();
        if (c[n - 1] != 7) wrong++;
        served_requests++;
      } catch (const atoll::error&) {
        wrong++;
      }
    }
  });
  std::vector<UniqueFd> flood;
  std::vector<std::string> why;
  auto [served, refused] = Flood(daemon_->socket(), kFlood, &flood, &why);
  // The library's connection counts for this uid too.
  EXPECT_EQ(served, kMaxConnectionsPerUid - 1);
  EXPECT_EQ(refused, kFlood - served);
  for (const auto& w : why) ASSERT_THAT(w, HasSubstr("max_connections_per_uid"));
  EXPECT_EQ(DaemonStatus()["connections"].get<int>(), kMaxConnectionsPerUid);

  // The limit is per uid: another user still gets in, up to max_connections in all.
  if (::geteuid() == 0) {
    ASSERT_EQ(::chmod(daemon_->folder().c_str(), 0755), 0);  // let the other user reach the socket
    pid_t child = ::fork();
    if (child == 0) {
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) std::_Exit(10);
      std::vector<UniqueFd> mine;
      std::vector<std::string> reasons;
      auto [in, out] = Flood(daemon_->socket(), 30, &mine, &reasons);
      if (in != kMaxConnections - kMaxConnectionsPerUid || out != 30 - in) std::_Exit(11);
      for (const auto& r : reasons) {
        if (r.find("(limit max_connections)") == std::string::npos) std::_Exit(12);
      }
      std::_Exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  } else {
    std::cout << "[ SKIPPED  ] the per-uid part needs root to run a client as another user\n";
  }
  stop = true;
  worker.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(served_requests.load(), 0);
  EXPECT_EQ(DaemonStatus()["refused"]["connections"].get<int>(),
            refused + (::geteuid() == 0 ? 6 : 0));
}

TEST_F(Hostile, IdleConnectionsThatNeverSpeakAreClosed) {
  uint64_t timeouts_before = DaemonStatus()["refused"]["handshake_timeouts"];
  std::vector<RawClient> silent;
  for (int i = 0; i < 20; ++i) {
    auto c = RawClient::Open(daemon_->socket(), /*hello=*/false);
    ASSERT_TRUE(c);
    silent.push_back(std::move(*c));
  }
  auto talker = RawClient::Open(daemon_->socket());  // handshakes, then stays quiet
  ASSERT_TRUE(talker);
  auto begin = Clock::now();
  for (auto& c : silent) {
    auto goodbye = c.Receive(5000);
    ASSERT_TRUE(goodbye && goodbye->has_goodbye());
    EXPECT_EQ(goodbye->goodbye().status().code(), static_cast<uint32_t>(ATOLL_DEADLINE_EXCEEDED));
    EXPECT_THAT(goodbye->goodbye().status().message(), HasSubstr("handshake_timeout_ms"));
    EXPECT_TRUE(c.ClosedByDaemon());
  }
  EXPECT_GE(Clock::now() - begin, std::chrono::milliseconds(kHandshakeTimeoutMs / 2));
  EXPECT_EQ(DaemonStatus()["refused"]["handshake_timeouts"].get<uint64_t>(), timeouts_before + 20);
  // A connection that has spoken is not idle-closed.
  std::this_thread::sleep_for(std::chrono::milliseconds(2 * kHandshakeTimeoutMs));
  talker->Send(Noop(1));
  auto done = talker->AwaitComplete(1);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->status().code(), 0u);
}

TEST_F(Hostile, FloodOfRequestsIsBoundedAndDoesNotStallOthers) {
  auto flooder = RawClient::Open(daemon_->socket());
  ASSERT_TRUE(flooder);
  // Requests in flight per connection are bounded: sleeps pile up to the limit, then are refused.
  wire::ClientMessage sleep;
  sleep.mutable_submit()->set_accelerator("testing.sleep");
  auto* ms = sleep.mutable_submit()->add_arguments();
  ms->set_index(0);
  ms->set_scalar(IntBytes(10));
  for (uint64_t id = 1; id <= kMaxRequests + 50; ++id) {
    sleep.mutable_submit()->set_request_id(id);
    ASSERT_TRUE(flooder->Send(sleep));
  }
  int exhausted = 0, completed = 0;
  while (completed + exhausted < kMaxRequests + 50) {
    auto m = flooder->Receive();
    ASSERT_TRUE(m && m->has_complete());
    if (m->complete().status().code() == static_cast<uint32_t>(ATOLL_RESOURCE_EXHAUSTED)) {
      ++exhausted;
      EXPECT_THAT(m->complete().status().message(), HasSubstr("max_requests_per_connection"));
    } else {
      ++completed;
    }
  }
  EXPECT_GT(exhausted, 0);

  // A client that floods without reading its replies: once kMaxUnreadReplies wait for it, the
  // daemon stops reading its requests, so its replies cannot grow without bound.
  auto silent = RawClient::Open(daemon_->socket());
  ASSERT_TRUE(silent);
  ASSERT_EQ(::fcntl(silent->fd(), F_SETFL, O_NONBLOCK), 0);
  uint64_t sent = 0;
  auto give_up = Clock::now() + std::chrono::seconds(30);
  bool paused = false;
  while (!paused && Clock::now() < give_up) {
    Status s = ipc::SendPacket(silent->fd(), Noop(sent + 1).SerializeAsString(), -1, true);
    if (s.ok()) {
      ++sent;
      continue;
    }
    ASSERT_EQ(s.code(), Code::kResourceExhausted) << s.ToString();
    // Full: the daemon may only be slow, or it stopped reading. It says which.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    paused = DaemonStatus()["connections_reading_paused"].get<int>() >= 1;
  }
  ASSERT_TRUE(paused) << "the daemon kept reading requests whose replies nobody read";
  // Paused means nothing more is read from it: the daemon's count of requests stands still.
  auto completed_now = [] { return DaemonStatus()["requests"]["completed"].get<uint64_t>(); };
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // what was read has run
  uint64_t before = completed_now();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(completed_now(), before);
  // Meanwhile others are served promptly.
  for (int i = 0; i < 5; ++i) WellBehavedClientGetsCorrectResults();
  // Reading the replies resumes it: every request sent gets exactly one answer.
  ASSERT_EQ(::fcntl(silent->fd(), F_SETFL, 0), 0);
  uint64_t answered = 0;
  while (answered < sent) {
    auto m = silent->Receive();
    ASSERT_TRUE(m && m->has_complete()) << answered << " of " << sent;
    EXPECT_THAT(m->complete().status().code(),
                AnyOf(0u, static_cast<uint32_t>(ATOLL_RESOURCE_EXHAUSTED)));
    ++answered;
  }
  EXPECT_EQ(DaemonStatus()["connections_reading_paused"].get<int>(), 0);
}

TEST_F(Hostile, ClientGoneWhileItsRepliesWaitIsCleanedUp) {
  {
    auto silent = RawClient::Open(daemon_->socket());
    ASSERT_TRUE(silent);
    ASSERT_EQ(::fcntl(silent->fd(), F_SETFL, O_NONBLOCK), 0);
    auto give_up = Clock::now() + std::chrono::seconds(5);
    uint64_t id = 0;
    while (Clock::now() < give_up) {
      Status s = ipc::SendPacket(silent->fd(), Noop(++id).SerializeAsString(), -1, true);
      if (s.code() == Code::kResourceExhausted) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        if (DaemonStatus()["connections_reading_paused"].get<int>() >= 1) break;
      }
    }
    EXPECT_GE(DaemonStatus()["connections_reading_paused"].get<int>(), 1);
  }  // closed with replies and requests unread: TearDown checks that all is released
}

// A connection that asks for shared rings at Hello and then writes them by hand.
struct RingClient {
  UniqueFd socket;
  std::unique_ptr<ipc::SharedRings> rings;
  UniqueFd memory;  // the rings' memfd, to map a second, unchecked view of them
  std::string buffer;

  static std::optional<RingClient> Open(const std::string& path) {
    auto fd = ipc::Connect(path);
    if (!fd.ok()) return std::nullopt;
    RingClient c;
    c.socket = std::move(fd).value();
    wire::ClientMessage hello;
    hello.mutable_hello()->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
    hello.mutable_hello()->set_shared_rings(true);
    EXPECT_TRUE(ipc::SendPacket(c.socket.get(), hello.SerializeAsString()).ok());
    size_t size = 0;
    auto got = ipc::RecvPacket(c.socket.get(), &c.buffer, &size, &c.memory);
    wire::ServerMessage welcome;
    if (!got.ok() || *got != ipc::RecvResult::kPacket ||
        !welcome.ParseFromArray(c.buffer.data(), static_cast<int>(size)) ||
        welcome.welcome().ring_capacity() == 0 || !c.memory.valid()) {
      ADD_FAILURE() << "no Welcome with shared rings";
      return std::nullopt;
    }
    auto rings = ipc::SharedRings::Map(c.memory.get(), welcome.welcome().ring_capacity());
    EXPECT_TRUE(rings.ok()) << rings.status().ToString();
    if (!rings.ok()) return std::nullopt;
    c.rings = std::move(rings).value();
    return c;
  }

  // The ring to the daemon as a hostile client writes it: a second view of the memory, without the
  // checks of ipc::Ring. Layout as in src/ipc/ring.cpp: each ring is a 4096-byte header page (the
  // read index at 0, the write index at 64) and then its data; this ring is the second.
  class RawRingToDaemon {
   public:
    explicit RawRingToDaemon(const RingClient& c)
        : capacity_(c.rings->capacity()), bytes_(2 * (4096 + size_t{capacity_})) {
      void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, c.memory.get(), 0);
      if (p != MAP_FAILED) base_ = static_cast<char*>(p) + 4096 + capacity_;
    }
    ~RawRingToDaemon() {
      if (base_ != nullptr) ::munmap(base_ - 4096 - capacity_, bytes_);
    }
    std::atomic<uint64_t>& tail() { return *reinterpret_cast<std::atomic<uint64_t>*>(base_ + 64); }
    char* data() { return base_ == nullptr ? nullptr : base_ + 4096; }

   private:
    uint32_t capacity_;
    size_t bytes_;
    char* base_ = nullptr;
  };

  // Pushes one packet for the daemon and rings the doorbell (the daemon may sleep).
  Status Push(const std::string& bytes) {
    bool wake = false;
    Status pushed = rings->to_creator().Push(bytes, &wake);
    ipc::RingDoorbell(socket.get());
    return pushed;
  }

  // The daemon's next message through the ring, or nothing within `timeout_ms`.
  std::optional<wire::ServerMessage> Receive(int timeout_ms = 5000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < deadline) {
      size_t size = 0;
      auto got = rings->from_creator().Pop(&buffer, &size);
      if (!got.ok()) return std::nullopt;
      if (*got == ipc::RecvResult::kPacket) {
        wire::ServerMessage m;
        if (!m.ParseFromArray(buffer.data(), static_cast<int>(size))) return std::nullopt;
        return m;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return std::nullopt;
  }

  // Expects a protocol-error Goodbye naming `what` in the ring, then the socket's end.
  void ExpectClosedFor(const std::string& what) {
    auto goodbye = Receive();
    ASSERT_TRUE(goodbye && goodbye->has_goodbye()) << what;
    EXPECT_THAT(goodbye->goodbye().status().message(), HasSubstr("protocol error")) << what;
    EXPECT_THAT(goodbye->goodbye().status().message(), HasSubstr(what));
    pollfd p{socket.get(), POLLIN, 0};
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(::poll(&p, 1, 100), 1);
      size_t size = 0;
      auto r = ipc::RecvPacket(socket.get(), &buffer, &size, nullptr, true);
      if (!r.ok() || *r == ipc::RecvResult::kClosed) return;
    }
    ADD_FAILURE() << "the daemon kept the connection open after " << what;
  }
};

TEST_F(Hostile, SharedRingsCarryRequestsAndRefuseWhatTheProtocolForbids) {
  {
    // What libatoll does: requests in the ring, a buffer on the socket with its place marked in
    // the ring by an empty packet.
    auto c = RingClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->Push(Noop(1).SerializeAsString()).ok());
    auto done = c->Receive();
    ASSERT_TRUE(done && done->has_complete());
    EXPECT_EQ(done->complete().request_id(), 1u);
    EXPECT_EQ(done->complete().status().code(), 0u);
    UniqueFd memfd = SealedMemfd(4096);
    ASSERT_TRUE(
        ipc::SendPacket(c->socket.get(), BufferAdd(1, 4096).SerializeAsString(), memfd.get()).ok());
    ASSERT_TRUE(c->Push("").ok());
    ASSERT_TRUE(c->Push(Fill(2, 1, 0, 4096, 1024, 7).SerializeAsString()).ok());
    done = c->Receive();
    ASSERT_TRUE(done && done->has_complete());
    EXPECT_EQ(done->complete().status().code(), 0u) << done->complete().status().message();
    void* mapped = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, memfd.get(), 0);
    ASSERT_NE(mapped, MAP_FAILED);
    EXPECT_EQ(static_cast<const int32_t*>(mapped)[1023], 7);
    ::munmap(mapped, 4096);
  }
  {
    auto c = RingClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->Push("").ok());  // a mark without its socket packet
    c->ExpectClosedFor("was not sent");
  }
  {
    auto c = RingClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    for (int i = 0; i < 65; ++i) {
      ASSERT_TRUE(ipc::SendPacket(c->socket.get(), Noop(i + 1).SerializeAsString()).ok());
    }
    c->ExpectClosedFor("without their place");
  }
  {
    // The client's write index, pushed past the ring's capacity.
    auto c = RingClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    RingClient::RawRingToDaemon raw(*c);
    ASSERT_NE(raw.data(), nullptr);
    raw.tail().store(uint64_t{c->rings->capacity()} * 3);
    ipc::RingDoorbell(c->socket.get());
    c->ExpectClosedFor("corrupted the shared ring");
  }
  {
    // A packet too large for the ring, written anyway: its length is refused.
    auto c = RingClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    RingClient::RawRingToDaemon raw(*c);
    ASSERT_NE(raw.data(), nullptr);
    uint32_t length = static_cast<uint32_t>(ipc::kMaxRingPacketBytes) + 1;
    std::memcpy(raw.data(), &length, sizeof(length));
    raw.tail().store(4 + length);
    ipc::RingDoorbell(c->socket.get());
    c->ExpectClosedFor("length");
  }
}

TEST_F(Hostile, RingClientThatDoesNotReadItsRepliesIsPausedThenCleanedUp) {
  {
    auto c = RingClient::Open(daemon_->socket());
    ASSERT_TRUE(c);
    // Replies fill the daemon's ring, then the socket, then the daemon stops reading requests;
    // the client's ring then fills up too.
    auto give_up = Clock::now() + std::chrono::seconds(10);
    uint64_t id = 0;
    int full = 0;
    while (Clock::now() < give_up) {
      Status pushed = c->Push(Noop(++id).SerializeAsString());
      if (pushed.code() == Code::kResourceExhausted) {
        --id;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (++full % 20 == 0 && DaemonStatus()["connections_reading_paused"].get<int>() >= 1) {
          break;
        }
        continue;
      }
      ASSERT_TRUE(pushed.ok()) << pushed.ToString();
    }
    EXPECT_GE(DaemonStatus()["connections_reading_paused"].get<int>(), 1);
    // Reading the replies resumes it: every request is answered once.
    std::set<uint64_t> answered;
    UniqueFd none;
    while (answered.size() < id) {
      auto m = c->Receive(1);
      if (m) {
        ASSERT_TRUE(m->has_complete());
        EXPECT_TRUE(answered.insert(m->complete().request_id()).second);
        continue;
      }
      size_t size = 0;
      auto r = ipc::RecvPacket(c->socket.get(), &c->buffer, &size, nullptr, true);
      ASSERT_TRUE(r.ok());
      if (*r != ipc::RecvResult::kPacket) {
        ASSERT_LT(Clock::now(), give_up + std::chrono::seconds(20))
            << answered.size() << " of " << id << " answered";
        continue;
      }
      if (ipc::IsDoorbell(c->buffer.data(), size)) continue;
      wire::ServerMessage m2;
      ASSERT_TRUE(m2.ParseFromArray(c->buffer.data(), static_cast<int>(size)));
      ASSERT_TRUE(m2.has_complete());
      EXPECT_TRUE(answered.insert(m2.complete().request_id()).second);
    }
    EXPECT_EQ(answered.size(), id);
  }  // and closed with its ring: TearDown checks that all is released
}

}  // namespace
}  // namespace atl::testing
