#include "repository/repository.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <utility>

#include "repository/manifest_internal.h"

namespace atoll::repository {
namespace {

namespace fs = std::filesystem;

constexpr char kManifestName[] = "bitstream.json";
constexpr char kStagingName[] = ".staging";
constexpr char kGenerationName[] = ".generation";
constexpr char kLockName[] = ".lock";
constexpr uint64_t kMaxManifestBytes = 16ull << 20;
constexpr uint64_t kMaxExtractedBytes = 4ull << 30;
constexpr size_t kMaxTarballEntries = 10000;
constexpr size_t kMinChecksumPrefix = 8;
constexpr size_t kChecksumLength = 64;
constexpr size_t kCopyChunk = 1 << 20;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

Status SysError(const std::string& what) { return ErrnoError(what, errno); }

// Removes a staging folder unless the install moved it into place.
class RemoveOnExit {
 public:
  explicit RemoveOnExit(fs::path path) : path_(std::move(path)) {}
  RemoveOnExit(const RemoveOnExit&) = delete;
  RemoveOnExit& operator=(const RemoveOnExit&) = delete;
  ~RemoveOnExit() {
    if (path_.empty()) return;
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  void Release() { path_.clear(); }

 private:
  fs::path path_;
};

class Sha256 {
 public:
  Sha256() : context_(EVP_MD_CTX_new()) {
    if (context_ != nullptr && EVP_DigestInit_ex(context_, EVP_sha256(), nullptr) != 1) {
      EVP_MD_CTX_free(context_);
      context_ = nullptr;
    }
  }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  ~Sha256() { EVP_MD_CTX_free(context_); }

  bool ok() const { return context_ != nullptr && ok_; }
  void Update(const void* data, size_t size) {
    if (context_ != nullptr && EVP_DigestUpdate(context_, data, size) != 1) ok_ = false;
  }
  StatusOr<std::string> Hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (!ok() || EVP_DigestFinal_ex(context_, digest, &size) != 1) {
      return InternalError("OpenSSL could not compute a sha256; check the OpenSSL installation");
    }
    static const char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned int i = 0; i < size; ++i) {
      hex += kHex[digest[i] >> 4];
      hex += kHex[digest[i] & 0xf];
    }
    return hex;
  }

 private:
  EVP_MD_CTX* context_;
  bool ok_ = true;
};

StatusOr<std::string> ReadSmallFile(const fs::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return SysError("cannot open " + path.string());
  std::string bytes;
  char buffer[65536];
  while (true) {
    ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return SysError("cannot read " + path.string());
    if (n == 0) break;
    bytes.append(buffer, static_cast<size_t>(n));
    if (bytes.size() > kMaxManifestBytes) {
      return InvalidArgumentError(path.string() + ": larger than " +
                                  std::to_string(kMaxManifestBytes >> 20) +
                                  " MiB, which no manifest is; check that it is the right file");
    }
  }
  return bytes;
}

Status WriteAll(int fd, const void* data, size_t size, const fs::path& path) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, bytes, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return SysError("cannot write " + path.string());
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return OkStatus();
}

Status SyncFd(int fd, const fs::path& path) {
  if (::fsync(fd) != 0) return SysError("cannot flush " + path.string() + " to disk");
  return OkStatus();
}

Status SyncFolder(const fs::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return SysError("cannot open folder " + path.string());
  return SyncFd(fd.get(), path);
}

Status WriteNewFile(const fs::path& path, std::string_view bytes) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return SysError("cannot create " + path.string());
  ATOLL_RETURN_IF_ERROR(WriteAll(fd.get(), bytes.data(), bytes.size(), path));
  return SyncFd(fd.get(), path);
}

// Holds an exclusive flock of <root>/.lock; installs and removes in any process serialise on it.
class RootLock {
 public:
  static StatusOr<RootLock> Acquire(const fs::path& root) {
    fs::path path = root / kLockName;
    Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd.valid()) {
      return SysError("cannot open the repository lock " + path.string() +
                      " (run as a user who can write to " + root.string() + ")");
    }
    while (::flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR) return SysError("cannot lock " + path.string());
    }
    return RootLock(std::move(fd));
  }

 private:
  explicit RootLock(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;  // closing it releases the lock
};

