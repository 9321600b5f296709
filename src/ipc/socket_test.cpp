#include "ipc/socket.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <filesystem>

namespace atl::ipc {
namespace {

std::string TempSocketPath() {
  return (std::filesystem::temp_directory_path() /
          ("atoll-ipc-test-" + std::to_string(::getpid()) + ".sock"))
      .string();
}

TEST(Socket, ConnectWithoutDaemonSaysHowToStartIt) {
  auto fd = Connect("/tmp/atoll-no-such-socket.sock");
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Code::kUnavailable);
  EXPECT_NE(fd.status().message().find("atolld"), std::string::npos);
}

TEST(Socket, SendsPacketsWithFdsAndReportsPeer) {
  std::string path = TempSocketPath();
  auto listener = Listen(path, 0600);
  ASSERT_TRUE(listener.ok()) << listener.status().ToString();
  auto client = Connect(path);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  UniqueFd server(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server.valid());

  int memfd = ::memfd_create("t", MFD_CLOEXEC);
  ASSERT_EQ(::ftruncate(memfd, 123), 0);
  ASSERT_TRUE(SendPacket(client->get(), "hello", memfd).ok());
  ::close(memfd);
  ASSERT_TRUE(SendPacket(client->get(), "second").ok());

  std::string buffer;
  size_t size = 0;
  UniqueFd received;
  auto r = RecvPacket(server.get(), &buffer, &size, &received);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(*r, RecvResult::kPacket);
  EXPECT_EQ(std::string(buffer.data(), size), "hello");
  ASSERT_TRUE(received.valid());
  struct stat st;
  ASSERT_EQ(::fstat(received.get(), &st), 0);
  EXPECT_EQ(st.st_size, 123);

  UniqueFd none;
  r = RecvPacket(server.get(), &buffer, &size, &none);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(std::string(buffer.data(), size), "second");
  EXPECT_FALSE(none.valid());

  auto peer = GetPeerCredentials(server.get());
  ASSERT_TRUE(peer.ok());
  EXPECT_EQ(peer->pid, ::getpid());
  EXPECT_EQ(peer->uid, ::getuid());

  r = RecvPacket(server.get(), &buffer, &size, &none, /*dont_wait=*/true);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, RecvResult::kWouldBlock);
  client->reset();
  r = RecvPacket(server.get(), &buffer, &size, &none);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, RecvResult::kClosed);
  ::unlink(path.c_str());
}

TEST(Socket, OversizedPacketIsRefused) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  int big = 1 << 20;
  ::setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  std::string huge(kMaxPacketBytes + 10, 'x');
  ASSERT_TRUE(SendPacket(a.get(), huge).ok());
  std::string buffer;
  size_t size = 0;
  auto r = RecvPacket(b.get(), &buffer, &size, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kOutOfRange);
}

TEST(Socket, ListenRefusesToReplaceALiveDaemonOrAFile) {
  std::string path = TempSocketPath() + ".2";
  auto first = Listen(path, 0600);
  ASSERT_TRUE(first.ok());
  auto second = Listen(path, 0600);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Code::kAlreadyExists);
  first->reset();
  ::unlink(path.c_str());
  int f = ::open(path.c_str(), O_CREAT | O_WRONLY, 0600);
  ::close(f);
  auto third = Listen(path, 0600);
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), Code::kFailedPrecondition);
  ::unlink(path.c_str());
}

TEST(Socket, OverlongPathIsRejectedClearly) {
  auto fd = Connect(std::string(200, 'a'));
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace atl::ipc
