#include "ipc/ring.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <cstring>
#include <thread>

namespace atl::ipc {
namespace {

// The creator's rings and the peer's mapping of the same memory, as two processes would have them.
struct Pair {
  std::unique_ptr<SharedRings> creator;
  std::unique_ptr<SharedRings> peer;
};

Pair MakePair(uint32_t capacity = kRingCapacity) {
  Pair pair;
  auto created = SharedRings::Create(capacity);
  EXPECT_TRUE(created.ok()) << created.status().ToString();
  pair.creator = std::move(created).value();
  auto mapped = SharedRings::Map(pair.creator->fd(), capacity);
  EXPECT_TRUE(mapped.ok()) << mapped.status().ToString();
  pair.peer = std::move(mapped).value();
  return pair;
}

std::string PopString(Ring& ring) {
  std::string buffer;
  size_t size = 0;
  auto got = ring.Pop(&buffer, &size);
  EXPECT_TRUE(got.ok()) << got.status().ToString();
  if (!got.ok() || *got != RecvResult::kPacket) return "<none>";
  return buffer.substr(0, size);
}

TEST(Ring, CarriesPacketsBothWaysInOrderAcrossTheWrap) {
  Pair pair = MakePair(64 * 1024);
  bool wake = true;
  ASSERT_TRUE(pair.creator->from_creator().Push("to the peer", &wake).ok());
  EXPECT_FALSE(wake);
  ASSERT_TRUE(pair.peer->to_creator().Push("to the creator", &wake).ok());
  EXPECT_EQ(PopString(pair.peer->from_creator()), "to the peer");
  EXPECT_EQ(PopString(pair.creator->to_creator()), "to the creator");
  EXPECT_TRUE(pair.peer->from_creator().Empty());

  // Sizes that do not divide the capacity, so packets and their lengths straddle the wrap.
  Ring& out = pair.creator->from_creator();
  Ring& in = pair.peer->from_creator();
  for (int i = 0; i < 2000; ++i) {
    std::string packet(static_cast<size_t>(1 + (i * 7919) % 3001), static_cast<char>('a' + i % 26));
    packet += std::to_string(i);
    ASSERT_TRUE(out.Push(packet, &wake).ok()) << i;
    ASSERT_EQ(PopString(in), packet) << i;
  }
  std::string buffer;
  size_t size = 0;
  auto empty = in.Pop(&buffer, &size);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, RecvResult::kWouldBlock);
}

TEST(Ring, RefusesWhenFullAndPacketsTooLarge) {
  Pair pair = MakePair(64 * 1024);
  Ring& out = pair.creator->from_creator();
  bool wake = false;
  std::string big(kMaxRingPacketBytes + 1, 'x');
  Status refused = out.Push(big, &wake);
  EXPECT_EQ(refused.code(), Code::kInvalidArgument);
  std::string packet(1000, 'y');
  int pushed = 0;
  Status status;
  while ((status = out.Push(packet, &wake)).ok()) ++pushed;
  EXPECT_EQ(status.code(), Code::kResourceExhausted);
  EXPECT_EQ(pushed, 64 * 1024 / 1004);
  // Consuming one makes room for one.
  EXPECT_EQ(PopString(pair.peer->from_creator()), packet);
  EXPECT_TRUE(out.Push(packet, &wake).ok());
  EXPECT_EQ(out.Push(packet, &wake).code(), Code::kResourceExhausted);
  // An empty packet is a packet too.
  Pair other = MakePair(64 * 1024);
  ASSERT_TRUE(other.creator->from_creator().Push("", &wake).ok());
  std::string buffer;
  size_t size = 99;
  auto got = other.peer->from_creator().Pop(&buffer, &size);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, RecvResult::kPacket);
  EXPECT_EQ(size, 0u);
}

TEST(Ring, TellsOneProducerToWakeASleepingConsumer) {
  Pair pair = MakePair();
  Ring& in = pair.peer->from_creator();
  Ring& out = pair.creator->from_creator();
  bool wake = false;
  ASSERT_TRUE(in.PrepareToSleep());
  ASSERT_TRUE(out.Push("one", &wake).ok());
  EXPECT_TRUE(wake);
  ASSERT_TRUE(out.Push("two", &wake).ok());
  EXPECT_FALSE(wake) << "the consumer was woken once already";
  // A packet is waiting: the consumer must not sleep.
  EXPECT_FALSE(in.PrepareToSleep());
  ASSERT_TRUE(out.Push("three", &wake).ok());
  EXPECT_FALSE(wake);
  EXPECT_EQ(PopString(in), "one");
  EXPECT_EQ(PopString(in), "two");
  EXPECT_EQ(PopString(in), "three");
  ASSERT_TRUE(in.PrepareToSleep());
  in.Awake();
  ASSERT_TRUE(out.Push("four", &wake).ok());
  EXPECT_FALSE(wake) << "an awake consumer needs no doorbell";
}

