// The repository of installed binaries: a folder owned by the daemon's administrator.
//
// Layout: <root>/<sha256>/{bitstream.json, <binary>} per installed binary, plus <root>/.generation,
// a counter rewritten (atomically) on every install and remove so that a running daemon notices
// changes without a restart. Installs are atomic (staged in <root>/.staging, then renamed).
//
// Thread safety: a Repository may be used from several threads and processes at once; installs and
// removes serialise on an flock of <root>/.lock. Index is an immutable snapshot.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "repository/manifest.h"

namespace atl::repository {

struct Entry {
  Manifest manifest;
  std::string checksum;  // sha256 (hex) of the manifest bytes followed by the binary bytes
  std::filesystem::path manifest_path;
  std::filesystem::path binary_path;  // absolute
};

class Repository {
 public:
  explicit Repository(std::filesystem::path root);

  const std::filesystem::path& root() const { return root_; }

  // Installs a folder holding a bitstream.json and its binary (or the path of that bitstream.json),
  // or a tarball (.tar, .tar.gz, .tgz) of such a folder, with the files at its top or inside one
  // folder. A manifest without "name" uses the folder's only other regular, non-hidden file as the
  // binary. Tarball entries with absolute paths or "..", links that lead outside it, device files
  // and more than 4 GiB of content are refused (INVALID_ARGUMENT, RESOURCE_EXHAUSTED). Errors:
  // NOT_FOUND for a missing path or binary, INVALID_ARGUMENT for a malformed manifest (naming the
  // field) or an empty binary, ALREADY_EXISTS when the same checksum is installed. Creates the root
  // if needed. Blocks on the root's lock and on disk I/O.
  StatusOr<Entry> Install(const std::filesystem::path& source);

  // Every installed binary, sorted by bitstream id then version (newest first). Entries whose
  // manifest no longer parses are skipped and reported in `problems` when given.
  StatusOr<std::vector<Entry>> List(std::vector<std::string>* problems = nullptr) const;

  // Removes what `what` names: a checksum or a unique checksum prefix of at least 8 hex digits, a
  // bitstream id (all its versions), or "bitstreamId@version". A bitstream id wins over a checksum
  // prefix that looks the same; a checksum removes even an entry whose manifest no longer parses
  // (its Entry then has only checksum and manifest_path). Returns what was removed; NOT_FOUND when
  // nothing matches, INVALID_ARGUMENT for a prefix that is too short or matches several.
  StatusOr<std::vector<Entry>> Remove(std::string_view what);

  // The current generation (0 when the repository was never written).
  uint64_t Generation() const;

  // Makes the repository writable by `group` and no one else: the root, its staging area and
  // installed folders get the group and mode 2775 (set-group-id, so what members create inside
  // belongs to the group), the lock file 0664. Installs by group members then keep their folders
  // group-writable, so any member can remove what another installed. Needs to own the files or
  // CAP_CHOWN/CAP_FOWNER (atolld as root). Errors name the path.
  Status ApplyAdminGroup(gid_t group);

 private:
  std::filesystem::path root_;
};

// One accelerator (a kernel of an installed binary) as `atoll list --json` and the daemon's
// accelerators query describe it: id, version, checksum, platform, compute units, binary path and
// arguments (name, type, and for arrays access and length).
nlohmann::json AcceleratorToJson(const Entry& entry, const KernelSpec& kernel);

// A device's platform as the resolver sees it.
struct DevicePlatform {
  std::string backend, vendor, name, version;
};

// True when a binary built for `binary` can run on a device of `device`: same backend, and vendor,
// name and version equal wherever the manifest gives them.
bool PlatformFits(const Platform& binary, const DevicePlatform& device);

// An immutable lookup table from accelerator id to the binaries that provide it.
class Index {
 public:
  struct Provider {
    const Entry* entry = nullptr;
    const KernelSpec* kernel = nullptr;
  };

  Index() = default;
  explicit Index(std::vector<Entry> entries);

  // The newest provider of `accelerator_id` ("vector.addition" = bitstreamId "vector" + "." +
  // kernelId "addition"; bitstream ids may contain dots) whose platform fits one of `devices`.
  // NOT_FOUND names the id and suggests close ids ("did you mean 'vector.addition'?"); when the
  // id exists but nothing fits, FAILED_PRECONDITION lists the platforms it was built for.
  StatusOr<Provider> Resolve(std::string_view accelerator_id,
                             const std::vector<DevicePlatform>& devices) const;

  // Every provider of the version Resolve picks that fits one of `devices`: the same accelerator
  // built for several backends or platforms (cpu, opencl, cuda), so that the scheduler may place a
  // request on any device that fits one of them. Ordered as Resolve orders equal versions (by
  // checksum), so the first is what Resolve returns. Errors are Resolve's.
  StatusOr<std::vector<Provider>> ResolveAll(std::string_view accelerator_id,
                                             const std::vector<DevicePlatform>& devices) const;

  // Up to 3 installed accelerator ids closest to `accelerator_id` by edit distance (ignoring case,
  // within a third of its length and at least 2), closest first; an id whose kernelId equals
  // `accelerator_id` counts as distance 1.
  std::vector<std::string> Suggest(std::string_view accelerator_id) const;

  const std::vector<Entry>& entries() const { return entries_; }

 private:
  // Indices rather than pointers, so that copies and moves of an Index stay consistent.
  struct Slot {
    size_t entry;
    size_t kernel;
  };
  std::vector<Entry> entries_;
  std::map<std::string, std::vector<Slot>, std::less<>> slots_;  // by id, newest version first
};

}  // namespace atl::repository