Status EnsureRoot(const fs::path& root) {
  std::error_code error;
  fs::create_directories(root, error);
  if (error) {
    return Status(error == std::errc::permission_denied ? Code::kPermissionDenied : Code::kInternal,
                  "cannot create the repository folder " + root.string() + ": " +
                      error.message() + "; create it or run as a user who can write there");
  }
  if (!fs::is_directory(root, error)) {
    return FailedPreconditionError("the repository " + root.string() +
                                   " is not a folder; move that file away or choose another root");
  }
  return OkStatus();
}

// Only called with the root lock held, when no other install can be using the staging area.
void RemoveStaleStaging(const fs::path& root) {
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(root / kStagingName, error)) {
    std::error_code ignored;
    fs::remove_all(entry.path(), ignored);
  }
}

StatusOr<fs::path> MakeStaging(const fs::path& root) {
  fs::path area = root / kStagingName;
  std::error_code error;
  fs::create_directories(area, error);
  if (error) {
    return InternalError("cannot create " + area.string() + ": " + error.message() +
                         "; check the repository folder's permissions");
  }
  std::string pattern = (area / "XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) return SysError("cannot create a folder in " + area.string());
  return fs::path(pattern);
}

bool IsHex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

bool IsChecksumName(const std::string& name) {
  return name.size() == kChecksumLength &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

// The binary's file name: the manifest's "name", else the folder's only other regular file.
StatusOr<std::string> FindBinaryName(const fs::path& folder, const Manifest& manifest) {
  if (!manifest.binary.empty()) return manifest.binary;
  std::vector<std::string> candidates;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, error)) {
    std::string name = entry.path().filename().string();
    std::error_code ignored;
    if (name == kManifestName || name.starts_with(".") || !entry.is_regular_file(ignored)) continue;
    candidates.push_back(name);
  }
  if (error) return InternalError("cannot list " + folder.string() + ": " + error.message());
  if (candidates.empty()) {
    return NotFoundError(folder.string() +
                         ": no binary beside bitstream.json; put the binary in the folder, or "
                         "name it in the manifest's \"name\"");
  }
  if (candidates.size() > 1) {
    std::sort(candidates.begin(), candidates.end());
    std::string list;
    for (const std::string& name : candidates) list += (list.empty() ? "" : ", ") + name;
    return InvalidArgumentError(folder.string() + ": several files could be the binary (" + list +
                                "); name it in the manifest's \"name\"");
  }
  return candidates.front();
}

// Refuses files that resolve outside `top`, such as a tarball's link chain that escapes.
Status CheckInside(const fs::path& file, const fs::path& top, const fs::path& source) {
  std::error_code file_error;
  std::error_code top_error;
  fs::path real = fs::canonical(file, file_error);
  fs::path real_top = fs::canonical(top, top_error);
  if (file_error || top_error) {
    return NotFoundError(source.string() + ": " + file.filename().string() + " cannot be read: " +
                         (file_error ? file_error : top_error).message());
  }
  auto top_end =
      std::mismatch(real_top.begin(), real_top.end(), real.begin(), real.end()).first;
  if (top_end != real_top.end()) {
    return InvalidArgumentError(source.string() + ": " + file.filename().string() +
                                " is a link that leads outside the tarball; pack the file itself");
  }
  return OkStatus();
}

// Copies `from` into `to` (a new file), feeding every byte to `hash`. Returns the size.
StatusOr<uint64_t> CopyAndHash(const fs::path& from, const fs::path& to, Sha256* hash) {
  Fd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return SysError("cannot open the binary " + from.string());
  Fd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!out.valid()) return SysError("cannot create " + to.string());
  std::unique_ptr<char[]> buffer(new char[kCopyChunk]);
  uint64_t total = 0;
  while (true) {
    ssize_t n = ::read(in.get(), buffer.get(), kCopyChunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return SysError("cannot read the binary " + from.string());
    if (n == 0) break;
    hash->Update(buffer.get(), static_cast<size_t>(n));
    ATOLL_RETURN_IF_ERROR(WriteAll(out.get(), buffer.get(), static_cast<size_t>(n), to));
    total += static_cast<uint64_t>(n);
  }
  ATOLL_RETURN_IF_ERROR(SyncFd(out.get(), to));
  return total;
}