// The consumer sleeps on a socket whenever the ring is empty; a lost wake-up would leave it asleep
// with packets queued, and the receive timeout would fail the test.
TEST(Ring, NoWakeUpIsLostBetweenThreads) {
  Pair pair = MakePair(64 * 1024);
  int sockets[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sockets), 0);
  UniqueFd producer_socket(sockets[0]), consumer_socket(sockets[1]);
  timeval tv{10, 0};
  ::setsockopt(consumer_socket.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  constexpr uint64_t kCount = 200000;
  std::thread producer([&] {
    Ring& out = pair.creator->from_creator();
    for (uint64_t i = 0; i < kCount;) {
      bool wake = false;
      Status pushed =
          out.Push(std::string_view(reinterpret_cast<const char*>(&i), sizeof(i)), &wake);
      if (pushed.code() == Code::kResourceExhausted) {
        std::this_thread::yield();
        continue;
      }
      ASSERT_TRUE(pushed.ok()) << pushed.ToString();
      if (wake) RingDoorbell(producer_socket.get());
      ++i;
    }
  });
  Ring& in = pair.peer->from_creator();
  std::string buffer, socket_buffer;
  uint64_t expected = 0, sleeps = 0;
  while (expected < kCount) {
    size_t size = 0;
    auto got = in.Pop(&buffer, &size);
    ASSERT_TRUE(got.ok());
    if (*got == RecvResult::kPacket) {
      uint64_t value = 0;
      ASSERT_EQ(size, sizeof(value));
      std::memcpy(&value, buffer.data(), sizeof(value));
      ASSERT_EQ(value, expected);
      ++expected;
      continue;
    }
    if (!in.PrepareToSleep()) continue;
    ++sleeps;
    auto doorbell = RecvPacket(consumer_socket.get(), &socket_buffer, &size, nullptr);
    in.Awake();
    ASSERT_TRUE(doorbell.ok()) << "the consumer slept through a push: "
                               << doorbell.status().ToString();
    ASSERT_EQ(*doorbell, RecvResult::kPacket);
    ASSERT_TRUE(IsDoorbell(socket_buffer.data(), size));
  }
  producer.join();
  RecordProperty("sleeps", static_cast<int>(sleeps));
}

// The shared memory as a hostile peer could write it.
struct RawRing {
  char* base;
  std::atomic<uint64_t>& head() { return *reinterpret_cast<std::atomic<uint64_t>*>(base); }
  std::atomic<uint64_t>& tail() { return *reinterpret_cast<std::atomic<uint64_t>*>(base + 64); }
  char* data() { return base + 4096; }
};

TEST(Ring, ChecksWhatAHostilePeerWrites) {
  constexpr uint32_t kCapacity = 64 * 1024;
  Pair pair = MakePair(kCapacity);
  const size_t bytes = 2 * (4096 + kCapacity);
  void* raw = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, pair.creator->fd(), 0);
  ASSERT_NE(raw, MAP_FAILED);
  RawRing to_peer{static_cast<char*>(raw)};
  RawRing to_creator{static_cast<char*>(raw) + 4096 + kCapacity};
  std::string buffer;
  size_t size = 0;

  // A write index beyond the capacity.
  to_creator.tail().store(kCapacity + 1);
  auto got = pair.creator->to_creator().Pop(&buffer, &size);
  EXPECT_EQ(got.status().code(), Code::kDataLoss);
  // A length beyond what was published, and beyond the largest packet.
  to_creator.tail().store(8);
  uint32_t length = 100;
  std::memcpy(to_creator.data(), &length, sizeof(length));
  EXPECT_EQ(pair.creator->to_creator().Pop(&buffer, &size).status().code(), Code::kDataLoss);
  length = 0xffffffff;
  std::memcpy(to_creator.data(), &length, sizeof(length));
  to_creator.tail().store(kCapacity);
  EXPECT_EQ(pair.creator->to_creator().Pop(&buffer, &size).status().code(), Code::kDataLoss);
  // A read index that runs ahead of what was written.
  bool wake = false;
  to_peer.head().store(12345);
  EXPECT_EQ(pair.creator->from_creator().Push("x", &wake).code(), Code::kDataLoss);
  ::munmap(raw, bytes);
}

TEST(Ring, MapChecksSizeSealsAndCapacity) {
  EXPECT_EQ(SharedRings::Create(1000).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(SharedRings::Create(16 * 1024).status().code(), Code::kInvalidArgument);
  auto created = SharedRings::Create(64 * 1024);
  ASSERT_TRUE(created.ok());
  auto wrong_capacity = SharedRings::Map((*created)->fd(), 128 * 1024);
  EXPECT_EQ(wrong_capacity.status().code(), Code::kInvalidArgument);
  EXPECT_NE(wrong_capacity.status().message().find("bytes"), std::string::npos);

  UniqueFd unsealed(::memfd_create("t", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(unsealed.get(), 2 * (4096 + 64 * 1024)), 0);
  auto refused = SharedRings::Map(unsealed.get(), 64 * 1024);
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("sealed"), std::string::npos);
}

}  // namespace
}  // namespace atl::ipc
