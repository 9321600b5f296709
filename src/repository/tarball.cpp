#include "repository/tarball.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"

namespace atl::repository::internal {
namespace {

namespace fs = std::filesystem;

constexpr char kManifestName[] = "bitstream.json";
constexpr uint64_t kMaxExtractedBytes = 4ull << 30;
constexpr size_t kMaxTarballEntries = 10000;

Status SysError(const std::string& what) { return ErrnoError(what, errno); }

using ArchivePtr = std::unique_ptr<struct archive, int (*)(struct archive*)>;

// The components of a tarball entry's path, without "." ones; refuses absolute paths and "..".
StatusOr<std::vector<std::string>> SafeComponents(const char* name, const fs::path& tarball) {
  if (name == nullptr) {
    return InvalidArgumentError(tarball.string() +
                                ": an entry has no name; the tarball is damaged");
  }
  std::string_view text(name);
  if (text.starts_with("/")) {
    return InvalidArgumentError(tarball.string() + ": entry '" + std::string(text) +
                                "' has an absolute path; pack the folder with relative paths");
  }
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('/', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view part = text.substr(start, end - start);
    if (part == "..") {
      return InvalidArgumentError(tarball.string() + ": entry '" + std::string(text) +
                                  "' leads outside the tarball through '..'; it is refused");
    }
    if (!part.empty() && part != ".") parts.emplace_back(part);
    start = end + 1;
  }
  return parts;
}

// Opens the folder that holds the last component, creating folders on the way when `create`.
// O_NOFOLLOW on every step: nothing is written through a link, wherever the link points.
StatusOr<UniqueFd> OpenParent(int top, const std::vector<std::string>& parts, bool create,
                              const fs::path& tarball, const char* entry_name) {
  UniqueFd current(::dup(top));
  if (!current.valid()) return SysError("cannot duplicate a descriptor");
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    UniqueFd next(::openat(current.get(), parts[i].c_str(), flags));
    if (!next.valid() && errno == ENOENT && create) {
      if (::mkdirat(current.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
        return SysError("cannot create folder '" + parts[i] + "' while extracting " +
                        tarball.string());
      }
      next = UniqueFd(::openat(current.get(), parts[i].c_str(), flags));
    }
    if (!next.valid()) {
      if (errno == ELOOP || errno == ENOTDIR) {
        return InvalidArgumentError(tarball.string() + ": entry '" + entry_name +
                                    "' goes through '" + parts[i] +
                                    "', which is a link or a file, not a folder; it is refused");
      }
      return SysError("cannot open '" + parts[i] + "' while extracting " + tarball.string());
    }
    current = std::move(next);
  }
  return current;
}

Status ExtractRegular(struct archive* archive, int parent, const std::string& name,
                      const fs::path& tarball, const char* entry_name, uint64_t* total) {
  UniqueFd out(
      ::openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!out.valid()) {
    if (errno == EEXIST) {
      return InvalidArgumentError(tarball.string() + ": entry '" + entry_name +
                                  "' appears twice; pack each file once");
    }
    return SysError("cannot create '" + std::string(entry_name) + "' while extracting " +
                    tarball.string());
  }
  const void* block = nullptr;
  size_t size = 0;
  la_int64_t offset = 0;
  while (true) {
    int result = archive_read_data_block(archive, &block, &size, &offset);
    if (result == ARCHIVE_EOF) break;
    if (result < ARCHIVE_WARN) {
      return InvalidArgumentError(tarball.string() + ": cannot read entry '" + entry_name +
                                  "': " + archive_error_string(archive));
    }
    *total += size;
    if (*total > kMaxExtractedBytes) {
      return ResourceExhaustedError(tarball.string() + ": holds more than " +
                                    std::to_string(kMaxExtractedBytes >> 30) +
                                    " GiB; install a smaller package or install from a folder");
    }
    const char* bytes = static_cast<const char*>(block);
    while (size > 0) {
      ssize_t n = ::pwrite(out.get(), bytes, size, offset);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return SysError("cannot write '" + std::string(entry_name) + "' while extracting");
      bytes += n;
      size -= static_cast<size_t>(n);
      offset += n;
    }
  }
  return OkStatus();
}

Status ExtractSymlink(const char* target, int parent, const std::vector<std::string>& parts,
                      const fs::path& tarball, const char* entry_name) {
  std::string_view text = target == nullptr ? "" : target;
  std::string refused =
      tarball.string() + ": link '" + entry_name + "' -> '" + std::string(text) + "' ";
  if (text.empty()) return InvalidArgumentError(refused + "has no target; the tarball is damaged");
  if (text.starts_with("/")) {
    return InvalidArgumentError(refused + "points to an absolute path; it is refused");
  }
  int64_t depth = static_cast<int64_t>(parts.size()) - 1;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('/', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view part = text.substr(start, end - start);
    if (part == "..") {
      if (--depth < 0)
        return InvalidArgumentError(refused + "leads outside the tarball; it is refused");
    } else if (!part.empty() && part != ".") {
      ++depth;
    }
    start = end + 1;
  }
  if (::symlinkat(std::string(text).c_str(), parent, parts.back().c_str()) != 0) {
    return SysError("cannot create link '" + std::string(entry_name) + "' while extracting " +
                    tarball.string());
  }
  return OkStatus();
}

const char* FileTypeName(unsigned type) {
  switch (type) {
    case AE_IFCHR:
      return "a character device";
    case AE_IFBLK:
      return "a block device";
    case AE_IFIFO:
      return "a fifo";
    case AE_IFSOCK:
      return "a socket";
    default:
      return "of an unknown file type";
  }
}

}  // namespace

Status ExtractTarball(const fs::path& tarball, const fs::path& destination) {
  ArchivePtr archive(archive_read_new(), archive_read_free);
  if (!archive) return InternalError("libarchive could not allocate a reader");
  archive_read_support_filter_all(archive.get());
  archive_read_support_format_tar(archive.get());
  if (archive_read_open_filename(archive.get(), tarball.c_str(), 65536) != ARCHIVE_OK) {
    return InvalidArgumentError(tarball.string() +
                                " is neither a folder nor a tarball (.tar, .tar.gz, .tgz): " +
                                archive_error_string(archive.get()));
  }
  UniqueFd top(::open(destination.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!top.valid()) return SysError("cannot open " + destination.string());
  uint64_t total = 0;
  size_t count = 0;
  while (true) {
    struct archive_entry* entry = nullptr;
    int result = archive_read_next_header(archive.get(), &entry);
    if (result == ARCHIVE_EOF) break;
    if (result < ARCHIVE_WARN) {
      std::string why =
          archive_error_string(archive.get()) ? archive_error_string(archive.get()) : "";
      return InvalidArgumentError(tarball.string() +
                                  (count == 0
                                       ? " is neither a folder nor a tarball (.tar, .tar.gz, "
                                         ".tgz): "
                                       : ": the tarball is damaged: ") +
                                  why);
    }
    if (++count > kMaxTarballEntries) {
      return ResourceExhaustedError(tarball.string() + ": holds more than " +
                                    std::to_string(kMaxTarballEntries) +
                                    " entries; a package needs only bitstream.json and a binary");
    }
    const char* name = archive_entry_pathname(entry);
    ATOLL_ASSIGN_OR_RETURN(std::vector<std::string> parts, SafeComponents(name, tarball));
    if (parts.empty()) continue;
    unsigned type = archive_entry_filetype(entry);
    const char* hardlink = archive_entry_hardlink(entry);
    if (hardlink == nullptr && type == AE_IFDIR) {
      parts.emplace_back(".");
      ATOLL_ASSIGN_OR_RETURN(UniqueFd folder, OpenParent(top.get(), parts, true, tarball, name));
      continue;
    }
    ATOLL_ASSIGN_OR_RETURN(UniqueFd parent, OpenParent(top.get(), parts, true, tarball, name));
    if (hardlink != nullptr) {
      ATOLL_ASSIGN_OR_RETURN(std::vector<std::string> target, SafeComponents(hardlink, tarball));
      if (target.empty()) {
        return InvalidArgumentError(tarball.string() + ": hard link '" + name +
                                    "' has no target; the tarball is damaged");
      }
      ATOLL_ASSIGN_OR_RETURN(UniqueFd target_parent,
                             OpenParent(top.get(), target, false, tarball, hardlink));
      if (::linkat(target_parent.get(), target.back().c_str(), parent.get(), parts.back().c_str(),
                   0) != 0) {
        return SysError(tarball.string() + ": cannot create hard link '" + name + "' to '" +
                        hardlink + "'");
      }
    } else if (type == AE_IFREG) {
      ATOLL_RETURN_IF_ERROR(
          ExtractRegular(archive.get(), parent.get(), parts.back(), tarball, name, &total));
    } else if (type == AE_IFLNK) {
      ATOLL_RETURN_IF_ERROR(
          ExtractSymlink(archive_entry_symlink(entry), parent.get(), parts, tarball, name));
    } else {
      return InvalidArgumentError(tarball.string() + ": entry '" + name + "' is " +
                                  FileTypeName(type) +
                                  "; a package holds only regular files, folders and links");
    }
  }
  return OkStatus();
}

// The extracted package: bitstream.json at the top, or inside the tarball's only folder.
StatusOr<fs::path> FindPackageFolder(const fs::path& extracted, const fs::path& tarball) {
  std::error_code error;
  if (fs::exists(fs::symlink_status(extracted / kManifestName, error))) return extracted;
  std::vector<fs::path> visible;
  for (const fs::directory_entry& entry : fs::directory_iterator(extracted, error)) {
    if (!entry.path().filename().string().starts_with(".")) visible.push_back(entry.path());
  }
  if (visible.size() == 1 && fs::is_directory(fs::symlink_status(visible[0], error)) &&
      fs::exists(fs::symlink_status(visible[0] / kManifestName, error))) {
    return visible[0];
  }
  return NotFoundError(tarball.string() +
                       ": no bitstream.json at the top of the tarball or inside its only folder; "
                       "pack the folder that holds bitstream.json and the binary");
}

}  // namespace atl::repository::internal