uint64_t ReadGeneration(const fs::path& root) {
  StatusOr<std::string> text = ReadSmallFile(root / kGenerationName);
  if (!text.ok()) return 0;
  return std::strtoull(text->c_str(), nullptr, 10);
}

// Called with the root lock held.
Status BumpGeneration(const fs::path& root) {
  std::string text = std::to_string(ReadGeneration(root) + 1) + "\n";
  std::string temp = (root / (std::string(kGenerationName) + ".XXXXXX")).string();
  Fd fd(::mkstemp(temp.data()));
  if (!fd.valid()) return SysError("cannot create a file in " + root.string());
  Status status = WriteAll(fd.get(), text.data(), text.size(), temp);
  if (status.ok()) status = SyncFd(fd.get(), temp);
  if (status.ok() && ::fchmod(fd.get(), 0644) != 0) status = SysError("cannot chmod " + temp);
  if (status.ok() && ::rename(temp.c_str(), (root / kGenerationName).c_str()) != 0) {
    status = SysError("cannot replace " + (root / kGenerationName).string());
  }
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  return SyncFolder(root);
}

StatusOr<Entry> LoadEntry(const fs::path& folder, const std::string& checksum) {
  Entry entry;
  entry.checksum = checksum;
  entry.manifest_path = folder / kManifestName;
  ATOLL_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(entry.manifest_path));
  StatusOr<Manifest> manifest = ParseManifest(bytes);
  if (!manifest.ok()) {
    return Status(manifest.status().code(), entry.manifest_path.string() + ": " +
                                                manifest.status().message() + "; remove " +
                                                checksum + " and install a fixed manifest");
  }
  entry.manifest = std::move(manifest).value();
  ATOLL_ASSIGN_OR_RETURN(entry.manifest.binary, FindBinaryName(folder, entry.manifest));
  entry.binary_path = folder / entry.manifest.binary;
  std::error_code error;
  if (!fs::is_regular_file(entry.binary_path, error)) {
    return NotFoundError(entry.binary_path.string() + ": the installed binary is missing; remove " +
                         checksum + " and install it again");
  }
  return entry;
}

// Installs the package in `folder`; when `confine` is given (an extracted tarball), the manifest
// and binary must resolve inside it. Called with the root lock held.
StatusOr<Entry> InstallFolder(const fs::path& root, const fs::path& folder,
                              const fs::path& source, const fs::path* confine) {
  fs::path manifest_path = folder / kManifestName;
  std::error_code error;
  if (!fs::exists(manifest_path, error)) {
    return NotFoundError(source.string() + ": no bitstream.json in " + folder.string() +
                         "; a package is a folder holding bitstream.json and its binary");
  }
  if (confine != nullptr) ATOLL_RETURN_IF_ERROR(CheckInside(manifest_path, *confine, source));
  ATOLL_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(manifest_path));
  StatusOr<Manifest> parsed = ParseManifest(bytes);
  if (!parsed.ok()) {
    std::string where = confine != nullptr ? source.string() + ": bitstream.json" : manifest_path.string();
    return Status(parsed.status().code(), where + ": " + parsed.status().message());
  }
  Manifest manifest = std::move(parsed).value();
  ATOLL_ASSIGN_OR_RETURN(manifest.binary, FindBinaryName(folder, manifest));
  fs::path binary_source = folder / manifest.binary;
  if (!fs::exists(binary_source, error)) {
    return NotFoundError(binary_source.string() +
                         ": the binary that bitstream.json names in \"name\" is missing; put it "
                         "beside bitstream.json or fix \"name\"");
  }
  if (!fs::is_regular_file(binary_source, error)) {
    return InvalidArgumentError(binary_source.string() + ": the binary must be a regular file");
  }
  if (confine != nullptr) ATOLL_RETURN_IF_ERROR(CheckInside(binary_source, *confine, source));

  ATOLL_ASSIGN_OR_RETURN(fs::path staging, MakeStaging(root));
  RemoveOnExit cleanup(staging);
  Sha256 hash;
  hash.Update(bytes.data(), bytes.size());
  ATOLL_RETURN_IF_ERROR(WriteNewFile(staging / kManifestName, bytes));
  ATOLL_ASSIGN_OR_RETURN(uint64_t binary_bytes,
                         CopyAndHash(binary_source, staging / manifest.binary, &hash));
  if (binary_bytes == 0) {
    return InvalidArgumentError(binary_source.string() +
                                ": the binary is empty; build it before installing");
  }
  ATOLL_ASSIGN_OR_RETURN(std::string checksum, hash.Hex());
  if (::chmod(staging.c_str(), 0755) != 0) return SysError("cannot chmod " + staging.string());
  ATOLL_RETURN_IF_ERROR(SyncFolder(staging));

  fs::path final_path = root / checksum;
  if (fs::exists(final_path, error)) {
    return AlreadyExistsError(source.string() + " is already installed as " + checksum + " (" +
                              manifest.bitstream_id + "@" + manifest.version +
                              "); remove it first to install it again");
  }
  if (::rename(staging.c_str(), final_path.c_str()) != 0) {
    return SysError("cannot move " + staging.string() + " to " + final_path.string());
  }
  cleanup.Release();
  ATOLL_RETURN_IF_ERROR(SyncFolder(root));
  ATOLL_RETURN_IF_ERROR(BumpGeneration(root));

  Entry entry;
  entry.manifest = std::move(manifest);
  entry.checksum = checksum;
  entry.manifest_path = final_path / kManifestName;
  entry.binary_path = final_path / entry.manifest.binary;
  return entry;
}

