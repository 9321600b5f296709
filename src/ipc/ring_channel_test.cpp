#include "ipc/ring_channel.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>

#include <gtest/gtest.h>
#include <set>
#include <thread>

namespace atl::ipc {
namespace {

// Two ends of a socketpair with shared rings beside it, as atolld and a device process have them.
struct Link {
  std::unique_ptr<SharedRings> creator, peer;
  UniqueFd a, b;

  explicit Link(uint32_t capacity = 64 * 1024) {
    int pair[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
    a.reset(pair[0]);
    b.reset(pair[1]);
    timeval tv{10, 0};  // a lost wake-up fails the test instead of hanging it
    ::setsockopt(a.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(b.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    creator = std::move(SharedRings::Create(capacity)).value();
    peer = std::move(SharedRings::Map(creator->fd(), capacity)).value();
  }
  // The creator's end sends marked, the peer's end unordered (as atolld and a device process).
  RingChannel CreatorEnd() {
    return RingChannel(a.get(), &creator->from_creator(), RingOrder::kMarked,
                       &creator->to_creator(), RingOrder::kUnordered);
  }
  RingChannel PeerEnd() {
    return RingChannel(b.get(), &peer->to_creator(), RingOrder::kUnordered, &peer->from_creator(),
                       RingOrder::kMarked);
  }
};

UniqueFd MemfdOfSize(size_t size) {
  UniqueFd fd(::memfd_create("t", MFD_CLOEXEC));
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  return fd;
}

off_t SizeOf(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_size;
}

// Packets with fds and packets too large for the ring take the socket; the marked side hands
// them out in their place among the ring's packets, whether the receiver polls or sleeps.
void MarkedOrderHolds(uint32_t spin_us) {
  Link link;
  RingChannel sender = link.CreatorEnd();
  RingChannel receiver = link.PeerEnd();
  constexpr int kCount = 3000;
  std::thread send([&] {
    for (int i = 0; i < kCount; ++i) {
      std::string packet = std::to_string(i);
      if (i % 7 == 3) {
        UniqueFd fd = MemfdOfSize(static_cast<size_t>(i) + 1);
        ASSERT_TRUE(sender.Send(packet, fd.get()).ok());
      } else if (i % 11 == 5) {
        packet.resize(kMaxRingPacketBytes + 100, 'L');
        ASSERT_TRUE(sender.Send(packet).ok());
      } else {
        ASSERT_TRUE(sender.Send(packet).ok());
      }
    }
  });
  std::string buffer;
  for (int i = 0; i < kCount; ++i) {
    size_t size = 0;
    UniqueFd fd;
    auto got = receiver.Receive(&buffer, &size, &fd, spin_us);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_EQ(*got, RecvResult::kPacket) << i;
    std::string expected = std::to_string(i);
    ASSERT_EQ(std::string(buffer.data(), expected.size()), expected) << "out of order at " << i;
    if (i % 7 == 3) {
      ASSERT_TRUE(fd.valid()) << i;
      EXPECT_EQ(SizeOf(fd.get()), i + 1);
    } else {
      EXPECT_FALSE(fd.valid()) << i;
      if (i % 11 == 5) {
        EXPECT_EQ(size, kMaxRingPacketBytes + 100);
      } else {
        EXPECT_EQ(size, expected.size());
      }
    }
  }
  send.join();
}

TEST(RingChannel, MarkedSocketPacketsKeepTheirPlaceWhenTheReceiverSleeps) { MarkedOrderHolds(0); }
TEST(RingChannel, MarkedSocketPacketsKeepTheirPlaceWhenTheReceiverPolls) { MarkedOrderHolds(200); }

TEST(RingChannel, UnorderedSideOverflowsToTheSocketAndLosesNothing) {
  Link link;
  RingChannel sender = link.PeerEnd();
  RingChannel receiver = link.CreatorEnd();
  // More than the ring holds, sent before anyone reads: the rest takes the socket.
  constexpr int kCount = 1500;  // about 1300 fit; the socket queues the rest without blocking
  std::thread send([&] {
    for (int i = 0; i < kCount; ++i) {
      std::string packet = std::to_string(i) + std::string(40, '.');
      ASSERT_TRUE(sender.Send(packet).ok()) << i;
    }
  });
  send.join();
  std::set<int> seen;
  std::string buffer;
  for (int i = 0; i < kCount; ++i) {
    size_t size = 0;
    auto got = receiver.Receive(&buffer, &size, nullptr, 0);
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(*got, RecvResult::kPacket);
    EXPECT_TRUE(seen.insert(std::stoi(std::string(buffer.data(), size))).second);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kCount));
}

TEST(RingChannel, WhatWasSentBeforeTheCloseIsReceivedThenClosed) {
  Link link;
  RingChannel receiver = link.CreatorEnd();
  {
    RingChannel sender = link.PeerEnd();
    ASSERT_TRUE(sender.Send("last words").ok());
    ASSERT_TRUE(sender.Send(std::string(kMaxRingPacketBytes + 1, 'x')).ok());
    link.b.reset();
  }
  std::string buffer;
  size_t size = 0;
  std::set<size_t> sizes;
  for (int i = 0; i < 2; ++i) {
    auto got = receiver.Receive(&buffer, &size, nullptr, 0);
    ASSERT_TRUE(got.ok());
    ASSERT_EQ(*got, RecvResult::kPacket);
    sizes.insert(size);
  }
  EXPECT_EQ(sizes, (std::set<size_t>{10, kMaxRingPacketBytes + 1}));
  auto closed = receiver.Receive(&buffer, &size, nullptr, 50);
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(*closed, RecvResult::kClosed);
}

TEST(RingChannel, AMarkedSenderWaitingForRoomGivesUpWhenThePeerHasGone) {
  Link link;
  RingChannel sender = link.CreatorEnd();
  std::string packet(1000, 'p');
  Status sent;
  std::thread closer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    link.b.reset();
  });
  for (int i = 0; i < 1000 && sent.ok(); ++i) sent = sender.Send(packet);
  closer.join();
  EXPECT_EQ(sent.code(), Code::kUnavailable) << sent.ToString();
}

}  // namespace
}  // namespace atl::ipc
