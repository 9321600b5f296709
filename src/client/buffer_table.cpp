#include "client/buffer_table.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <mutex>
#include <shared_mutex>

namespace atl::client {

namespace {

struct Table {
  std::shared_mutex mutex;
  std::map<uintptr_t, std::shared_ptr<const Buffer>> by_base;  // GUARDED_BY(mutex)
};

Table& GetTable() {
  static Table* table = new Table();  // never destroyed: buffers may be freed from atexit paths
  return *table;
}

std::atomic<uint64_t> next_id{1};

size_t PageSize() {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

Buffer::~Buffer() {
  if (base != nullptr) ::munmap(base, mapped_bytes);
  if (fd >= 0) ::close(fd);
}

StatusOr<std::shared_ptr<const Buffer>> AllocateBuffer(size_t size_bytes) {
  size_t page = PageSize();
  if (size_bytes > (SIZE_MAX - page)) {
    return ResourceExhaustedError("cannot allocate " + std::to_string(size_bytes) + " bytes");
  }
  size_t mapped = size_bytes == 0 ? page : (size_bytes + page - 1) / page * page;
  auto buffer = std::make_shared<Buffer>();
  buffer->fd = ::memfd_create("atoll-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (buffer->fd < 0) return ErrnoError("memfd_create", errno);
  if (::ftruncate(buffer->fd, static_cast<off_t>(mapped)) != 0) {
    return ErrnoError("ftruncate of a " + std::to_string(mapped) + "-byte buffer", errno);
  }
  // The daemon maps this memory too: once sealed, nobody can shrink it under the daemon's feet.
  if (::fcntl(buffer->fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
    return ErrnoError("sealing an Atoll buffer", errno);
  }
  void* base = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, buffer->fd, 0);
  if (base == MAP_FAILED) return ErrnoError("mmap of " + std::to_string(mapped) + " bytes", errno);
  buffer->base = base;
  buffer->size_bytes = size_bytes;
  buffer->mapped_bytes = mapped;
  buffer->id = next_id.fetch_add(1, std::memory_order_relaxed);
  Table& table = GetTable();
  std::unique_lock lock(table.mutex);
  table.by_base.emplace(reinterpret_cast<uintptr_t>(base), buffer);
  return std::shared_ptr<const Buffer>(buffer);
}

StatusOr<std::shared_ptr<const Buffer>> ReleaseBuffer(void* base) {
  Table& table = GetTable();
  std::unique_lock lock(table.mutex);
  auto it = table.by_base.find(reinterpret_cast<uintptr_t>(base));
  if (it == table.by_base.end()) {
    return NotFoundError(
        "pointer is not the start of an Atoll buffer (already freed, or not "
        "allocated with atoll_alloc)");
  }
  auto buffer = std::move(it->second);
  table.by_base.erase(it);
  return buffer;
}

StatusOr<std::shared_ptr<const Buffer>> FindBufferAt(const void* base) {
  Table& table = GetTable();
  std::shared_lock lock(table.mutex);
  auto it = table.by_base.find(reinterpret_cast<uintptr_t>(base));
  if (it == table.by_base.end()) {
    return NotFoundError("pointer is not the start of an Atoll buffer");
  }
  return it->second;
}

StatusOr<BufferRange> FindRange(const void* data, size_t size_bytes) {
  auto address = reinterpret_cast<uintptr_t>(data);
  Table& table = GetTable();
  std::shared_lock lock(table.mutex);
  auto it = table.by_base.upper_bound(address);
  if (it == table.by_base.begin()) {
    return InvalidArgumentError(
        "pointer is not inside any Atoll buffer: allocate arrays with atoll_alloc, "
        "atoll::vector or inaccel::vector (a freed buffer cannot be used)");
  }
  --it;
  const auto& buffer = it->second;
  uint64_t offset = address - it->first;
  // A zero-size buffer still owns its first byte's address, so an empty range there is fine.
  if (offset > buffer->size_bytes ||
      (offset == buffer->size_bytes && buffer->size_bytes != 0 && size_bytes != 0)) {
    return InvalidArgumentError(
        "pointer is not inside any Atoll buffer: allocate arrays with atoll_alloc, "
        "atoll::vector or inaccel::vector (a freed buffer cannot be used)");
  }
  if (size_bytes > buffer->size_bytes - offset) {
    return InvalidArgumentError("range of " + std::to_string(size_bytes) + " bytes at offset " +
                                std::to_string(offset) + " runs past the end of its " +
                                std::to_string(buffer->size_bytes) + "-byte Atoll buffer");
  }
  return BufferRange{buffer, offset};
}

}  // namespace atl::client
