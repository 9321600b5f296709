#include "repository/repository.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <set>
#include <utility>

#include "common/unique_fd.h"
#include "repository/manifest_internal.h"
#include "repository/tarball.h"

namespace atl::repository {
namespace {

namespace fs = std::filesystem;

constexpr char kManifestName[] = "bitstream.json";
constexpr char kStagingName[] = ".staging";
constexpr char kGenerationName[] = ".generation";
constexpr char kLockName[] = ".lock";
constexpr uint64_t kMaxManifestBytes = 16ull << 20;
constexpr size_t kMinChecksumPrefix = 8;
constexpr size_t kChecksumLength = 64;
constexpr size_t kCopyChunk = 1 << 20;

Status SysError(const std::string& what) { return ErrnoError(what, errno); }

// A root with the set-group-id bit is shared by an admin group (Repository::ApplyAdminGroup):
// what an install creates must then stay writable by the group, whatever the installer's umask.
bool SharedByGroup(const fs::path& root) {
  struct stat st;
  return ::stat(root.c_str(), &st) == 0 && (st.st_mode & S_ISGID) != 0;
}

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
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
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

Status SyncUniqueFd(int fd, const fs::path& path) {
  if (::fsync(fd) != 0) return SysError("cannot flush " + path.string() + " to disk");
  return OkStatus();
}

Status SyncFolder(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return SysError("cannot open folder " + path.string());
  return SyncUniqueFd(fd.get(), path);
}

Status WriteNewFile(const fs::path& path, std::string_view bytes) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid()) return SysError("cannot create " + path.string());
  ATOLL_RETURN_IF_ERROR(WriteAll(fd.get(), bytes.data(), bytes.size(), path));
  return SyncUniqueFd(fd.get(), path);
}

// Holds an exclusive flock of <root>/.lock; installs and removes in any process serialise on it.
class RootLock {
 public:
  static StatusOr<RootLock> Acquire(const fs::path& root) {
    fs::path path = root / kLockName;
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd.valid()) {
      return SysError("cannot open the repository lock " + path.string() +
                      " (run as a user who can write to " + root.string() + ")");
    }
    // Fails unless this process created the file, which is when it matters.
    if (SharedByGroup(root)) (void)::fchmod(fd.get(), 0664);
    while (::flock(fd.get(), LOCK_EX) != 0) {
      if (errno != EINTR) return SysError("cannot lock " + path.string());
    }
    return RootLock(std::move(fd));
  }

 private:
  explicit RootLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;  // closing it releases the lock
};

Status EnsureRoot(const fs::path& root) {
  std::error_code error;
  fs::create_directories(root, error);
  if (error) {
    return Status(error == std::errc::permission_denied ? Code::kPermissionDenied : Code::kInternal,
                  "cannot create the repository folder " + root.string() + ": " + error.message() +
                      "; create it or run as a user who can write there");
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
  if (fs::create_directories(area, error) && SharedByGroup(root)) {
    (void)::chmod(area.c_str(), 02775);
  }
  if (error) {
    return InternalError("cannot create " + area.string() + ": " + error.message() +
                         "; check the repository folder's permissions");
  }
  std::string pattern = (area / "XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return SysError("cannot create a folder in " + area.string());
  }
  return fs::path(pattern);
}

bool IsHex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; });
}

bool IsChecksumName(const std::string& name) {
  return name.size() == kChecksumLength && std::all_of(name.begin(), name.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

// The binary's file name: the manifest's "name", else the folder's only other regular file.
// `where` names the folder in errors.
StatusOr<std::string> FindBinaryName(const fs::path& folder, const Manifest& manifest,
                                     const std::string& where) {
  if (!manifest.binary.empty()) return manifest.binary;
  std::vector<std::string> candidates;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, error)) {
    std::string name = entry.path().filename().string();
    std::error_code ignored;
    if (name == kManifestName || name.starts_with(".") || !entry.is_regular_file(ignored)) continue;
    candidates.push_back(name);
  }
  if (error) return InternalError("cannot list " + where + ": " + error.message());
  if (candidates.empty()) {
    return NotFoundError(where +
                         ": no binary beside bitstream.json; put the binary in the folder, or "
                         "name it in the manifest's \"name\"");
  }
  if (candidates.size() > 1) {
    std::sort(candidates.begin(), candidates.end());
    std::string list;
    for (const std::string& name : candidates) list += (list.empty() ? "" : ", ") + name;
    return InvalidArgumentError(where + ": several files could be the binary (" + list +
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
    return NotFoundError(source.string() + ": " + file.filename().string() +
                         " cannot be read: " + (file_error ? file_error : top_error).message());
  }
  auto top_end = std::mismatch(real_top.begin(), real_top.end(), real.begin(), real.end()).first;
  if (top_end != real_top.end()) {
    return InvalidArgumentError(source.string() + ": " + file.filename().string() +
                                " is a link that leads outside the tarball; pack the file itself");
  }
  return OkStatus();
}

// Copies `from` into `to` (a new file), feeding every byte to `hash`. Returns the size.
StatusOr<uint64_t> CopyAndHash(const fs::path& from, const fs::path& to, Sha256* hash) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return SysError("cannot open the binary " + from.string());
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
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
  ATOLL_RETURN_IF_ERROR(SyncUniqueFd(out.get(), to));
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
  UniqueFd fd(::mkstemp(temp.data()));
  if (!fd.valid()) return SysError("cannot create a file in " + root.string());
  Status status = WriteAll(fd.get(), text.data(), text.size(), temp);
  if (status.ok()) status = SyncUniqueFd(fd.get(), temp);
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

// The daemon runs installed binaries in its own process: one that any user could have changed is
// refused.
Status CheckNotWorldWritable(const fs::path& path, const std::string& checksum) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & S_IWOTH) != 0) {
    return PermissionDeniedError(path.string() +
                                 " is writable by every user, so anyone could change what the "
                                 "daemon runs; skipped. Fix it with chmod o-w, or remove " +
                                 checksum + " and install it again");
  }
  return OkStatus();
}

