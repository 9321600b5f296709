// A protobuf message that one thread builds or parses again for every packet, on an arena that is
// reset each time: its submessages and strings come from one reused block instead of the heap.
// (Reusing a plain message does not avoid the heap: Clear() frees a oneof's submessage, and the
// next packet allocates it again.) Thread safety: none; one per thread or under a lock.
#pragma once

#include <google/protobuf/arena.h>

#include <cstddef>

namespace atl::ipc {

template <typename Message>
class ScratchMessage {
 public:
  ScratchMessage() : arena_(Options(block_)) {}
  ScratchMessage(const ScratchMessage&) = delete;
  ScratchMessage& operator=(const ScratchMessage&) = delete;

  // An empty message. The previous one, and everything taken from it by pointer or reference,
  // is gone.
  Message& Fresh() {
    arena_.Reset();
    message_ = google::protobuf::Arena::CreateMessage<Message>(&arena_);
    return *message_;
  }

 private:
  // Enough for a request or an event with a few arguments; larger ones take more blocks, which
  // the next Fresh() frees.
  static constexpr size_t kBlockBytes = 4096;

  static google::protobuf::ArenaOptions Options(char* block) {
    google::protobuf::ArenaOptions options;
    options.initial_block = block;
    options.initial_block_size = kBlockBytes;
    return options;
  }

  alignas(16) char block_[kBlockBytes];
  google::protobuf::Arena arena_;
  Message* message_ = nullptr;
};

}  // namespace atl::ipc
