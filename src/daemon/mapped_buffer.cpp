#include "daemon/mapped_buffer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace atl::daemon {

StatusOr<std::shared_ptr<MappedBuffer>> MappedBuffer::Map(int fd, uint64_t size_bytes) {
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    return InvalidArgumentError(
        "the buffer's file descriptor is not a sealable memfd; allocate "
        "buffers with atoll_alloc");
  }
  if ((seals & F_SEAL_SHRINK) == 0) {
    return InvalidArgumentError(
        "the buffer is not sealed against shrinking (F_SEAL_SHRINK); "
        "allocate buffers with atoll_alloc");
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError("fstat of a client buffer", errno);
  if (!S_ISREG(st.st_mode) || st.st_size < 0 || static_cast<uint64_t>(st.st_size) < size_bytes) {
    return InvalidArgumentError("the buffer declares " + std::to_string(size_bytes) +
                                " bytes but its memfd holds " + std::to_string(st.st_size));
  }
  auto buffer = std::shared_ptr<MappedBuffer>(new MappedBuffer());
  buffer->size_bytes_ = size_bytes;
  // Only the declared bytes (in whole pages, at least one) are mapped: a sparse memfd of any size
  // costs its client nothing, and must not cost the daemon address space either.
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t wanted =
      size_bytes > UINT64_MAX - page ? UINT64_MAX : (size_bytes + page - 1) / page * page;
  buffer->mapped_bytes_ =
      std::min<uint64_t>(static_cast<uint64_t>(st.st_size), std::max(wanted, page));
  if (buffer->mapped_bytes_ == 0) return buffer;  // nothing to map; data() stays null
  void* p = ::mmap(nullptr, buffer->mapped_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoError("mapping a client buffer", errno);
  buffer->data_ = static_cast<uint8_t*>(p);
  return buffer;
}

MappedBuffer::~MappedBuffer() {
  if (data_ == nullptr) return;
  if (on_unmap_) on_unmap_(data_);
  ::munmap(data_, mapped_bytes_);
}

}  // namespace atl::daemon