StatusOr<Entry> LoadEntry(const fs::path& folder, const std::string& checksum) {
  Entry entry;
  entry.checksum = checksum;
  entry.manifest_path = folder / kManifestName;
  ATOLL_RETURN_IF_ERROR(CheckNotWorldWritable(folder, checksum));
  ATOLL_RETURN_IF_ERROR(CheckNotWorldWritable(entry.manifest_path, checksum));
  ATOLL_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(entry.manifest_path));
  StatusOr<Manifest> manifest = ParseManifest(bytes);
  if (!manifest.ok()) {
    return Status(manifest.status().code(), entry.manifest_path.string() + ": " +
                                                manifest.status().message() + "; remove " +
                                                checksum + " and install a fixed manifest");
  }
  entry.manifest = std::move(manifest).value();
  ATOLL_ASSIGN_OR_RETURN(entry.manifest.binary,
                         FindBinaryName(folder, entry.manifest, folder.string()));
  entry.binary_path = folder / entry.manifest.binary;
  std::error_code error;
  if (!fs::is_regular_file(entry.binary_path, error)) {
    return NotFoundError(entry.binary_path.string() + ": the installed binary is missing; remove " +
                         checksum + " and install it again");
  }
  ATOLL_RETURN_IF_ERROR(CheckNotWorldWritable(entry.binary_path, checksum));
  return entry;
}