using ArchivePtr = std::unique_ptr<struct archive, int (*)(struct archive*)>;

// The components of a tarball entry's path, without "." ones; refuses absolute paths and "..".
StatusOr<std::vector<std::string>> SafeComponents(const char* name, const fs::path& tarball) {
  if (name == nullptr) {
    return InvalidArgumentError(tarball.string() + ": an entry has no name; the tarball is damaged");
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
StatusOr<Fd> OpenParent(int top, const std::vector<std::string>& parts, bool create,
                        const fs::path& tarball, const char* entry_name) {
  Fd current(::dup(top));
  if (!current.valid()) return SysError("cannot duplicate a descriptor");
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    Fd next(::openat(current.get(), parts[i].c_str(), flags));
    if (!next.valid() && errno == ENOENT && create) {
      if (::mkdirat(current.get(), parts[i].c_str(), 0755) != 0 && errno != EEXIST) {
        return SysError("cannot create folder '" + parts[i] + "' while extracting " +
                        tarball.string());
      }
      next = Fd(::openat(current.get(), parts[i].c_str(), flags));
    }
    if (!next.valid()) {
      if (errno == ELOOP || errno == ENOTDIR) {
        return InvalidArgumentError(tarball.string() + ": entry '" + entry_name + "' goes through '" +
                                    parts[i] +
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
  Fd out(::openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
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
  std::string refused = tarball.string() + ": link '" + entry_name + "' -> '" + std::string(text) + "' ";
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
      if (--depth < 0) return InvalidArgumentError(refused + "leads outside the tarball; it is refused");
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
    case AE_IFCHR: return "a character device";
    case AE_IFBLK: return "a block device";
    case AE_IFIFO: return "a fifo";
    case AE_IFSOCK: return "a socket";
    default: return "of an unknown file type";
  }
}

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
  Fd top(::open(destination.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!top.valid()) return SysError("cannot open " + destination.string());
  uint64_t total = 0;
  size_t count = 0;
  while (true) {
    struct archive_entry* entry = nullptr;
    int result = archive_read_next_header(archive.get(), &entry);
    if (result == ARCHIVE_EOF) break;
    if (result < ARCHIVE_WARN) {
      std::string why = archive_error_string(archive.get()) ? archive_error_string(archive.get()) : "";
      return InvalidArgumentError(
          tarball.string() + (count == 0 ? " is neither a folder nor a tarball (.tar, .tar.gz, "
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
      ATOLL_ASSIGN_OR_RETURN(Fd folder, OpenParent(top.get(), parts, true, tarball, name));
      continue;
    }
    ATOLL_ASSIGN_OR_RETURN(Fd parent, OpenParent(top.get(), parts, true, tarball, name));
    if (hardlink != nullptr) {
      ATOLL_ASSIGN_OR_RETURN(std::vector<std::string> target, SafeComponents(hardlink, tarball));
      if (target.empty()) {
        return InvalidArgumentError(tarball.string() + ": hard link '" + name +
                                    "' has no target; the tarball is damaged");
      }
      ATOLL_ASSIGN_OR_RETURN(Fd target_parent,
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

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string PlatformText(const std::string& backend, const std::string& vendor,
                         const std::string& name, const std::string& version) {
  auto part = [](const std::string& text) { return text.empty() ? std::string("*") : text; };
  return part(backend) + "/" + part(vendor) + "/" + part(name) + "/" + part(version);
}

bool NewerFirst(const Entry& a, const Entry& b) {
  if (a.manifest.bitstream_id != b.manifest.bitstream_id) {
    return a.manifest.bitstream_id < b.manifest.bitstream_id;
  }
  int order = CompareVersions(a.manifest.version, b.manifest.version);
  if (order != 0) return order > 0;
  return a.checksum < b.checksum;
}

}  // namespace

Repository::Repository(std::filesystem::path root) {
  std::error_code error;
  std::filesystem::path absolute = std::filesystem::absolute(root, error);
  root_ = (error ? root : absolute).lexically_normal();
}

StatusOr<Entry> Repository::Install(const std::filesystem::path& source) {
  std::error_code error;
  fs::file_status status = fs::status(source, error);
  if (!fs::exists(status)) {
    return NotFoundError(source.string() +
                         ": no such file or folder; give a folder holding bitstream.json and its "
                         "binary, or a tarball (.tar, .tar.gz, .tgz) of one");
  }
  if (!fs::is_directory(status) && !fs::is_regular_file(status)) {
    return InvalidArgumentError(source.string() +
                                " is neither a folder nor a tarball (.tar, .tar.gz, .tgz)");
  }
  ATOLL_RETURN_IF_ERROR(EnsureRoot(root_));
  ATOLL_ASSIGN_OR_RETURN(RootLock lock, RootLock::Acquire(root_));
  RemoveStaleStaging(root_);
  if (fs::is_directory(status)) return InstallFolder(root_, source, source, nullptr);
  if (source.filename() == kManifestName) {
    return InstallFolder(root_, source.parent_path().empty() ? "." : source.parent_path(), source,
                         nullptr);
  }
  ATOLL_ASSIGN_OR_RETURN(fs::path extracted, MakeStaging(root_));
  RemoveOnExit cleanup(extracted);
  ATOLL_RETURN_IF_ERROR(ExtractTarball(source, extracted));
  ATOLL_ASSIGN_OR_RETURN(fs::path folder, FindPackageFolder(extracted, source));
  return InstallFolder(root_, folder, source, &extracted);
}

StatusOr<std::vector<Entry>> Repository::List(std::vector<std::string>* problems) const {
  std::vector<Entry> entries;
  std::error_code error;
  if (!fs::exists(root_, error)) return entries;
  if (!fs::is_directory(root_, error)) {
    return FailedPreconditionError("the repository " + root_.string() +
                                   " is not a folder; move that file away or choose another root");
  }
  fs::directory_iterator it(root_, error);
  if (error) {
    return Status(error == std::errc::permission_denied ? Code::kPermissionDenied : Code::kInternal,
                  "cannot list the repository " + root_.string() + ": " + error.message());
  }
  for (const fs::directory_entry& item : it) {
    std::string name = item.path().filename().string();
    if (name.starts_with(".")) continue;
    std::error_code ignored;
    if (!IsChecksumName(name) || !item.is_directory(ignored)) {
      if (problems != nullptr) {
        problems->push_back(item.path().string() +
                            ": not an installed binary (installed ones are folders named by their "
                            "sha256); move it out of the repository");
      }
      continue;
    }
    StatusOr<Entry> entry = LoadEntry(item.path(), name);
    if (!entry.ok()) {
      if (problems != nullptr) problems->push_back(entry.status().message());
      continue;
    }
    entries.push_back(std::move(entry).value());
  }
  std::sort(entries.begin(), entries.end(), NewerFirst);
  return entries;
}

StatusOr<std::vector<Entry>> Repository::Remove(std::string_view what) {
  const std::string usage =
      "give a bitstream id, bitstreamId@version, or a checksum prefix of at least " +
      std::to_string(kMinChecksumPrefix) + " hex digits";
  if (what.empty()) return InvalidArgumentError("nothing to remove: " + usage);
  std::error_code error;
  if (!fs::is_directory(root_, error)) {
    return NotFoundError("nothing is installed in " + root_.string() + ", so nothing matches '" +
                         std::string(what) + "'");
  }
  ATOLL_ASSIGN_OR_RETURN(RootLock lock, RootLock::Acquire(root_));
  RemoveStaleStaging(root_);
  ATOLL_ASSIGN_OR_RETURN(std::vector<Entry> entries, List());

  std::vector<Entry> matched;
  size_t at = what.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view id = what.substr(0, at);
    std::string_view version = what.substr(at + 1);
    for (const Entry& entry : entries) {
      if (entry.manifest.bitstream_id == id && entry.manifest.version == version) {
        matched.push_back(entry);
      }
    }
  } else {
    for (const Entry& entry : entries) {
      if (entry.manifest.bitstream_id == what) matched.push_back(entry);
    }
    if (matched.empty() && IsHex(what)) {
      if (what.size() < kMinChecksumPrefix) {
        return InvalidArgumentError("'" + std::string(what) + "' is too short for a checksum prefix; " +
                                    usage);
      }
      // Folders, not parsed entries: a binary whose manifest broke can still be removed.
      std::string prefix = Lower(what);
      for (const fs::directory_entry& item : fs::directory_iterator(root_, error)) {
        std::string name = item.path().filename().string();
        if (!IsChecksumName(name) || !name.starts_with(prefix)) continue;
        auto parsed = std::find_if(entries.begin(), entries.end(),
                                   [&](const Entry& entry) { return entry.checksum == name; });
        Entry entry;
        if (parsed != entries.end()) {
          entry = *parsed;
        } else {
          entry.checksum = name;
          entry.manifest_path = item.path() / kManifestName;
        }
        matched.push_back(std::move(entry));
      }
      if (matched.size() > 1) {
        std::string list;
        for (const Entry& entry : matched) {
          list += (list.empty() ? "" : ", ") + entry.checksum.substr(0, 16);
        }
        return InvalidArgumentError("checksum prefix '" + std::string(what) + "' matches " +
                                    std::to_string(matched.size()) + " binaries (" + list +
                                    "); give more digits");
      }
    }
  }
  if (matched.empty()) {
    std::string message = "nothing installed matches '" + std::string(what) + "'";
    std::string id(what.substr(0, at == std::string_view::npos ? what.size() : at));
    std::set<std::string> ids;
    for (const Entry& entry : entries) ids.insert(entry.manifest.bitstream_id);
    std::string closest;
    size_t best = std::max<size_t>(2, id.size() / 3) + 1;
    for (const std::string& candidate : ids) {
      size_t distance = internal::EditDistance(Lower(id), Lower(candidate));
      if (distance < best) {
        best = distance;
        closest = candidate;
      }
    }
    if (ids.count(id) != 0) {
      message += "; " + id + " has no version '" + std::string(what.substr(at + 1)) + "'";
    } else if (!closest.empty()) {
      message += "; did you mean '" + closest + "'?";
    } else {
      message += "; " + usage;
    }
    return NotFoundError(message);
  }

  for (const Entry& entry : matched) {
    ATOLL_ASSIGN_OR_RETURN(fs::path trash, MakeStaging(root_));
    RemoveOnExit cleanup(trash);
    fs::path installed = root_ / entry.checksum;
    // A rename first, so that a reader sees the binary either whole or gone.
    if (::rename(installed.c_str(), (trash / entry.checksum).c_str()) != 0) {
      return SysError("cannot remove " + installed.string());
    }
  }
  ATOLL_RETURN_IF_ERROR(SyncFolder(root_));
  ATOLL_RETURN_IF_ERROR(BumpGeneration(root_));
  return matched;
}

uint64_t Repository::Generation() const { return ReadGeneration(root_); }

bool PlatformFits(const Platform& binary, const DevicePlatform& device) {
  const std::string& backend = binary.backend.empty() ? std::string("opencl") : binary.backend;
  if (backend != device.backend) return false;
  if (!binary.vendor.empty() && binary.vendor != device.vendor) return false;
  if (!binary.name.empty() && binary.name != device.name) return false;
  if (!binary.version.empty() && binary.version != device.version) return false;
  return true;
}

Index::Index(std::vector<Entry> entries) : entries_(std::move(entries)) {
  for (size_t e = 0; e < entries_.size(); ++e) {
    const Manifest& manifest = entries_[e].manifest;
    for (size_t k = 0; k < manifest.kernels.size(); ++k) {
      slots_[manifest.bitstream_id + "." + manifest.kernels[k].kernel_id].push_back({e, k});
    }
  }
  for (auto& [id, slots] : slots_) {
    std::stable_sort(slots.begin(), slots.end(), [this](const Slot& a, const Slot& b) {
      const Entry& x = entries_[a.entry];
      const Entry& y = entries_[b.entry];
      int order = CompareVersions(x.manifest.version, y.manifest.version);
      if (order != 0) return order > 0;
      return x.checksum < y.checksum;
    });
  }
}

StatusOr<Index::Provider> Index::Resolve(std::string_view accelerator_id,
                                         const std::vector<DevicePlatform>& devices) const {
  auto it = slots_.find(accelerator_id);
  if (it == slots_.end()) {
    std::string message = "no accelerator '" + std::string(accelerator_id) + "' is installed";
    std::vector<std::string> close = Suggest(accelerator_id);
    if (!close.empty()) {
      message += "; did you mean ";
      for (size_t i = 0; i < close.size(); ++i) {
        if (i > 0) message += i + 1 == close.size() ? " or " : ", ";
        message += "'" + close[i] + "'";
      }
      message += "?";
    } else if (accelerator_id.find('.') == std::string_view::npos) {
      message += "; an accelerator id is bitstreamId.kernelId, such as 'vector.addition'";
    } else {
      message += "; install a binary that provides it";
    }
    return NotFoundError(message);
  }
  for (const Slot& slot : it->second) {
    const Entry& entry = entries_[slot.entry];
    for (const DevicePlatform& device : devices) {
      if (PlatformFits(entry.manifest.platform, device)) {
        return Provider{&entry, &entry.manifest.kernels[slot.kernel]};
      }
    }
  }
  std::string built;
  for (const Slot& slot : it->second) {
    const Manifest& manifest = entries_[slot.entry].manifest;
    if (!built.empty()) built += ", ";
    built += PlatformText(manifest.platform.backend, manifest.platform.vendor,
                          manifest.platform.name, manifest.platform.version) +
             " (version " + manifest.version + ")";
  }
  std::string here;
  for (const DevicePlatform& device : devices) {
    if (!here.empty()) here += ", ";
    here += PlatformText(device.backend, device.vendor, device.name, device.version);
  }
  return FailedPreconditionError("'" + std::string(accelerator_id) +
                                 "' is installed only for platforms that no device here has: " +
                                 built + "; devices here: " + (here.empty() ? "none" : here) +
                                 "; install a binary built for one of them");
}

std::vector<std::string> Index::Suggest(std::string_view accelerator_id) const {
  std::string query = Lower(accelerator_id);
  size_t limit = std::max<size_t>(2, query.size() / 3);
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& [id, slots] : slots_) {
    std::string candidate = Lower(id);
    size_t distance = internal::EditDistance(query, candidate);
    // "addition" alone should find "vector.addition".
    if (!query.empty() && candidate.ends_with("." + query)) distance = std::min<size_t>(distance, 1);
    if (distance <= limit) scored.emplace_back(distance, id);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < 3; ++i) out.push_back(scored[i].second);
  return out;
}

}  // namespace atoll::repository