// Installs the package in `folder`; when `confine` is given (an extracted tarball), the manifest
// and binary must resolve inside it. Called with the root lock held.
StatusOr<Entry> InstallFolder(const fs::path& root, const fs::path& folder, const fs::path& source,
                              const fs::path* confine) {
  // Paths inside an extracted tarball mean nothing to the user: name the tarball instead.
  auto shown = [&](const fs::path& path) {
    if (confine == nullptr) return path.string();
    fs::path inside = path.lexically_relative(*confine);
    return inside == "." ? source.string() : source.string() + ": " + inside.string();
  };
  fs::path manifest_path = folder / kManifestName;
  std::error_code error;
  if (!fs::exists(manifest_path, error)) {
    return NotFoundError(source.string() +
                         ": no bitstream.json; a package is a folder holding bitstream.json and "
                         "its binary");
  }
  if (confine != nullptr) ATOLL_RETURN_IF_ERROR(CheckInside(manifest_path, *confine, source));
  ATOLL_ASSIGN_OR_RETURN(std::string bytes, ReadSmallFile(manifest_path));
  StatusOr<Manifest> parsed = ParseManifest(bytes);
  if (!parsed.ok()) {
    return Status(parsed.status().code(), shown(manifest_path) + ": " + parsed.status().message());
  }
  Manifest manifest = std::move(parsed).value();
  ATOLL_ASSIGN_OR_RETURN(manifest.binary, FindBinaryName(folder, manifest, shown(folder)));
  fs::path binary_source = folder / manifest.binary;
  if (!fs::exists(binary_source, error)) {
    return NotFoundError(shown(binary_source) +
                         ": the binary that bitstream.json names in \"name\" is missing; put it "
                         "beside bitstream.json or fix \"name\"");
  }
  if (!fs::is_regular_file(binary_source, error)) {
    return InvalidArgumentError(shown(binary_source) + ": the binary must be a regular file");
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
    return InvalidArgumentError(shown(binary_source) +
                                ": the binary is empty; build it before installing");
  }
  ATOLL_ASSIGN_OR_RETURN(std::string checksum, hash.Hex());
  // Group-writable in a shared root, so that every admin can remove what another installed.
  mode_t mode = SharedByGroup(root) ? 02775 : 0755;
  if (::chmod(staging.c_str(), mode) != 0) return SysError("cannot chmod " + staging.string());
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
  ATOLL_RETURN_IF_ERROR(internal::ExtractTarball(source, extracted));
  ATOLL_ASSIGN_OR_RETURN(fs::path folder, internal::FindPackageFolder(extracted, source));
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
        return InvalidArgumentError("'" + std::string(what) +
                                    "' is too short for a checksum prefix; " + usage);
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

Status Repository::ApplyAdminGroup(gid_t group) {
  ATOLL_RETURN_IF_ERROR(EnsureRoot(root_));
  auto share = [&](const fs::path& path, mode_t mode) -> Status {
    if (::chown(path.c_str(), static_cast<uid_t>(-1), group) != 0) {
      return SysError("cannot give " + path.string() + " to group " +
                      std::to_string(static_cast<int>(group)));
    }
    if (::chmod(path.c_str(), mode) != 0) return SysError("cannot chmod " + path.string());
    return OkStatus();
  };
  // Set-group-id folders hand their group to everything created inside them.
  ATOLL_RETURN_IF_ERROR(share(root_, 02775));
  std::error_code error;
  fs::create_directories(root_ / kStagingName, error);
  ATOLL_RETURN_IF_ERROR(share(root_ / kStagingName, 02775));
  {
    fs::path lock = root_ / kLockName;
    UniqueFd fd(::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0664));
    if (!fd.valid()) return SysError("cannot create " + lock.string());
    ATOLL_RETURN_IF_ERROR(share(lock, 0664));
  }
  if (fs::exists(root_ / kGenerationName, error)) {
    ATOLL_RETURN_IF_ERROR(share(root_ / kGenerationName, 0644));
  }
  for (const fs::directory_entry& item : fs::directory_iterator(root_, error)) {
    std::string name = item.path().filename().string();
    std::error_code ignored;
    if (IsChecksumName(name) && item.is_directory(ignored)) {
      ATOLL_RETURN_IF_ERROR(share(item.path(), 02775));
    }
  }
  if (error) return InternalError("cannot list " + root_.string() + ": " + error.message());
  return OkStatus();
}

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

StatusOr<std::vector<Index::Provider>> Index::ResolveAll(
    std::string_view accelerator_id, const std::vector<DevicePlatform>& devices) const {
  ATOLL_ASSIGN_OR_RETURN(Provider newest, Resolve(accelerator_id, devices));
  std::vector<Provider> providers;
  for (const Slot& slot : slots_.find(accelerator_id)->second) {
    const Entry& entry = entries_[slot.entry];
    if (CompareVersions(entry.manifest.version, newest.entry->manifest.version) != 0) continue;
    for (const DevicePlatform& device : devices) {
      if (PlatformFits(entry.manifest.platform, device)) {
        providers.push_back({&entry, &entry.manifest.kernels[slot.kernel]});
        break;
      }
    }
  }
  return providers;
}

std::vector<std::string> Index::Suggest(std::string_view accelerator_id) const {
  std::string query = Lower(accelerator_id);
  size_t limit = std::max<size_t>(2, query.size() / 3);
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& [id, slots] : slots_) {
    std::string candidate = Lower(id);
    size_t distance = internal::EditDistance(query, candidate);
    // "addition" alone should find "vector.addition".
    if (!query.empty() && candidate.ends_with("." + query))
      distance = std::min<size_t>(distance, 1);
    if (distance <= limit) scored.emplace_back(distance, id);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < 3; ++i) out.push_back(scored[i].second);
  return out;
}

nlohmann::json AcceleratorToJson(const Entry& entry, const KernelSpec& kernel) {
  const Manifest& m = entry.manifest;
  nlohmann::json args = nlohmann::json::array();
  for (const ArgumentSpec& a : kernel.arguments) {
    nlohmann::json arg{{"name", a.name}, {"type", a.type}};
    if (a.kind == ArgKind::kArray) {
      arg["access"] = a.access == Access::kRead ? "r" : a.access == Access::kWrite ? "w" : "rw";
      if (!a.length.empty()) arg["length"] = a.length;
    }
    args.push_back(std::move(arg));
  }
  return {{"id", m.bitstream_id + "." + kernel.kernel_id},
          {"version", m.version},
          {"checksum", entry.checksum},
          {"platform",
           {{"backend", m.platform.backend},
            {"vendor", m.platform.vendor},
            {"name", m.platform.name},
            {"version", m.platform.version}}},
          {"compute_units", kernel.names.size()},
          {"binary", entry.binary_path.string()},
          {"arguments", std::move(args)}};
}

}  // namespace atl::repository
